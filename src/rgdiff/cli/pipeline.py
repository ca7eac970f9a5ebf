"""`rgdiff run`: the main job on the embedded default (the paper's theory, Fig. 6/8 point).

Stages: sample the UV theory (Fourier-accelerated HMC by default), measure it, write tables (JSON), figures (PNG) and a short
report.md into an output folder that is assembled under a temporary name and renamed at the end,
so an interrupted run leaves nothing half-written.

With `--checkpoint-every K` (or `--checkpoint-dir`) the run keeps its UV ensemble and its trained
model in a checkpoint folder (default OUT.ckpt) and checkpoints the sampling every chunk and the
training every K steps (`rgdiff.cli.stage_checkpoints`); `rgdiff run --resume OUT.ckpt` continues an
interrupted run with its recorded settings and ends bitwise where the uninterrupted run ends
(CPU). The measurements, the learned flow and the figures are done again on resume.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import jax
import numpy as np

from rgdiff.cli import fidelity_plots, jobs, plots
from rgdiff.cli.progress import console, progress_bar
from rgdiff.cli.stage_checkpoints import ENSEMBLE, StageCheckpoints
from rgdiff.cli.report import markdown_table, measurement_meta, print_measurement
from rgdiff.errors import RgdiffError
from rgdiff.io import config as cfg
from rgdiff.io.atomic import atomic_folder, package_versions, write_json, write_text
from rgdiff.io.ensemble import load_ensemble, read_header, save_ensemble
from rgdiff.io.atomic import file_checksum
from rgdiff.io.modeldir import load_model_dir
from rgdiff.observables.compare import compare_flow
from rgdiff.observables.fidelity import verdict_lines
from rgdiff.observables.estimators import measure
from rgdiff.observables.stats import format_value_error
from rgdiff.observables.true_flow import flow_grid, flow_path, true_flow
from rgdiff.rg import make_scheme
from rgdiff.samplers.hmc import NAMES
from rgdiff.samplers.uv import SamplerSettings
from rgdiff.theory.phi4 import make_phi4

# The settings of the run (theory, sampler, flow grid, training, comparison) are the embedded
# default configuration `rgdiff.io.config.RUN` (quick) with `RUN_FULL` over it for --full;
# `rgdiff config show` prints them and `rgdiff run CONFIG.toml` changes them.


def run_main(*, out: Path | None, full: bool, seed: int, quiet: bool, config: dict | None = None,
             checkpoint_every: int | None = None, checkpoint_dir: Path | None = None, resume: Path | None = None) -> Path:
    """The main job. `config`: the effective run configuration (`rgdiff.io.config`, default: the
    embedded one, i.e. the paper's theory and the quick or --full run). `checkpoint_every`,
    `checkpoint_dir`, `resume`: checkpoints and resume (module docstring); a resumed run takes its
    configuration, --full and output folder from the checkpoint (`resumed_run`)."""

    config = cfg.merge(cfg.load("run", None, full=full), config or {}, {"seed": seed})
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out is not None else Path("rgdiff-out") / f"run-{stamp}"
    ckpt = None
    if checkpoint_every is not None or checkpoint_dir is not None or resume is not None:
        ckpt = StageCheckpoints(Path(resume or checkpoint_dir or f"{target}.ckpt"), command="run",
                                config={"run": config, "full": full, "out": str(target)},
                                identity={"run": config, "full": full}, every=checkpoint_every, resume=resume is not None)
    th = config["theory"]
    theory = make_phi4(th["dim"], th["size"], units="physical", length=th["length"], m2=th["m2"], lam=th["lam"])
    settings = SamplerSettings(**config["sampler"])
    flow_scheme = make_scheme("carosso", M=config["flow"]["M"])
    flow_times = flow_times_of(config)
    label = plots.theory_label(theory)
    with atomic_folder(target) as work:
        write_text(work / "config.toml", cfg.dumps({"command": "rgdiff run", **config, "versions": package_versions()}))
        if not quiet:
            console.print(
                f"[bold]rgdiff run[/]: phi^4 {label} "
                f"({'full' if full else 'quick'}: {settings.chains} chains x {settings.samples} {NAMES[settings.algorithm]} samples)"
            )
        units = {"units": "physical", "length": th["length"], "m2": th["m2"], "lam": th["lam"]}
        extra = {"job": "rgdiff run", "full": full, "config": config}
        if ckpt is None:
            ens = jobs.sample_ensemble(theory, settings, seed=seed, units=units, extra=extra, quiet=quiet)
            save_ensemble(work / "ensemble.h5", ens)
        else:  # kept in the checkpoint folder (sampled there with a checkpoint every chunk), linked here
            kept = ckpt.kept_ensemble(
                ENSEMBLE, lambda c: jobs.sample_ensemble(theory, settings, seed=seed, units=units, extra=extra,
                                                         quiet=quiet, checkpoints=c),
                config={"run_uv": settings.describe()},
                identity={"theory": theory.describe(), "sampler": settings.describe(), "seed": seed})
            place(kept, work / "ensemble.h5")
            ens = load_ensemble(work / "ensemble.h5")
        m = measure(ens.fields, theory.lattice, markov=True)
        meta = measurement_meta(ens, m, "ensemble.h5")
        header = read_header(work / "ensemble.h5")  # the versions and creation time recorded in the file
        meta.update(versions=header.versions or package_versions(), created=header.created,
                    measured=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        write_json(work / "observables.json", {"observables": m.as_json()["observables"], "correlators": m.correlators,
                                               "meta": meta})
        mc_time = ens.monte_carlo_time()
        plots.configurations(ens.fields, theory, work / "configurations.png", mc_time=mc_time)
        plots.magnetization(ens.fields, theory, work / "magnetization.png", mc_time=mc_time)
        plots.propagator(ens.fields, theory, work / "propagator.png", measurement=m)
        plots.correlators(m.correlators, theory, work / "correlators.png", measurement=m)
        with progress_bar(not quiet) as cb:
            flow_res, _ = true_flow(
                flow_scheme, ens.fields, theory.lattice, flow_times, key=jax.random.key(seed + 1), callback=cb,
            )
        flow_json = flow_res.as_json()
        flow_json["meta"].update({"theory": theory.describe(), "uv_sampler": settings.describe(), "seed": seed + 1,
                                  "input": "ensemble.h5", "input_sha256": file_checksum(work / "ensemble.h5"),
                                  "config": config, "versions": package_versions()})
        write_json(work / "FLOW_carosso.json", flow_json)
        plots.flows(
            [(f"true Carosso flow, M={flow_scheme.mass:g}", flow_json)],
            work / "flow_carosso.png",
            f"true Carosso RG flow (M={flow_scheme.mass:g}) of {label}, {settings.chains}x{settings.samples} {settings.algorithm} samples",
        )
        phi0 = np.asarray(ens.fields[0, -1])  # the last configuration of chain 0, in the M > 0 vacuum
        phi0 = phi0 * (1.0 if phi0.mean() >= 0 or flow_res.meta["vacuum"] == "raw" else -1.0)
        plots.flow_rows(
            [(f"Carosso M={flow_scheme.mass:g}", flow_times,
              flow_path(flow_scheme, jax.random.key(seed + 4), phi0, flow_times, theory.lattice))],
            theory, work / "flow_samples.png", "one sample path of the true Carosso flow (exact transitions, independent noise)",
        )
        verdict, model_summary = _train_and_compare(work, full=full, seed=seed, quiet=quiet, config=config,
                                                    checkpoints=ckpt)
        write_text(work / "report.md", _report(theory, settings, seed, m, meta, full, flow_json, verdict) + model_summary)
        print_measurement(m, meta, console)  # the result: --quiet hides the progress only
    if ckpt is not None:
        ckpt.remove()
    console.print(f"results written to [bold]{target}[/] (report.md, observables.json, figures, ensemble.h5)")
    return target


BESIDE_MODEL = "../ensemble.h5"  # the run's ensemble as its model's config records it (model/ is beside it)


def place(source: Path, destination: Path) -> None:
    """Put a file or model folder kept in the checkpoint folder into the run's folder: hard links
    where the file system allows (the --full ensemble is 350 MB), else copies."""
    import os
    import shutil

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, destination, copy_function=link_or_copy)
    else:
        link_or_copy(source, destination)


def resumed_run(folder: Path) -> tuple[dict, bool, Path]:
    """(configuration, full, output folder) of the interrupted run whose checkpoint is `folder`."""
    from rgdiff.io.checkpoint import ReadCheckpointError, read_checkpoint

    header = read_checkpoint(folder)[0]
    stored = header.get("config") or {}
    if header.get("command") != "run" or not {"run", "full", "out"} <= set(stored):
        raise ReadCheckpointError(f"{folder} is a checkpoint of `rgdiff {header.get('command')}`, not of `rgdiff run`; "
                                  "it was left untouched")
    return stored["run"], bool(stored["full"]), Path(stored["out"])


def _train_and_compare(work: Path, *, full: bool, seed: int, quiet: bool, config: dict | None = None,
                       checkpoints=None) -> tuple[str, str]:
    """Train an EFT-structured score model on the UV ensemble and compare its flow with the truth.
    `checkpoints`: the run's `StageCheckpoints` (the model is trained and kept there), or None.

    **Returns:** (the verdict paragraph that leads report.md, the model section)."""
    config = config or cfg.load("run", None, full=full)
    tr = config["training"]
    kwargs = {"steps": tr["steps"], "batch": tr["batch"], "learning_rate": tr["learning_rate"], "dtype": tr["dtype"]}
    kwargs["decay_steps"] = kwargs["steps"]
    scheme = make_scheme("carosso", M=config["flow"]["M"])
    n_compare = config["compare"]["samples"]
    solver = config["compare"].get("solver", "sde")
    flow_times = flow_times_of(config)
    if checkpoints is None:
        jobs.train_job(kind=tr["model"], data=work / "ensemble.h5", scheme=scheme, settings=None, seed=seed + 2,
                       out=work / "model", quiet=quiet, train_kwargs=kwargs, announce=False, data_record=BESIDE_MODEL)
    else:  # trained on the kept ensemble (a path that stays the same across resumes), kept, linked here
        kept = checkpoints.kept_score_model("score", lambda out, folder, resume: jobs.train_job(
            kind=tr["model"], data=checkpoints.folder / ENSEMBLE, scheme=scheme, settings=None, seed=seed + 2, out=out,
            quiet=quiet, train_kwargs=kwargs, announce=False, checkpoint_every=checkpoints.every,
            checkpoint_dir=folder, resume=resume, data_record=BESIDE_MODEL))
        place(kept, work / "model")
    loaded = load_model_dir(work / "model")
    ens = load_ensemble(work / "ensemble.h5")
    times = flow_times[flow_times < loaded.horizon]
    try:
        with progress_bar(not quiet) as cb:
            cmp = compare_flow(loaded, ens.fields, times, key=jax.random.key(seed + 3), n=n_compare, solver=solver,
                               callback=cb)
    except RgdiffError as exc:  # a poor model must not sink the whole job: say what happened
        console.print(f"[yellow]learned flow unavailable:[/] {exc}")
        verdict = f"**Learned flow: UNAVAILABLE** ({exc})"
        return verdict, f"\n## A renormalizing diffusion model\n\nThe model was trained (`model/`), but its learned flow is unavailable: {exc}\n"
    cmp["meta"].update({"data": "ensemble.h5", "data_sha256": file_checksum(work / "ensemble.h5"), "seed": seed + 3,
                        "model": "model", "model_params_sha256": file_checksum(work / "model" / "params.eqx"),
                        "config": config, "versions": package_versions()})
    write_json(work / "CMP.json", cmp)
    sampler = "reverse SDE" if solver == "sde" else "probability-flow ODE"
    plots.flows([("true Carosso flow", cmp["true"]), (f"learned (EFT score, {sampler})", cmp["learned"])],
                work / "learned_vs_true.png", f"learned vs true Carosso flow (M={scheme.mass:g}), {plots.theory_label(ens.theory)}",
                xscale="symlog")
    label = plots.theory_label(ens.theory)
    fidelity_plots.deviations(cmp, work / "fidelity.png", f"learned vs true flow, {label}")
    fidelity_plots.spectral(cmp["spectral"], work / "spectral_fidelity.png",
                            f"learned / true power spectrum per momentum orbit, {label}")
    if "zero_mode" in cmp:
        fidelity_plots.zero_mode(cmp["zero_mode"], work / "zero_mode_score.png",
                                 f"zero-mode score: learned vs exact marginal, {label}")
    c = json.loads((work / "model" / "COUPLINGS.json").read_text())
    f1, f2, f3 = c["kinetic"][0], c["mass"][0], c["quartic"][0]
    e = ens.theory.lattice.spacing ** ens.theory.lattice.dim
    lines = [
        "",
        "## A renormalizing diffusion model (EFT-structured score [5.26])",
        "",
        f"Trained by denoising score matching on the exact Carosso kernel (M = {scheme.mass:g}), {kwargs['steps']} steps, batch {kwargs['batch']};",
        f"horizon T = {loaded.horizon:.4g}; model in `model/` (config.toml, params.eqx, metrics.jsonl, COUPLINGS.json, couplings.png).",
        "",
        "Learned couplings at t = 0 against the bare ones (the score there is eps^d Z (Delta phi - m2 phi - lam/6 phi^3)):",
        "",
        "| | learned | bare |",
        "|---|---|---|",
        f"| Z = f_1/eps^d | {f1 / e:.4g} | 1 |",
        f"| m2 = -f_2/f_1 | {-f2 / f1:.4g} | {ens.theory.m2:g} |",
        f"| lam = -6 f_3/f_1 | {-6 * f3 / f1:.4g} | {ens.theory.lam:g} |",
        "",
        f"Learned vs true flow ({n_compare} model samples per t; sampler: {cmp['meta']['sampler']}):",
        "",
        *verdict_lines(cmp["fidelity"]),
        "",
        f"Spectral fidelity (learned / true power spectrum per momentum orbit, exact from the data): worst "
        f"|log ratio| per t {', '.join(f'{x:.2g}' for x in cmp['spectral']['max_abs_log_ratio'])}.",
    ]
    if "zero_mode" in cmp:
        z = cmp["zero_mode"]
        lines.append("Zero-mode score against the exact marginal of M_t (rms relative error per t): "
                     + ", ".join(f"t={t:.3g}: {e:.2f}" for t, e in zip(z["t"], z["rms_relative_error"])) + ".")
    lines += ["", "Figures: `learned_vs_true.png`, `fidelity.png`, `spectral_fidelity.png`, `zero_mode_score.png`, "
              "`model/couplings.png`; data: `CMP.json`.", ""]
    fid = cmp["fidelity"]
    worst = max((r["max_relative_deviation"] or 0.0) for n, r in fid["observables"].items() if n in fid["judged"])
    verdict = (f"**Learned flow verdict: {fid['verdict'].upper()}** (EFT score model against the true Carosso flow, "
               f"tolerance {100 * fid['tolerance']:g}% at every t on {', '.join(fid['judged'])}; worst relative "
               f"deviation {100 * worst:.1f}%; details below)")
    return verdict, "\n".join(lines)


def flow_times_of(config: dict) -> np.ndarray:
    """The run's grid of flow times (`flow_grid` with the configuration's t_max and n_times)."""
    return flow_grid(config["flow"]["t_max"], config["flow"]["n_times"])


def _flow_table(flow_json) -> str:
    names = ("m_R", "Z", "lambda_R", "max_abs_phi")
    lines = ["| t | r_t | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for i, t in enumerate(flow_json["t"]):
        cells = []
        for n in names:
            o = flow_json["observables"][n]
            v, e = o["value"][i], o["error"][i]
            cells.append("null" if v is None else format_value_error(v, e))
        lines.append(f"| {t:.4g} | {flow_json['r_t'][i]:.4g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(theory, settings, seed, m, meta, full, flow_json, verdict: str = "") -> str:
    d = meta.get("sampler_summary", {})
    return f"""# rgdiff run

{verdict}

Theory: lattice phi^4, d = {theory.lattice.dim}, N = {theory.lattice.size}, L = {theory.lattice.length:g},
m2 = {theory.m2:g}, lam = {theory.lam:g} (the paper's Fig. 6/8 point; conventions: docs in README).

Sampler: {NAMES[settings.algorithm]} (Blackjax) with window adaptation, {settings.chains} chains x {settings.samples} samples,
{settings.warmup} warm-up steps per chain, seed {seed} ({'full' if full else 'quick'} run).
Mean acceptance {d.get('mean_acceptance_rate', float('nan')):.3f}, divergences {d.get('divergences', 0)}.
Errors: {meta['error_method']}; vacuum: {meta['vacuum']}.

## Observables

{markdown_table(m)}

## True Carosso RG flow (M = {flow_json['M']:g})

Each UV configuration pushed through the exact kernel (a_t, v_t) once per t; errors by the Gamma
method; vacuum {flow_json['meta']['vacuum']}.

{_flow_table(flow_json)}

## Figures

- `configurations.png`: sample configurations
- `magnetization.png`: Monte Carlo history and histogram of M
- `propagator.png`: 1/G2(p) against |phat|^2 (log axes) with the fit Z^-1 (|phat|^2 + m_R^2)
- `correlators.png`: G(x), C(t) and the cosh effective mass beside m_R
- `flow_carosso.png`, `flow_samples.png`: the true Carosso flow of the couplings, and one sample path of it

Versions: {json.dumps(package_versions())}
"""
