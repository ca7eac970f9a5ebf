"""`rgdiff reproduce fig7|fig8`: flows trained with the RG objective [5.22] versus reverse KL [5.5] (section 7.4).

Paper points (d = 2, L = 1, N = 20, lam = 0.0017): fig7 m2 = 0.01, fig8 m2 = -2; Carosso scheme
M = 1 with its stationary law (the free field of mass M) as the prior of both flows. Outputs:

- `figN_flows.png`: m_R, Z, lambda_R, <max|phi|> and the r_t-rescaled m_R_hat, lambda_R_hat against
  t for the true flow (UV ensemble pushed through the exact kernel), the RG-objective flow and
  the reverse-KL flow, 1-sigma bands;
- `figN_samples.png`: one configuration along each flow;
- `FIDELITY.json`: {"methods": {"rg": {...}, "reverse_kl": {...}}, "comparison": {...}, "meta": {...}}
  with, per method, "fidelity" (the verdict, relative deviations, pulls, chi^2 and resolution of
  each observable against the true flow: `rgdiff.observables.fidelity`), "spectral" (learned / true
  power spectrum per momentum orbit and t), "ess_t0" (ESS / n of the flow's importance weights at
  t = 0), and, kept for continuity, x = mean over t of |learned - true| / sqrt(err_learned^2 +
  err_true^2) for m_R, Z, lambda_R, max_abs_phi (the former measure, which rewards wide error
  bars); "comparison" says per observable which objective is closer to the truth (mean relative
  deviation) and by how much;
- `FLOW_true.json`, `FLOW_rg.json`, `FLOW_reverse_kl.json`, `models/rg`, `models/reverse_kl`
  (model directories, usable with `rgdiff compare-flow`), `report.md`.

--quick uses reduced settings (recorded in meta["settings"]) sized to finish in under 10 minutes
on a 2-core CPU; the full run uses the paper's training settings.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from rgdiff.cli import fidelity_plots, plots
from rgdiff.cli.progress import progress_bar
from rgdiff.cli.report import flow_cell, theory_line
from rgdiff.io.atomic import package_versions, write_json, write_text
from rgdiff.observables.compare import COMPARED, FIDELITY_OBSERVABLES, JUDGED, discrepancy, learned_flow
from rgdiff.observables.fidelity import fidelity as fidelity_of
from rgdiff.observables.fidelity import spectral_fidelity, verdict_lines
from rgdiff.observables.true_flow import flow_grid, true_flow
from rgdiff.rg import make_scheme
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.phi4 import paper_theory
from rgdiff.train.cnf import FlowTrainSettings, flow_model_config, initial_flow, sampler_diagnostics, train_flow, write_flow_dir
from rgdiff.train.score import default_horizon

FLOW_FIGURES = {"fig7": 0.01, "fig8": -2.0}  # figure -> the bare m2 of its paper point
FLOW_M = 1.0  # the Carosso scheme's IR mass at the paper's point
METHODS = (("rg", "rg", "RG objective [5.22]"), ("reverse_kl", "reverse-kl", "reverse KL [5.5]"))


@dataclasses.dataclass(frozen=True)
class FlowFigureSettings:
    uv: SamplerSettings
    train: FlowTrainSettings
    samples: int  # flow samples per time for the learned flows
    n_times: int
    t_max: float
    diagnostics_samples: int

    def describe(self) -> dict:
        return {"uv_sampler": self.uv.describe(), "training": self.train.describe(), "learned_samples": self.samples,
                "n_times": self.n_times, "t_max": self.t_max, "diagnostics_samples": self.diagnostics_samples}


# --quick: measured on the 2-core machine (see the module docstring); the paper's optimizer and
# schedule, fewer steps, a smaller batch and a coarser RK4 grid
QUICK = FlowFigureSettings(
    uv=SamplerSettings("fa-hmc", chains=4, samples=2000, warmup=1000),
    train=FlowTrainSettings(steps=200, batch=16, ode_steps=8, log_every=10),
    samples=512, n_times=10, t_max=2.0, diagnostics_samples=512,
)
FULL = FlowFigureSettings(
    uv=SamplerSettings("fa-hmc", chains=8, samples=10000, warmup=4000),
    train=FlowTrainSettings(),
    samples=4096, n_times=17, t_max=2.0, diagnostics_samples=4096,
)


def figure_settings(figure: str, *, quick: bool, settings: FlowFigureSettings | None = None,
                    algorithm: str | None = None) -> FlowFigureSettings:
    cfg = settings or (QUICK if quick else FULL)
    if algorithm is not None:
        cfg = dataclasses.replace(cfg, uv=dataclasses.replace(cfg.uv, algorithm=algorithm))
    return cfg


def fig_flows(figure: str, work: Path, *, quick: bool, seed: int, quiet: bool,
              settings: FlowFigureSettings | None = None, algorithm: str | None = None, checkpoint=None) -> dict:
    """Build fig7 or fig8 into the folder `work`; returns the FIDELITY.json content.

    `settings` overrides QUICK / FULL (tests use tiny settings); `algorithm` the UV sampler's;
    `checkpoint`: a `rgdiff.cli.stage_checkpoints.StageCheckpoints` (finished stages kept,
    the running one checkpointed; a resumed run ends bitwise as an uninterrupted one on the CPU).
    """
    m2 = FLOW_FIGURES[figure]
    theory = paper_theory(m2=m2)
    lat = theory.lattice
    scheme = make_scheme("carosso", M=FLOW_M)
    cfg = figure_settings(figure, quick=quick, settings=settings, algorithm=algorithm)
    key = jax.random.key(seed)
    k_uv, k_true, k_frames = jax.random.split(key, 3)
    grid = flow_grid(cfg.t_max, cfg.n_times)
    started, cpu_started = time.time(), time.process_time()
    timings = {}
    with progress_bar(not quiet) as cb:
        t0 = time.time()
        if checkpoint is None:
            uv_fields = sample(theory, cfg.uv, key=k_uv, callback=cb).fields
        else:
            uv_fields = checkpoint.uv_fields(theory, cfg.uv, key=k_uv, callback=cb)
        timings["uv_sampling_s"] = time.time() - t0
        horizon = default_horizon(scheme, uv_fields, lat)
        true_res, _ = true_flow(scheme, uv_fields, lat, grid, key=k_true, callback=cb)
        true_json = true_res.as_json()
        true_json["meta"].update({"theory": theory.describe(), "sampler": cfg.uv.describe(), "seed": seed})
        write_json(work / "FLOW_true.json", true_json)
        mapped = true_res.meta["vacuum"] == "mapped"
        learned, fidelity, trajectories, diagnostics, histories, unresolved = {}, {}, {}, {}, {}, {}
        for i, (name, objective, _label) in enumerate(METHODS):
            k_train, k_diag, k_flow = jax.random.split(jax.random.fold_in(key, 100 + i), 3)
            ts = dataclasses.replace(cfg.train, objective=objective)
            flow = initial_flow(lat, scheme, uv_fields, horizon, ts)
            config = flow_model_config(flow, scheme, theory, ts, seed=seed, data=None)
            finished = None if checkpoint is None else checkpoint.finished_model(name)
            t0 = time.time()
            if finished is not None:
                flow, records = finished
            else:
                ckpt = None if checkpoint is None else checkpoint.training(name, config, ts.steps)
                records = [] if ckpt is None else ckpt.host_extra["metrics"]
                flow = train_flow(flow, scheme, theory, ts, key=k_train, uv_start=uv_fields,
                                  callback=lambda s, d, n, nm=name: cb(f"train {nm}", d, n),
                                  on_log=lambda r, f, rec=records: rec.append(r), checkpoint=ckpt)
                if checkpoint is not None:
                    checkpoint.keep_model(name, flow, config, records, ckpt)
            timings[f"train_{name}_s"] = time.time() - t0
            histories[name] = records
            t0 = time.time()
            diag = sampler_diagnostics(flow, scheme, theory, key=k_diag, n=cfg.diagnostics_samples, steps=ts.ode_steps)
            diagnostics[name] = diag
            res, traj = learned_flow(flow, scheme, grid, key=k_flow, n=cfg.samples, horizon=horizon, uv_mapped=mapped,
                                     steps=ts.ode_steps)
            timings[f"evaluate_{name}_s"] = time.time() - t0
            lj = res.as_json()
            lj["meta"].update({"objective": objective, "training": ts.describe(), "sampler_at_t0": diag})
            write_json(work / f"FLOW_{name}.json", lj)
            learned[name] = lj
            trajectories[name] = traj
            unresolved[name] = {}
            fidelity[name] = {**discrepancy(lj, true_json, COMPARED, unresolved=unresolved[name]), "ess_t0": diag["ess"],
                              "fidelity": fidelity_of(lj, true_json, FIDELITY_OBSERVABLES, judged=JUDGED),
                              "spectral": spectral_fidelity(scheme, lat, uv_fields, grid, traj)}
            (work / "models").mkdir(exist_ok=True)
            (work / "models" / name).mkdir()
            write_flow_dir(work / "models" / name, flow, config, records, diag)
    meta = {
        "figure": figure,
        "theory": theory.describe(),
        "scheme": scheme.describe(),
        "horizon_T": horizon,
        "quick": bool(quick),
        "settings": cfg.describe(),
        "seed": seed,
        "times": [float(t) for t in grid],
        "definition": "x = mean over t of |learned - true| / sqrt(error_learned^2 + error_true^2), over the times "
                      "where the learned estimate is resolved (error < |value|; the others are counted in "
                      "unresolved_times, never as agreement); "
                      "ess_t0 = (sum w)^2 / (n sum w^2), w = exp(-S) / p_0^theta, n = diagnostics_samples",
        "unresolved_times": unresolved,
        "sampler_at_t0": diagnostics,
        "vacuum": true_res.meta["vacuum"],
        # wall times depend on the machine's load; process CPU time (all threads) does much less
        "timings_s": _timings(timings, [] if checkpoint is None else checkpoint.earlier, started, cpu_started),
        "versions": package_versions(),
    }
    result = {"methods": fidelity, "comparison": compare_objectives(fidelity), "meta": meta}
    write_json(work / "FIDELITY.json", result)
    write_json(work / "metrics.json", histories)
    title = (f"Fig. {figure[-1]}: true Carosso M={scheme.mass:g} flow vs learned flows, {plots.theory_label(theory)} "
             f"({'quick' if quick else 'full'}: {cfg.train.steps} steps, batch {cfg.train.batch})")
    plots.flows([("true flow", true_json)] + [(label, learned[name]) for name, _, label in METHODS],
                work / f"{figure}_flows.png", title, xscale="symlog")
    for name, _, label in METHODS:
        fidelity_plots.spectral(fidelity[name]["spectral"], work / f"{figure}_spectral_{name}.png",
                                f"{label}: learned / true power spectrum, {plots.theory_label(theory)}")
    frames = np.unique(np.linspace(0, len(grid) - 1, 7).astype(int))
    # as in fig6: one UV configuration pushed to each time with the same noise key (a smooth-looking row)
    phi0 = np.asarray(uv_fields[0, -1])
    if mapped:
        phi0 = phi0 * (1.0 if phi0.mean() >= 0 else -1.0)
    true_frames = np.stack([phi0 if t == 0 else np.asarray(scheme.push_forward(k_frames, phi0, float(t), lat)) for t in grid[frames]])
    rows = [("true", grid[frames], true_frames)]
    for name, _, label in METHODS:
        rows.append((label, grid[frames], trajectories[name][frames, 0]))
    plots.flow_rows(rows, theory, work / f"{figure}_samples.png", f"Fig. {figure[-1]} (bottom): one configuration along each flow")
    write_text(work / "report.md", _report(figure, result, true_json, learned))
    return result


def _timings(timings: dict, earlier: list[str], started: float, cpu_started: float) -> dict:
    """Wall seconds per stage in this process; a stage an earlier (checkpointed) process did is
    null, and `earlier_process` lists the stages done wholly or in part ("... (part)") before a
    resume, so that a resumed run's total is not read as the whole cost."""
    out = {k: (None if k.removesuffix("_s") in earlier else v) for k, v in timings.items()}
    out.update({"total": time.time() - started, "process_cpu_total": time.process_time() - cpu_started})
    if earlier:
        out["earlier_process"] = list(earlier)
    return out


def compare_objectives(methods: dict) -> dict:
    """Per observable: the mean relative deviation of each objective's flow from the truth and which
    is closer ("rg" or "reverse_kl"), the paper's claim being that the RG objective tracks the true
    flow better (section 7.4)."""
    out = {}
    for name in FIDELITY_OBSERVABLES:
        dev = {m: methods[m]["fidelity"]["observables"][name]["mean_relative_deviation"] for m in methods}
        if any(v is None for v in dev.values()):
            out[name] = {"mean_relative_deviation": dev, "closer": None}
            continue
        out[name] = {"mean_relative_deviation": dev, "closer": min(dev, key=dev.get),
                     "ratio_reverse_kl_over_rg": dev["reverse_kl"] / dev["rg"] if dev.get("rg") else None}
    return out


def _report(figure: str, result: dict, true_json: dict, learned: dict) -> str:
    meta = result["meta"]
    th = meta["theory"]
    s = meta["settings"]
    lines = [f"# {figure}: RG objective [5.22] vs reverse KL [5.5]", ""]
    for name, _, label in METHODS:
        lines += [f"## {label}", "", *verdict_lines(result["methods"][name]["fidelity"]), ""]
    lines += ["Which objective is closer to the true flow (mean relative deviation over t):", "",
              "| observable | RG objective | reverse KL | closer |", "|---|---|---|---|"]
    for name, c in result["comparison"].items():
        d = c["mean_relative_deviation"]
        cells = ["n/a" if d[m] is None else f"{100 * d[m]:.2f}%" for m in ("rg", "reverse_kl")]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {c['closer'] or 'n/a'} |")
    lines += [
        "",
        f"Theory {theory_line(th)}; "
        f"Carosso M = {meta['scheme']['M']:g}, horizon T = {meta['horizon_T']:.3g}; {'quick' if meta['quick'] else 'full'} settings.",
        f"Training: {s['training']['steps']} steps, batch {s['training']['batch']}, RK4 {s['training']['ode_steps']} steps per "
        f"unit log-time, Adam(b1 = {s['training']['b1']}, b2 = {s['training']['b2']}), lr {s['training']['learning_rate']:g}. "
        f"UV: {s['uv_sampler']['algorithm']} {s['uv_sampler']['chains']} x {s['uv_sampler']['samples']}; {s['learned_samples']} flow samples per time.",
        "",
        "The former measure (kept for continuity; it rewards wide error bars): x = mean over t of "
        "|learned - true| / combined error:",
        "",
        "| method | m_R | Z | lambda_R | max_abs_phi | ESS/n at t = 0 | IMH acceptance |",
        "|---|---|---|---|---|---|---|",
    ]

    def f(x):
        return "n/a" if x is None else f"{x:.3g}"

    for name, _, label in METHODS:
        m = result["methods"][name]
        d = meta["sampler_at_t0"][name]
        lines.append(f"| {label} | {f(m['m_R'])} | {f(m['Z'])} | {f(m['lambda_R'])} | {f(m['max_abs_phi'])} | "
                     f"{f(m['ess_t0'])} | {f(d['imh_acceptance'])} |")
    lines += ["", "| t | m_R true | m_R rg | m_R reverse KL | Z true | Z rg | Z reverse KL |", "|---|---|---|---|---|---|---|"]

    for i, t in enumerate(true_json["t"]):
        cells = [flow_cell(flow, name, i) for name in ("m_R", "Z") for flow in (true_json, learned["rg"], learned["reverse_kl"])]
        lines.append(f"| {t:.3g} | " + " | ".join(cells) + " |")
    lines += ["", f"Timings (s): {meta['timings_s']}", ""]
    return "\n".join(lines)
