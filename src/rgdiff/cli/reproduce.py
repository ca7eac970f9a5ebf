"""`rgdiff reproduce FIG`: the paper's figures at the paper's points, with the data behind them.

fig6 (paper section 7.3): the same UV ensemble (d = 2, L = 1, N = 20, m2 = -2, lam = 0.0017)
flowed by the M-modified Carosso scheme and the M-modified Polchinski scheme (slow profile
[5.42]), M = 1: (a)-(c) rows of one configuration along each flow (c: the first instants of
Polchinski, slowed down), (d)-(e) r_t^2 lambda_R_hat (= lambda_R in d = 2) against t with
1-sigma bands.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import numpy as np

import jax

from rgdiff.cli import plots
from rgdiff.cli.progress import console, progress_bar
from rgdiff.cli.report import flow_cell, theory_line
from rgdiff.cli.reproduce_flows import FLOW_FIGURES, fig_flows
from rgdiff.errors import RgdiffError
from rgdiff.io.atomic import atomic_folder, package_versions, write_json, write_text
from rgdiff.observables.true_flow import flow_grid, flow_path, true_flow
from rgdiff.rg import make_scheme
from rgdiff.samplers.hmc import NAMES
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.phi4 import paper_theory

FIGURES = ("fig6", *FLOW_FIGURES)  # fig7, fig8: `rgdiff.cli.reproduce_flows`
FIG6_QUICK = SamplerSettings("fa-hmc", chains=4, samples=4000, warmup=1000)
FIG6_FULL = SamplerSettings("fa-hmc", chains=8, samples=20000, warmup=4000)
FIG6_M = 1.0  # the IR mass of both schemes at the paper's point


def reproduce(figure: str, *, quick: bool, out: Path | None, seed: int = 0, quiet: bool = False,
              algorithm: str = "fa-hmc", checkpoint_every: int | None = None, checkpoint_dir: Path | None = None,
              resume: Path | None = None) -> Path:
    """Build `figure` into a new folder. `algorithm`: the UV sampler (`rgdiff.samplers.hmc.ALGORITHMS`;
    "nuts" is the paper's own choice, recorded in every JSON's sampler settings).

    With `checkpoint_every` (training steps between checkpoints), `checkpoint_dir` (default
    OUT.ckpt) or `resume` (that folder), the run keeps its finished stages and checkpoints the
    running one (`rgdiff.cli.stage_checkpoints`); resumed, it ends bitwise as an uninterrupted
    run (CPU)."""
    from rgdiff.cli.stage_checkpoints import StageCheckpoints
    from rgdiff.cli.reproduce_flows import figure_settings

    if figure not in FIGURES:
        raise RgdiffError(f"unknown figure {figure!r}; available: {', '.join(FIGURES)}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out is not None else Path("rgdiff-out") / f"{figure}-{stamp}"
    if target.exists():
        raise RgdiffError(f"output folder {target} already exists; choose another --out")
    ckpt = None
    if checkpoint_every is not None or checkpoint_dir is not None or resume is not None:
        settings = (figure_settings(figure, quick=quick, algorithm=algorithm).describe() if figure in FLOW_FIGURES
                    else dataclasses.replace(FIG6_QUICK if quick else FIG6_FULL, algorithm=algorithm).describe())
        run = {"figure": figure, "quick": quick, "seed": seed, "algorithm": algorithm, "out": str(target)}
        ckpt = StageCheckpoints(Path(resume or checkpoint_dir or f"{target}.ckpt"), config=run,
                                    identity={**{k: v for k, v in run.items() if k != "out"}, "settings": settings},
                                    every=checkpoint_every, resume=resume is not None)
    with atomic_folder(target) as work:
        if figure in FLOW_FIGURES:
            fig_flows(figure, work, quick=quick, seed=seed, quiet=quiet, algorithm=algorithm, checkpoint=ckpt)
        else:
            fig6(work, quick=quick, seed=seed, quiet=quiet, algorithm=algorithm, checkpoint=ckpt)
    if ckpt is not None:
        ckpt.remove()
    console.print(f"{figure} written to [bold]{target}[/]")
    return target


def fig6(work: Path, *, quick: bool, seed: int, quiet: bool, algorithm: str = "fa-hmc", checkpoint=None) -> None:
    theory = paper_theory(m2=-2.0)
    lat = theory.lattice
    settings = dataclasses.replace(FIG6_QUICK if quick else FIG6_FULL, algorithm=algorithm)
    key = jax.random.key(seed)
    k_sample, k_c, k_p, k_s = jax.random.split(key, 4)
    n_times = 13 if quick else 31
    grid = flow_grid(2.0, n_times)
    frames_t = np.array([0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 2.0])
    slow_t = np.array([0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    carosso = make_scheme("carosso", M=FIG6_M)
    polchinski = make_scheme("polchinski", M=FIG6_M, profile="slow")
    with progress_bar(not quiet) as cb:
        if checkpoint is None:
            uv_fields = sample(theory, settings, key=k_sample, callback=cb).fields
        else:  # the UV ensemble kept (or checkpointed while sampled) in the checkpoint folder
            uv_fields = checkpoint.uv_fields(theory, settings, key=k_sample, callback=cb)
        flows = {}
        for name, scheme, k in (("carosso", carosso, k_c), ("polchinski", polchinski, k_p)):
            res, _ = true_flow(scheme, uv_fields, lat, grid, key=k, callback=lambda s, d, t, n=name: cb(f"flow {n}", d, t))
            flows[name] = res.as_json()
            flows[name]["meta"].update(
                {"theory": theory.describe(), "sampler": settings.describe(), "seed": seed, "versions": package_versions()}
            )
            write_json(work / f"FLOW_{name}.json", flows[name])
        # One sample path of each flow from the same UV configuration (mapped to the M > 0 vacuum,
        # an exact symmetry): exact transitions t_{k-1} -> t_k with independent noise.
        phi0 = np.asarray(uv_fields[0, -1])
        phi0 = phi0 * (1.0 if phi0.mean() >= 0 else -1.0)
        rows = []
        for r, (label, scheme, times) in enumerate((
            ("(a) Carosso", carosso, frames_t),
            ("(b) Polchinski", polchinski, frames_t),
            ("(c) Polchinski, slowed", polchinski, slow_t),
        )):
            rows.append((label, times, flow_path(scheme, jax.random.fold_in(k_s, r), phi0, times, lat)))
    plots.flow_rows(rows, theory, work / "fig6_samples.png",
                    f"Fig. 6 (a)-(c): one sample path of each flow from the same UV configuration, "
                    f"M = {carosso.mass:g} (Carosso), {polchinski.mass:g} (Polchinski, slow profile)")
    write_json(
        work / "fig6_frames.json",
        {
            "theory": theory.describe(),
            "path": "one sample path per row: exact transition kernel from t_{k-1} to t_k, independent noise "
                    "(rgdiff.observables.true_flow.flow_path); the UV configuration mapped to M > 0",
            "rows": [{"label": lab, "t": t.tolist(), "configurations": c.tolist()} for lab, t, c in rows],
        },
    )
    plots.flows(
        [(f"Carosso M={carosso.mass:g}", flows["carosso"]), (f"Polchinski M={polchinski.mass:g} (slow K_t)", flows["polchinski"])],
        work / "fig6_couplings.png",
        f"Fig. 6 (d)-(e): true RG flows, {plots.theory_label(theory)} ({settings.chains}x{settings.samples} {settings.algorithm} samples)",
        panels=(("lambda_R", "r_t^2 lambda_R_hat = lambda_R (d = 2)"), ("m_R", "m_R (second-moment mass)"),
                ("Z", "Z (wave-function renormalization)"), ("max_abs_phi", "<max_n |phi(n)|>")),
    )
    write_text(work / "report.md", _fig6_report(theory, flows, settings, seed, quick))


def _fig6_report(theory, flows, settings, seed, quick) -> str:
    c, p = flows["carosso"], flows["polchinski"]
    lines = [
        "# Figure 6: Carosso vs Polchinski flows",
        "",
        f"Theory {theory_line(theory.describe())}; M = {c['M']:g} (Carosso), M = {p['M']:g} (Polchinski, slow profile K_t = exp(-w t)).",
        f"UV ensemble: {NAMES[settings.algorithm]}, {settings.chains} chains x {settings.samples} samples, warm-up {settings.warmup}, seed {seed}"
        f" ({'quick' if quick else 'full'}).",
        "",
        "| t | lambda_R Carosso | lambda_R Polchinski | m_R Carosso | m_R Polchinski |",
        "|---|---|---|---|---|",
    ]
    for i, t in enumerate(c["t"]):
        lines.append(
            f"| {t:.4g} | {flow_cell(c, 'lambda_R', i)} | {flow_cell(p, 'lambda_R', i)} "
            f"| {flow_cell(c, 'm_R', i)} | {flow_cell(p, 'm_R', i)} |"
        )
    lines += ["", "Files: fig6_samples.png, fig6_couplings.png, FLOW_carosso.json, FLOW_polchinski.json, fig6_frames.json.", ""]
    return "\n".join(lines)
