"""The model commands as library functions: train, generate, compare-flow (and bridge).

Each writes its outputs atomically (a temporary name, then rename) and records provenance:
the config, seed, package versions and the checksum of every input file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import json
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from rgdiff.cli import plots
from rgdiff.cli.progress import console, progress_bar
from rgdiff.errors import InvalidSchemeError, RgdiffError
from rgdiff.generate.diffusion import likelihood_available, sample_ode, sample_reverse_sde
from rgdiff.generate.transport import sample as sample_flow
from rgdiff.io.atomic import atomic_folder, atomic_path, file_checksum, package_versions, write_json
from rgdiff.io.locking import output_lock
from rgdiff.io.checkpoint import Checkpointer, NumericalFaultError
from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
from rgdiff.io.modeldir import CONFIG, COUPLINGS, METRICS, PARAMS, append_metrics, couplings_table, load_model_dir, write_config, write_model
from rgdiff.models.base import AbstractExactScoreModel, AbstractVelocityField, cast_model
from rgdiff.train.initial import initial_model
from rgdiff.objectives.score_matching import ANCHOR, TIME_SAMPLING, WEIGHTING
from rgdiff.observables.compare import SDE_STEPS, compare_flow, faithful_solver, solver_failure
from rgdiff.observables.estimators import chain_summary, check_measurable
from rgdiff.observables.sanity import check_rate, impossible_in_flow, warn_impossible
from rgdiff.rg import require_reloadable
from rgdiff.samplers.bridge import BridgeSettings, run_bridge
from rgdiff.samplers.uv import sample
from rgdiff.train.cnf import FlowTrainSettings, flow_model_config, initial_flow, sampler_diagnostics, train_flow, write_flow_dir
from rgdiff.train.score import TrainSettings, default_horizon, train

ODE_STEPS, FLOW_STEPS = 64, 32  # `rgdiff generate` steps by default: PF-ODE, CNF (reverse SDE: SDE_STEPS)


def sample_ensemble(theory, settings, *, seed: int, units: dict, extra: dict | None = None, quiet: bool = False,
                    checkpoints=None) -> Ensemble:
    """Run the UV sampler with a progress display and wrap the chains with their provenance.

    `checkpoints`: a `rgdiff.io.checkpoint.Checkpointer` (periodic checkpoints, exact resume)."""
    with progress_bar(not quiet) as cb:
        result = sample(theory, settings, key=jax.random.key(seed), callback=cb, checkpoint=checkpoints)
    diagnostics = {**result.diagnostics, "chains_summary": chain_summary(result.fields, theory.lattice)}
    check_rate(diagnostics, "acceptance_rate", where="sampling")  # flagged (None), never an impossible number
    return Ensemble(
        theory=theory,
        fields=result.fields,
        markov=True,
        seed=seed,
        sampler=settings.describe(),
        diagnostics=diagnostics,
        units={k: v for k, v in units.items() if v is not None},
        extra=extra or {},
    )


def train_job(
    *,
    kind: str,
    data: Path,
    scheme,
    settings: TrainSettings | None,
    seed: int,
    out: Path,
    quiet: bool = False,
    train_kwargs: dict | None = None,
    announce: bool = True,
    checkpoint_every: int | None = None,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
    run_config: dict | None = None,
    data_record: str | None = None,
) -> Path:
    """Train a score model on a UV ensemble and write the model directory (see `rgdiff.io.modeldir`).

    `data_record`: the data file as the model's config records it (default: `data` as given);
    `rgdiff run` records `../ensemble.h5`, where the ensemble ends up beside the model, not the
    temporary or checkpoint folder it was read from.

    With `checkpoint_every` (or `resume`), the state is saved every that many steps in
    `checkpoint_dir` (default OUT.ckpt, see `rgdiff.io.checkpoint`); `resume` continues from it and
    ends bitwise where the uninterrupted run ends (CPU). The checkpoint is removed once the model
    directory is written.
    """
    ens = load_ensemble(data)
    lattice = ens.lattice
    scheme.require_prior("training")
    require_reloadable(scheme)
    horizon = default_horizon(scheme, ens.fields, lattice)
    kwargs = dict(train_kwargs or {})
    if kwargs.get("horizon") is None:
        kwargs["horizon"] = horizon
    settings = settings or TrainSettings(**kwargs)
    key = jax.random.key(seed)
    k_init, k_train = jax.random.split(key)
    model = initial_model(kind, lattice, scheme, ens.fields, settings.horizon, key=k_init)
    config = {
        "model": model.describe(),
        "scheme": scheme.describe(),
        "theory": ens.theory.describe(),
        "data": {
            "file": str(data) if data_record is None else data_record,
            "sha256": file_checksum(data),
            "chains": int(ens.fields.shape[0]),
            "samples_per_chain": int(ens.fields.shape[1]),
            "uv_seed": ens.seed,
            "augmentation": "random phi -> -phi per draw (Z2)",
        },
        "training": {
            **settings.describe(),
            "seed": seed,
            "objective": "denoising score matching on the exact kernel [5.23]",
            "weighting": WEIGHTING,
            "time_sampling": TIME_SAMPLING,
            "anchor": ANCHOR if isinstance(model, AbstractExactScoreModel) and settings.anchor_weight > 0 else "none",
            "horizon_rule": "smallest T with a_T(p)^2 <P0(p)> <= 1e-4 v_T(p) for all p (prior p_T = p_inf)",
            "initialization": "score of the scheme's stationary law (free field of mass M)",
        },
        "versions": package_versions(),
    }
    if run_config is not None:
        config["command"] = {"name": "rgdiff train", "config": run_config}
    ckpt = _training_checkpoints(config, out=out, every=checkpoint_every, folder=checkpoint_dir, resume=resume,
                                 steps=settings.steps)
    metrics: list[dict] = list(ckpt.resumed[0]["host"].get("metrics", [])) if ckpt and ckpt.resumed else []
    with atomic_folder(out) as work:
        write_config(work / CONFIG, config)
        (work / METRICS).touch()
        for record in metrics:
            append_metrics(work / METRICS, record)
        if ckpt is not None:
            ckpt.host_extra = {"metrics": metrics}

        def on_log(record, current):
            if hasattr(current, "couplings"):
                f = current.couplings(jax.numpy.zeros((), jax.numpy.dtype(settings.dtype)))
                record = {**record, "couplings_t0": [float(x) for x in f]}
            metrics.append(record)
            append_metrics(work / METRICS, record)

        with progress_bar(not quiet) as cb:
            model = train(model, scheme, lattice, ens.fields, settings, key=k_train, callback=cb, on_log=on_log,
                          checkpoint=ckpt)
        write_model(work, config, model)  # params.eqx, then config.toml with its checksum
        if hasattr(model, "couplings"):
            table = couplings_table(model, settings.horizon)
            write_json(work / COUPLINGS, table)
            plots.couplings(table, ens.theory, scheme, work / "couplings.png")
    if ckpt is not None:
        ckpt.remove()
    _print_training_summary(out)  # a result, not progress: printed with --quiet too
    if announce:
        console.print(f"model written to [bold]{out}[/]")
    return out


def _training_checkpoints(config: dict, *, out: Path, every: int | None, folder: Path | None, resume: Path | None,
                          steps: int) -> Checkpointer | None:
    """The checkpoints of a training run (None: none asked for); its identity is the model
    `config` less versions, the command line and the data's file name (its checksum identifies it).
    Records the period in `config` ("checkpoint_every")."""
    if every is None and resume is None:
        return None
    identity = {k: v for k, v in config.items() if k not in ("versions", "command")}
    if isinstance(identity.get("data"), dict):
        identity["data"] = {k: v for k, v in identity["data"].items() if k != "file"}
    ckpt = Checkpointer.for_command("train", out=out, resume=resume, every=100 if every is None else every,
                                    folder=folder, config=config, identity=identity)
    if resume is not None and every is None:
        ckpt.every = int(ckpt.resumed[0]["host"].get("every", 100))
    config["checkpoint_every"] = ckpt.every
    ckpt.total = steps
    return ckpt


def _print_training_summary(out: Path) -> None:
    lines = (out / METRICS).read_text().strip().splitlines()
    if lines:
        last = json.loads(lines[-1])
        console.print(f"final loss {last['loss']:.4g} after {last['step']} steps ({last['seconds']:.0f} s)")
    if (out / COUPLINGS).exists():
        c = json.loads((out / COUPLINGS).read_text())
        f1, f2, f3 = c["kinetic"][0], c["mass"][0], c["quartic"][0]
        console.print(f"learned couplings at t = 0: m2 = -f2/f1 = {-f2 / f1:.4g}, lam = -6 f3/f1 = {-6 * f3 / f1:.4g}, f1 = {f1:.4g}")


def _model_provenance(model_dir: Path) -> dict:
    """Which model produced an output: its folder and the checksums of its config and weights."""
    return {
        "model": str(model_dir),
        "model_config_sha256": file_checksum(Path(model_dir) / CONFIG),
        "model_params_sha256": file_checksum(Path(model_dir) / PARAMS),
    }


def _checked_sample_ode(*args, **kwargs):
    """`sample_ode`, with a solver that hits its step limit reported as one clear error."""
    try:
        return sample_ode(*args, **kwargs)
    except eqx.EquinoxRuntimeError as exc:
        raise solver_failure(exc, "sampling with the probability-flow ODE") from None


MAX_STEPS = 10**6  # integration steps of one sample


def check_generate_steps(steps) -> None:
    """--steps: None (the default of the solver) or an integer in [1, MAX_STEPS]."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
        raise RgdiffError(f"--steps must be an integer in [1, {MAX_STEPS}] (or left out: {ODE_STEPS} ode, "
                          f"{SDE_STEPS} sde, {FLOW_STEPS} for a flow), got {steps}")


def check_generated_size(samples, lattice, *, source: str = "--samples") -> None:
    """Refuse, before any work, a number of samples that `rgdiff measure` cannot measure or this
    machine cannot hold (the generated chunks and their concatenation: two float64 copies)."""
    from rgdiff.cli.memory import human_bytes, machine_memory
    from rgdiff.observables.stats import MIN_SAMPLES_PER_CHAIN

    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_SAMPLES_PER_CHAIN:
        raise RgdiffError(f"{source} must be an integer >= {MIN_SAMPLES_PER_CHAIN} (what `rgdiff measure` needs), "
                          f"got {samples}")
    need = 2 * 8 * samples * lattice.sites
    have = machine_memory()
    if need > have // 2:
        raise RgdiffError(f"{source} {samples} on a {lattice.size}^{lattice.dim} lattice needs about {human_bytes(need)} of memory, "
                          f"more than half of this machine's {human_bytes(have)}; generate fewer samples")


def generate_job(*, model_dir: Path, samples: int, t: float, solver: str | None, steps: int | None, seed: int,
                 out: Path, quiet: bool = False) -> Path:
    """Sample p_t^theta with the reverse SDE (default for score models), the probability-flow ODE
    (with log q) or a CNF's own ODE, and write an ensemble."""
    check_generate_steps(steps)
    loaded = load_model_dir(model_dir)
    check_generated_size(samples, loaded.lattice)
    if not (0.0 <= t < loaded.horizon):
        raise InvalidSchemeError(f"--t must lie in [0, T) with the model's horizon T = {loaded.horizon:.4g}, got {t}")
    solver = solver or faithful_solver(loaded.model)
    if solver not in ("ode", "sde"):
        raise RgdiffError(f"--solver must be ode or sde, got {solver!r}")
    is_flow = isinstance(loaded.model, AbstractVelocityField)  # a CNF in RG time: its own ODE (rgdiff.generate.transport)
    if is_flow and solver != "ode":
        raise RgdiffError(f"a normalizing flow samples with its ODE only; --solver {solver} does not apply")
    steps = steps if steps is not None else (FLOW_STEPS if is_flow else ODE_STEPS if solver == "ode" else SDE_STEPS)
    log_prob = not is_flow and likelihood_available(loaded.model, loaded.scheme, times=(t, loaded.horizon))
    key = jax.random.key(seed)
    chunk = 256
    fields, log_q = [], []
    with progress_bar(not quiet) as cb:
        cb("generate", 0, samples)
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            k = jax.random.fold_in(key, start)
            if is_flow:
                phi, lq = eqx.filter_jit(sample_flow)(loaded.model, loaded.scheme, k, chunk, t, steps=steps)
                log_q.append(np.asarray(lq)[:n])
            elif solver == "ode":
                phi, lq = _checked_sample_ode(loaded.model, loaded.scheme, k, chunk, T=loaded.horizon, t_end=t, steps=steps,
                                              log_prob=log_prob)
                if lq is not None:
                    log_q.append(np.asarray(lq)[:n])
            else:
                phi = sample_reverse_sde(loaded.model, loaded.scheme, k, chunk, T=loaded.horizon, t_end=t, steps=steps)
            fields.append(np.asarray(phi)[:n])
            cb("generate", start + n, samples)
    fields = np.concatenate(fields)
    if not np.all(np.isfinite(fields)):
        bad = int(np.sum(~np.all(np.isfinite(fields.reshape(len(fields), -1)), axis=1)))
        raise NumericalFaultError(
            f"the model generated non-finite fields ({bad} of {len(fields)} configurations); it may be untrained or unstable"
        )
    extra = {
        **_model_provenance(model_dir),
        "t": t,
        "solver": solver,
        "steps": steps,
        "note": "independent samples of the model's p_t^theta; the theory attribute is the UV theory it was trained on",
    }
    if log_q:
        lq = np.concatenate(log_q)
        extra["log_q_mean"] = float(np.mean(lq))
    ens = Ensemble(theory=loaded.theory, fields=fields[None], markov=False, seed=seed, sampler={"algorithm": f"model-{solver}"}, extra=extra)
    save_ensemble(out, ens)
    console.print(f"wrote {out}: {samples} samples of p_t at t = {t:g} ({solver})")
    return out


def compare_job(*, model_dir: Path, data: Path, times: np.ndarray, samples: int, solver: str | None, seed: int, out: Path,
                quiet: bool = False, plot: Path | None = None) -> dict:
    """The model's flow against the true flow of `data` at `times`, written to CMP.json (and `plot`)."""
    loaded = load_model_dir(model_dir)
    ens = load_ensemble(data)
    loaded.check_compatible(ens.theory, f"data {data}")
    check_measurable(*ens.fields.shape[:2], markov=ens.markov, source=str(data))
    with output_lock(out), (contextlib.nullcontext() if plot is None else output_lock(plot)):
        with progress_bar(not quiet) as cb:
            cmp = compare_flow(loaded, ens.fields, times, key=jax.random.key(seed), n=samples, markov=ens.markov,
                               solver=solver, callback=cb)
        cmp["meta"].update({"data": str(data), "data_sha256": file_checksum(data), "seed": seed,
                            "versions": package_versions(), **_model_provenance(model_dir)})
        found = cmp["meta"].get("impossible", {})
        warn_impossible("compare-flow", [f"learned {x}" for x in found.get("learned", [])] +
                        [f"true {x}" for x in found.get("true", [])])
        # CMP.json and its plot, both or neither: the plot is renamed into place once CMP.json is written
        with (contextlib.nullcontext() if plot is None else atomic_path(plot)) as staged:
            if plot is not None:
                plots.flows([("true flow", cmp["true"]), ("learned (model)", cmp["learned"])], staged,
                            f"learned vs true flow: {model_dir}", xscale="symlog")
            write_json(out, cmp)
    return cmp


def bridge_job(*, model_dir: Path, samples: int, chains: int, hmc_steps: int, warmup: int, ode_steps: int, seed: int,
               out: Path, quiet: bool = False, algorithm: str = "fa-hmc") -> Path:
    """Exact sampling of the UV theory with the bridge sampler driven by a trained model; the local
    moves between model proposals are `algorithm` (`rgdiff.samplers.hmc.UVMove`)."""
    loaded = load_model_dir(model_dir)
    settings = BridgeSettings(chains=chains, samples=samples, hmc_steps_between=hmc_steps, warmup=warmup,
                              ode_steps=ode_steps, algorithm=algorithm)
    model = cast_model(loaded.model, jax.numpy.float64)  # the Metropolis step compares log-densities: float64
    with progress_bar(not quiet) as cb:
        result = run_bridge(model, loaded.scheme, loaded.theory, settings, key=jax.random.key(seed), T=loaded.horizon, callback=cb)
    for key in ("imh_acceptance", "imh_acceptance_per_chain", "imh_mean_acceptance_probability", "hmc_acceptance"):
        check_rate(result.diagnostics, key, where="bridge")
    ens = Ensemble(
        theory=loaded.theory,
        fields=result.fields,
        markov=True,
        seed=seed,
        sampler={**dataclasses.asdict(settings), "algorithm": "rg-bridge", "local_algorithm": settings.algorithm},
        diagnostics=result.diagnostics,
        extra={**_model_provenance(model_dir), "T": loaded.horizon},
    )
    save_ensemble(out, ens)
    d = result.diagnostics

    def fmt(x, spec):
        return "n/a" if x is None else format(x, spec)

    console.print(
        f"wrote {out}: {chains} chains x {samples} samples; independence-Metropolis acceptance "
        f"{fmt(d.get('imh_acceptance'), '.3f')}, tau_int(|M|) {fmt(d.get('tau_int_abs_M'), '.2f')}"
    )
    return out


def train_flow_job(*, data, scheme, settings: FlowTrainSettings, horizon: float | None, seed: int, out,
                   quiet: bool = False, diagnostics_samples: int = 1024, checkpoint_every: int | None = None,
                   checkpoint_dir: Path | None = None, resume: Path | None = None, run_config: dict | None = None) -> dict:
    """`rgdiff train --model cnf`: train on the theory of the UV ensemble `data`, write the model directory.

    The ensemble gives the theory, the horizon T (`rgdiff.train.score.default_horizon`), the field
    scale sigma(s), and (objective rg) the starting states of the UV chains. Also writes
    SAMPLER.json: the flow as a sampler at t = 0 (ESS, IMH acceptance, tau_int of |M|).

    Checkpoints as `train_job`: with `checkpoint_every` (or `resume`) the flow, its optimizer state
    and the UV chains are saved every that many steps in `checkpoint_dir` (default OUT.ckpt), with
    the metrics so far; `resume` continues bitwise (CPU). Removed once the model directory is written.
    """
    ens = load_ensemble(data)
    lattice = ens.lattice
    scheme.require_prior("a flow")
    require_reloadable(scheme)
    if horizon is None:
        horizon = default_horizon(scheme, ens.fields, lattice)
    elif not (math.isfinite(horizon) and horizon > 0):
        raise InvalidSchemeError(f"--horizon must be a finite time > 0, got {horizon}")
    key = jax.random.key(seed)
    k_train, k_diag = jax.random.split(key)
    flow = initial_flow(lattice, scheme, ens.fields, horizon, settings)
    data_meta = {"file": str(data), "sha256": file_checksum(data), "chains": int(ens.fields.shape[0]),
                 "samples_per_chain": int(ens.fields.shape[1]), "uv_seed": ens.seed}
    config = flow_model_config(flow, scheme, ens.theory, settings, seed=seed, data=data_meta)
    if run_config is not None:
        config["command"] = {"name": "rgdiff train", "config": run_config}
    ckpt = _training_checkpoints(config, out=Path(out), every=checkpoint_every, folder=checkpoint_dir, resume=resume,
                                 steps=settings.steps)
    records: list[dict] = list(ckpt.resumed[0]["host"].get("metrics", [])) if ckpt and ckpt.resumed else []
    if ckpt is not None:
        ckpt.host_extra = {"metrics": records}  # the list grows with the run: each checkpoint saves it
    with progress_bar(not quiet) as cb:
        flow = train_flow(flow, scheme, ens.theory, settings, key=k_train, uv_start=ens.fields, callback=cb,
                          on_log=lambda r, f: records.append(r), checkpoint=ckpt)
    diag = sampler_diagnostics(flow, scheme, ens.theory, key=k_diag, n=diagnostics_samples, steps=settings.ode_steps)
    with atomic_folder(Path(out)) as work:
        write_flow_dir(work, flow, config, records, diag)
    if ckpt is not None:
        ckpt.remove()

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    console.print(f"flow model written to [bold]{out}[/]: {settings.objective} objective, {settings.steps} steps; "
                  f"at t = 0 ESS/n {fmt(diag['ess'])} (n = {diag['n']}), IMH acceptance {fmt(diag['imh_acceptance'])}")
    return diag
