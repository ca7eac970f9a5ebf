"""The `rgdiff` command line.

Every user error is one line on stderr and exit code 2; Ctrl-C exits with 130 and leaves no
half-written file (all outputs are written to a temporary name and renamed).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="rgdiff: renormalizing diffusion models for lattice field theory.",
)


# options that mean the same in every command that takes them
Seed = Annotated[int, typer.Option("--seed", help="PRNG seed")]
Quiet = Annotated[bool, typer.Option("--quiet", help="no progress display (results, the path written and errors still print)")]


def _print_version(value: bool) -> None:
    if value:
        from rgdiff import __version__

        print(f"rgdiff {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
):
    pass
Resume = Annotated[Optional[Path], typer.Option("--resume", help="continue an interrupted run from its checkpoint folder")]


def _setup_jax():
    import jax

    jax.config.update("jax_enable_x64", True)


@app.command()
def sample(
    ctx: typer.Context,
    dim: int = typer.Option(2, "--dim", help="lattice dimension d (1, 2 or 3)"),
    size: Optional[int] = typer.Option(None, "--size", help="sites per side N (>= 2; required here or in --config)"),
    length: Optional[float] = typer.Option(None, "--length", help="physical side length L (physical units; default 1)"),
    m2: Optional[float] = typer.Option(None, "--m2", help="bare mass squared"),
    lam: Optional[float] = typer.Option(None, "--lam", help="bare quartic coupling (lam_A for --units albergo)"),
    kappa: Optional[float] = typer.Option(None, "--kappa", help="hopping parameter (--units hopping)"),
    lambda_h: Optional[float] = typer.Option(None, "--lambda-h", help="hopping-form quartic coupling (--units hopping)"),
    units: str = typer.Option("physical", "--units", help="physical | lattice | albergo | hopping"),
    samples: int = typer.Option(1000, "--samples", help="samples kept per chain"),
    chains: int = typer.Option(4, "--chains", help="independent chains (run in parallel with vmap)"),
    warmup: int = typer.Option(500, "--warmup", help="window-adaptation steps per chain"),
    algorithm: str = typer.Option("fa-hmc", "--algorithm", help="fa-hmc | fa-nuts (Fourier-accelerated) | nuts (the paper's) | hmc"),
    hmc_steps: int = typer.Option(10, "--hmc-steps", help="leapfrog steps per HMC trajectory (hmc)"),
    trajectory_length: float = typer.Option(1.5707963267948966, "--trajectory-length", help="mean trajectory length of fa-hmc (whitened units)"),
    thin: int = typer.Option(1, "--thin", help="keep every THIN-th transition"),
    seed: Seed = 0,
    out: Optional[Path] = typer.Option(None, "--out", help="output ensemble file (.h5; required here or in --config)"),
    config: Optional[Path] = typer.Option(None, "--config", help="run configuration (TOML: [theory], [sampler], seed, out); flags override it"),
    resume: Resume = None,
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="sampling chunks between checkpoints (default: every chunk when --checkpoint-dir is given)"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="folder for periodic checkpoints (default OUT.ckpt with --checkpoint-every)"),
    quiet: Quiet = False,
):
    """Sample a lattice phi^4 theory (Fourier-accelerated HMC by default) and save the ensemble to HDF5."""
    from rgdiff.io.ensemble import save_ensemble
    from rgdiff.cli.jobs import sample_ensemble
    from rgdiff.io.locking import output_lock
    from rgdiff.cli.progress import console
    from rgdiff.samplers.uv import SamplerSettings
    from rgdiff.theory.phi4 import make_phi4

    # resuming: the checkpoint's settings, unless flags change them (then it is refused)
    base = _resume_config(resume, "sample") if resume is not None else None
    eff, v = _configured(ctx, "sample", config, locals(), base=base)
    dim, size, units, length, m2, lam, kappa, lambda_h = (v[k] for k in ("dim", "size", "units", "length", "m2", "lam", "kappa", "lambda_h"))
    algorithm, chains, samples, warmup, thin, hmc_steps, seed = (v[k] for k in ("algorithm", "chains", "samples", "warmup", "thin", "hmc_steps", "seed"))
    trajectory_length = v["trajectory_length"]
    size = _required(size, "--size", "theory.size")
    out = Path(_required(v["out"], "--out", "out"))
    _check_samples(samples)
    _check_memory(dim, size, chains, samples, thin)
    theory = make_phi4(dim, size, units=units, length=length, m2=m2, lam=lam, kappa=kappa, lambda_h=lambda_h)
    with _NamedByFlags():
        settings = SamplerSettings(algorithm=algorithm, chains=chains, samples=samples, warmup=warmup, thin=thin,
                                   hmc_steps=hmc_steps, trajectory_length=trajectory_length)
    _check_arguments(seed, (out, ".h5"))
    _setup_jax()
    given = {"units": units, "m2": m2, "lam": lam, "kappa": kappa, "lambda_h": lambda_h, "length": length}
    with output_lock(out):
        ckpt = _sampling_checkpoints(out, resume, checkpoint_every, checkpoint_dir, eff)
        ens = sample_ensemble(theory, settings, seed=seed, units=given, quiet=quiet,
                              extra={"command": "rgdiff sample", "config": eff}, checkpoints=ckpt)
        save_ensemble(out, ens)
        if ckpt is not None:
            ckpt.remove()
    # --quiet hides the progress display, not the result
    from rgdiff.cli.report import chain_summary_line

    d = ens.diagnostics
    acceptance = "n/a" if d.get("acceptance_rate") is None else f"{sum(d['acceptance_rate']) / chains:.2f}"
    divergences = "n/a" if d.get("divergences") is None else sum(d["divergences"])
    console.print(
        f"wrote {out}: {algorithm}, {chains} chain{'s' if chains != 1 else ''} x {samples} samples, acceptance "
        f"{acceptance}, divergences {divergences}; "
        + chain_summary_line(d.get("chains_summary"))
    )


@app.command()
def measure(
    file: Path = typer.Argument(..., help="ensemble file written by `rgdiff sample`"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Measure the observables of an ensemble, with Gamma-method errors and tau_int."""
    from rgdiff.io.ensemble import load_ensemble
    from rgdiff.observables.estimators import measure as measure_fields
    from rgdiff.cli.report import measurement_meta, print_measurement

    ens = load_ensemble(file)
    _setup_jax()
    m = measure_fields(ens.fields, ens.lattice, markov=ens.markov)
    meta = measurement_meta(ens, m, file)
    if as_json:
        print(json.dumps({"observables": m.as_json()["observables"], "correlators": m.correlators, "meta": meta}, indent=2))
    else:
        print_measurement(m, meta)
    impossible = m.meta.get("impossible")
    if impossible:  # printed flagged above; the command fails (rgdiff.observables.sanity)
        from rgdiff.errors import ImpossibleResultError

        raise ImpossibleResultError(
            f"{file}: impossible results, reported as n/a: "
            + ", ".join(f"{name} ({why})" for name, why in impossible.items())
        )


@app.command()
def run(
    ctx: typer.Context,
    config_file: Optional[Path] = typer.Argument(None, metavar="[CONFIG]", help="run configuration (TOML); `rgdiff config show` prints the default"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: rgdiff-out/run-<time>)"),
    full: bool = typer.Option(False, "--full", help="the full paper-size run (longer chains)"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed (overrides the config's seed)"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="training steps between checkpoints (the sampling is checkpointed every chunk; finished stages are kept; in OUT.ckpt)"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="checkpoint folder (default OUT.ckpt)"),
    resume: Resume = None,
    quiet: Quiet = False,
):
    """The main job: sample the paper's default theory, measure it, write tables, figures and a report."""
    from rgdiff.cli.pipeline import resumed_run, run_main
    from rgdiff.errors import RgdiffError

    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or checkpoint_every < 1):
        raise RgdiffError(f"--checkpoint-every must be an integer >= 1, got {checkpoint_every}")
    if resume is not None:
        given = [flag for name, flag in (("config_file", "CONFIG"), ("out", "--out"), ("full", "--full"), ("seed", "--seed"),
                                         ("checkpoint_dir", "--checkpoint-dir")) if _given_on_command_line(ctx, name)]
        if given:
            raise RgdiffError(f"--resume continues a run with the settings in its checkpoint; do not give {', '.join(given)}")
        eff, full, out = resumed_run(resume)
        v = {"seed": eff["seed"]}
    else:
        eff, v = _configured(ctx, "run", config_file, locals())
    _check_arguments(v["seed"])
    if out is not None:
        _check_new_folder(out, f"output folder {out} already exists; choose another --out")
    _setup_jax()
    run_main(out=out, full=full, seed=v["seed"], quiet=quiet, config=eff, checkpoint_every=checkpoint_every,
             checkpoint_dir=checkpoint_dir, resume=resume)


config_app = typer.Typer(help="Run configuration files (TOML).", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    command: str = typer.Argument("run", help="run | sample | train | reproduce"),
):
    """Print the embedded default configuration of a command (TOML, with the allowed values)."""
    from rgdiff.io import config as cfg

    sys.stdout.write(cfg.show(command))


@app.command()
def info(
    file: Path = typer.Argument(..., help="an ensemble (.h5), FLOW/CMP/FIDELITY .json, a model directory or a checkpoint folder"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
):
    """Show the provenance of an output: config, seed, package versions, input checksums."""
    from rgdiff.io.provenance import ReadProvenanceError, describe, format_text

    data = describe(file)
    try:
        text = json.dumps(data, indent=2, default=str) + "\n" if as_json else format_text(data)
    except RecursionError:  # provenance nested deeper than Python's recursion limit
        raise ReadProvenanceError(f"{file} holds provenance nested too deeply to show; it is not an rgdiff output") from None
    sys.stdout.write(text)


@app.command()
def flow(
    file: Path = typer.Argument(..., help="UV ensemble file written by `rgdiff sample`"),
    scheme: str = typer.Option(..., "--scheme", help="carosso | polchinski"),
    M: float = typer.Option(0.0, "--M", help="IR mass of the M-modified scheme (>= 0)"),
    times: Optional[str] = typer.Option(None, "--times", help="comma-separated RG times, e.g. 0,0.1,0.5"),
    t_max: Optional[float] = typer.Option(None, "--t-max", help="largest RG time of an even grid from 0"),
    n_times: Optional[int] = typer.Option(None, "--n-times", help="number of times on the grid [0, t-max]"),
    profile: Optional[str] = typer.Option(None, "--profile", help="Polchinski cutoff profile: slow | exponential"),
    noise: Optional[float] = typer.Option(None, "--noise", help="Carosso noise-variance factor (0.5 = authors' code)"),
    speed: Optional[float] = typer.Option(None, "--speed", help="Carosso time-speed factor s (t -> s t)"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed for the kernel noise"),
    out: Path = typer.Option(..., "--out", help="output FLOW.json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="also draw the flows to this PNG"),
    quiet: Quiet = False,
):
    """The true RG flow: push a UV ensemble through an exact RG kernel and measure along t."""
    from rgdiff.io.ensemble import load_ensemble
    from rgdiff.errors import InvalidSchemeError
    from rgdiff.observables.true_flow import parse_times, time_grid, true_flow
    from rgdiff.cli.progress import progress_bar
    from rgdiff.rg import make_scheme

    options = {k: v for k, v in (("profile", profile), ("noise", noise), ("speed", speed)) if v is not None}
    sch = make_scheme(scheme, M=M, **options)
    if times is not None:
        if t_max is not None or n_times is not None:
            raise InvalidSchemeError("give either --times or --t-max with --n-times, not both")
        grid = parse_times(times)
    else:
        if t_max is None or n_times is None:
            raise InvalidSchemeError("give --times t1,t2,... or both --t-max and --n-times")
        grid = time_grid(t_max=t_max, n_times=n_times)
    _check_arguments(seed, (out, ".json"), (plot, ".png"))
    _check_distinct(out, plot, file)
    ens = load_ensemble(file)
    _require_measurable(ens, file)
    _setup_jax()
    import contextlib

    import jax
    from rgdiff.io.locking import output_lock

    with output_lock(out), (contextlib.nullcontext() if plot is None else output_lock(plot)):
        with progress_bar(not quiet) as cb:
            res, _ = true_flow(sch, ens.fields, ens.lattice, grid, key=jax.random.key(seed), markov=ens.markov, callback=cb)
        data = res.as_json()
        from rgdiff.observables.sanity import impossible_in_flow, warn_impossible

        found = impossible_in_flow(res)
        if found:
            data["meta"]["impossible"] = found
        _write_flow(out, plot, data, file, ens, sch, M, seed)
    warn_impossible(f"flow {out}", found)


def _write_flow(out: Path, plot: Path | None, data: dict, file: Path, ens, sch, M: float, seed: int) -> None:
    """FLOW.json and its plot, both or neither: the plot is drawn under a temporary name and
    renamed once FLOW.json is written."""
    import contextlib

    from rgdiff.io.atomic import atomic_path, file_checksum, package_versions, write_json

    data["meta"].update(
        {
            "input": str(file),
            "input_sha256": file_checksum(file),
            "theory": ens.theory.describe(),
            "uv_sampler": ens.sampler,
            "uv_seed": ens.seed,
            "seed": seed,
            "versions": package_versions(),
        }
    )
    with (contextlib.nullcontext() if plot is None else atomic_path(plot)) as staged:
        if plot is not None:
            from rgdiff.cli import plots

            th = ens.theory
            plots.flows(
                [(f"{plots.scheme_label(sch)}", data)],
                staged,
                f"true RG flow, d={th.lattice.dim} N={th.lattice.size} L={th.lattice.length:g} m2={th.m2:g} lam={th.lam:g}",
            )
        write_json(out, data)
    from rgdiff.cli.progress import console

    console.print(f"wrote {out}" + (f" and {plot}" if plot is not None else "") + f": {len(data['t'])} RG times, {data['scheme']} M = {M:g}")


@app.command()
def reproduce(
    ctx: typer.Context,
    figure: str = typer.Argument(..., help="which figure: fig6 | fig7 | fig8"),
    quick: bool = typer.Option(False, "--quick", help="smaller ensembles and grids (minutes on a laptop)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: rgdiff-out/<fig>-<time>)"),
    seed: Seed = 0,
    config: Optional[Path] = typer.Option(None, "--config", help="run configuration (TOML: quick, seed, out, algorithm); flags override it"),
    algorithm: str = typer.Option("fa-hmc", "--algorithm", help="UV sampler: fa-hmc | fa-nuts | nuts (the paper's) | hmc"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="training steps between checkpoints (finished stages are kept; in OUT.ckpt)"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="checkpoint folder (default OUT.ckpt)"),
    resume: Resume = None,
    quiet: Quiet = False,
):
    """Reproduce a figure of the paper at its parameters: PNG plus the JSON data behind each panel."""
    from rgdiff.cli.reproduce import reproduce as run_reproduce
    from rgdiff.errors import RgdiffError

    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or checkpoint_every < 1):
        raise RgdiffError(f"--checkpoint-every must be an integer >= 1, got {checkpoint_every}")
    base = _resume_config(resume, "reproduce") if resume is not None else None
    eff, v = _configured(ctx, "reproduce", config, locals(), base=base)
    _check_arguments(v["seed"])
    if v["out"] is not None:
        _check_new_folder(Path(v["out"]), f"output folder {v['out']} already exists; choose another --out")
    _setup_jax()
    run_reproduce(v["figure"], quick=v["quick"], out=None if v["out"] is None else Path(v["out"]), seed=v["seed"],
                  quiet=quiet, algorithm=v["algorithm"], checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir,
                  resume=resume)


@app.command()
def train(
    ctx: typer.Context,
    model: str = typer.Option("eft-score", "--model", help="score | eft-score"),
    data: Optional[Path] = typer.Option(None, "--data", help="UV ensemble (.h5) from `rgdiff sample` (required here or in --config)"),
    scheme: str = typer.Option("carosso", "--scheme", help="RG scheme of the forward process (needs a stationary law: carosso, M > 0)"),
    M: float = typer.Option(1.0, "--M", help="IR mass of the M-modified scheme"),
    noise: Optional[float] = typer.Option(None, "--noise", help="Carosso noise-variance factor"),
    steps: int = typer.Option(2000, "--steps", help="gradient steps"),
    batch: int = typer.Option(64, "--batch", help="configurations per step"),
    lr: float = typer.Option(3e-3, "--lr", help="initial Adam learning rate"),
    horizon: Optional[float] = typer.Option(None, "--horizon", help="largest RG time T (default: when p_T forgets the UV)"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float64"),
    anchor_weight: float = typer.Option(1.0, "--anchor-weight", help="eft-score: weight of the t = 0 implicit score-matching anchor (0: off)"),
    ema: float = typer.Option(0.995, "--ema", help="decay of the parameter average the model is saved with (0: last iterate)"),
    seed: Seed = 0,
    out: Optional[Path] = typer.Option(None, "--out", help="model directory to create (required here or in --config)"),
    config: Optional[Path] = typer.Option(None, "--config", help="run configuration (TOML: [training], seed, out); flags override it"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="save a checkpoint every K steps (in OUT.ckpt)"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="checkpoint folder (default OUT.ckpt)"),
    resume: Resume = None,
    quiet: Quiet = False,
    objective: str = typer.Option("rg", "--objective", help="--model cnf: rg (RG objective [5.22]) | reverse-kl [5.5]"),
    ode_steps: int = typer.Option(16, "--ode-steps", help="--model cnf: RK4 steps per unit log-time"),
    hmc_steps: int = typer.Option(1, "--hmc-steps", help="--model cnf, rg: HMC trajectories per step on the UV chains"),
):
    """Train a renormalizing diffusion model (score matching on the exact RG kernel), or with --model cnf a
    normalizing flow in RG time (RG objective [5.22] or reverse KL [5.5]; paper defaults: 1000 steps, lr 5e-3)."""
    from rgdiff.cli.jobs import train_job
    from rgdiff.io.locking import output_lock
    from rgdiff.models import MODEL_NAMES, InvalidModelError
    from rgdiff.rg import make_scheme
    from rgdiff.train.score import TrainSettings

    base = _resume_config(resume, "train") if resume is not None else None
    eff, v = _configured(ctx, "train", config, locals(), base=base)
    model, scheme, M, noise, steps, batch, lr, horizon, dtype, seed, checkpoint_every = (
        v[k] for k in ("model", "scheme", "M", "noise", "steps", "batch", "lr", "horizon", "dtype", "seed", "checkpoint_every"))
    data = Path(_required(v["data"], "--data", "training.data"))
    out = Path(_required(v["out"], "--out", "out"))
    if model == "cnf":
        _train_flow(ctx, v, data=data, out=out, objective=objective, ode_steps=ode_steps, hmc_steps=hmc_steps, quiet=quiet,
                    checkpoint_dir=checkpoint_dir, resume=resume, run_config=eff)
        return
    if model not in MODEL_NAMES:
        raise InvalidModelError(f"unknown --model {model!r}; choose one of {', '.join(MODEL_NAMES)}, cnf")
    options = {"noise": noise} if noise is not None else {}
    sch = make_scheme(scheme, M=M, **options)
    anchor_weight, ema = v["anchor_weight"], v["ema"]
    with _NamedByFlags():
        TrainSettings(steps=steps, batch=batch, learning_rate=lr, horizon=horizon or 1.0, dtype=dtype,
                      anchor_weight=anchor_weight, ema=ema)  # validate early
    _check_arguments(seed)
    _setup_jax()
    with output_lock(out):
        train_job(
            kind=model, data=data, scheme=sch, settings=None, seed=seed, out=out, quiet=quiet,
            train_kwargs={"steps": steps, "batch": batch, "learning_rate": lr, "horizon": horizon, "dtype": dtype,
                          "anchor_weight": anchor_weight, "ema": ema},
            checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, resume=resume, run_config=eff,
        )


@app.command()
def generate(
    model_dir: Path = typer.Argument(..., help="model directory written by `rgdiff train`"),
    samples: int = typer.Option(..., "--samples", help="number of configurations"),
    t: float = typer.Option(0.0, "--t", help="RG time of the samples (0 = the UV theory)"),
    solver: Optional[str] = typer.Option(None, "--solver", help="sde (reverse SDE [5.25], exponential integrator; the default for score models) | ode (probability flow [6.14], with log q; a CNF's only sampler)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="integration steps (default 256 sde, 64 ode, 32 for a CNF)"),
    seed: Seed = 0,
    out: Path = typer.Option(..., "--out", help="output ensemble (.h5), readable by `rgdiff measure`"),
    quiet: Quiet = False,
):
    """Generate configurations of the learned theory p_t^theta from the IR prior p_T."""
    from rgdiff.cli.jobs import check_generate_steps, generate_job
    from rgdiff.io.locking import output_lock

    _check_arguments(seed, (out, ".h5"))
    check_generate_steps(steps)
    _setup_jax()
    with output_lock(out):  # before the work: a second command writing OUT refuses at once
        generate_job(model_dir=model_dir, samples=samples, t=t, solver=solver, steps=steps, seed=seed, out=out, quiet=quiet)


@app.command("compare-flow")
def compare_flow(
    model_dir: Path = typer.Argument(..., help="model directory written by `rgdiff train`"),
    data: Path = typer.Option(..., "--data", help="UV ensemble (.h5) for the true flow"),
    times: Optional[str] = typer.Option(None, "--times", help="comma-separated RG times (must include 0)"),
    t_max: Optional[float] = typer.Option(None, "--t-max", help="largest time of a geometric grid (default: min(T, 2))"),
    n_times: int = typer.Option(9, "--n-times", help="points of the default grid"),
    samples: int = typer.Option(2000, "--samples", help="model samples per time"),
    solver: Optional[str] = typer.Option(None, "--solver", help="sde (default for score models: the faithful reverse SDE) | ode"),
    seed: Seed = 0,
    out: Path = typer.Option(..., "--out", help="output CMP.json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="also draw learned vs true flows to this PNG"),
    quiet: Quiet = False,
):
    """Compare the model's flow p_t^theta with the true RG flow of the data (m_R, Z, lam_R, max|phi|)."""
    from rgdiff.errors import InvalidSchemeError
    from rgdiff.observables.true_flow import flow_grid, parse_times
    from rgdiff.cli.jobs import compare_job
    from rgdiff.io.modeldir import load_model_dir

    from rgdiff.observables.stats import MIN_SAMPLES_PER_CHAIN

    _check_arguments(seed, (out, ".json"), (plot, ".png"))
    _check_distinct(out, plot, data)
    if solver not in (None, "ode", "sde"):
        raise InvalidSchemeError(f"--solver must be ode or sde, got {solver!r}")
    if not MIN_SAMPLES_PER_CHAIN <= samples <= 10**7:
        raise InvalidSchemeError(f"--samples must be an integer in [{MIN_SAMPLES_PER_CHAIN}, 10000000] (model samples "
                                 f"per time, measured as independent samples), got {samples}")
    loaded = load_model_dir(model_dir)
    if times is not None:
        grid = np.unique(parse_times(times))
        if grid[0] != 0.0:
            raise InvalidSchemeError("--times must include t = 0 (the learned flow is mapped to vacua at its UV end)")
    else:
        top = min(loaded.horizon, 2.0) if t_max is None else t_max
        if not 0 < top < loaded.horizon:
            raise InvalidSchemeError(f"--t-max must lie in (0, T) with the model's T = {loaded.horizon:.4g}")
        grid = flow_grid(top, n_times, t_min=top * 1e-3)
    if grid[-1] >= loaded.horizon:
        raise InvalidSchemeError(f"times must stay below the model's horizon T = {loaded.horizon:.4g}")
    _setup_jax()
    cmp = compare_job(model_dir=model_dir, data=data, times=grid, samples=samples, solver=solver, seed=seed,
                      out=out, quiet=quiet, plot=plot)
    from rgdiff.cli.progress import console

    fid = cmp["fidelity"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    console.print(f"verdict: {fid['verdict'].upper()} (tolerance {100 * fid['tolerance']:g}% at every t, resolved); "
                  "max relative deviation over t: " + ", ".join(
                      f"{k} {pct(r['max_relative_deviation'])} ({r['verdict']})" for k, r in fid["observables"].items()))
    console.print(f"wrote {out}" + (f" and {plot}" if plot is not None else ""))


@app.command()
def bridge(
    model_dir: Path = typer.Argument(..., help="model directory written by `rgdiff train` (eft-score)"),
    samples: int = typer.Option(..., "--samples", help="samples kept per chain"),
    chains: int = typer.Option(4, "--chains", help="independent chains"),
    hmc_steps: int = typer.Option(1, "--hmc-steps", help="HMC steps on the UV action between model proposals"),
    warmup: int = typer.Option(200, "--warmup", help="HMC window-adaptation steps"),
    ode_steps: int = typer.Option(32, "--ode-steps", help="probability-flow ODE steps per proposal"),
    algorithm: str = typer.Option("fa-hmc", "--algorithm", help="local moves: fa-hmc | fa-nuts | nuts | hmc"),
    seed: Seed = 0,
    out: Path = typer.Option(..., "--out", help="output ensemble (.h5)"),
    quiet: Quiet = False,
):
    """Sample the UV theory exactly: model proposals (independence Metropolis) interleaved with HMC."""
    from rgdiff.cli.jobs import bridge_job
    from rgdiff.io.locking import output_lock
    from rgdiff.samplers.bridge import BridgeSettings

    _check_arguments(seed, (out, ".h5"))
    _check_samples(samples)
    with _NamedByFlags():
        BridgeSettings(chains=chains, samples=samples, hmc_steps_between=hmc_steps, warmup=warmup, ode_steps=ode_steps,
                       algorithm=algorithm)  # validate before any work
    _setup_jax()
    with output_lock(out):
        bridge_job(model_dir=model_dir, samples=samples, chains=chains, hmc_steps=hmc_steps, warmup=warmup,
                   ode_steps=ode_steps, seed=seed, out=out, quiet=quiet, algorithm=algorithm)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="small sizes and short chains (a few minutes on a laptop)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="output JSON file (default: rgdiff-out/bench-<time>.json)"),
    only: Optional[str] = typer.Option(None, "--only", help="run one benchmark: kernel | training | samplers"),
    tiny: bool = typer.Option(False, "--tiny", hidden=True, help="seconds-long settings, for the test suite"),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="samplers: benchmark-line sizes to run, e.g. 12,20 (none: named points only)"),
    points: Optional[str] = typer.Option(None, "--points", help="samplers: named points to run (paper_broken,paper_near_massless,benchmark_broken_N20 | none)"),
    quiet: Quiet = False,
):
    """Benchmarks side by side: kernel and training throughput, sampler ESS/s vs NUTS, HMC and Fourier-accelerated HMC; tables and JSON.

    Resumable: an interrupted run keeps its finished parts in <json>.partial, and the same command run again goes on from there."""
    import time as _time

    from rgdiff.bench.runner import check_only, find_resumable, partial_path, run_bench, sampler_settings

    check_only(only)
    suite = "tiny" if tiny else ("quick" if quick else "full")
    sampler_settings(suite, sizes, points)  # refuse bad --sizes / --points before anything runs
    if json_out is None:  # resume the newest interrupted run of these settings, if any
        folder = Path("rgdiff-out")
        json_out = (find_resumable(folder, suite, only, sizes, points) if folder.is_dir() else None) or (
            folder / f"bench-{_time.strftime('%Y%m%d-%H%M%S')}.json")
        json_out.parent.mkdir(parents=True, exist_ok=True)
    _check_arguments(None, (json_out, ".json"))
    _setup_jax()
    try:
        run_bench(suite=suite, only=only, out=json_out, quiet=quiet, sizes=sizes, points=points)
    except KeyboardInterrupt:
        if not partial_path(json_out).exists():
            raise
        raise _InterruptedKeepingWork(f"the finished parts are kept in {partial_path(json_out)}: "
                                      "run the same command again to go on") from None


def _configured(ctx: typer.Context, command: str, config_path: Path | None, params: dict,
                base: dict | None = None) -> tuple[dict, dict]:
    """Merge defaults < config file < flags given on the command line.

    `base` replaces defaults and file (a resumed run starts from its checkpoint's configuration).
    Returns the effective configuration (recorded in the outputs) and the value of every flag.
    """
    from rgdiff.io import config as cfg

    if base is None:
        base = cfg.load(command, config_path, full=bool(params.get("full")))
    given = {k: params[k] for k in cfg.FLAGS[command] if k in params and _given_on_command_line(ctx, k)}
    if command in _RANGE_CHECKED_FLAGS:
        for k, value in given.items():
            cfg.check_flag(command, k, value)
    eff = cfg.with_flags(command, base, given)
    values = {k: cfg.get(eff, dotted) for k, dotted in cfg.FLAGS[command].items()}
    return eff, values


# commands whose flags are checked against the ranges of their config keys (naming the flag);
# `sample` leaves sizes to the constructors and the memory check, which say more
_RANGE_CHECKED_FLAGS = ("train",)


def _given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the flag `name` was typed (click's ParameterSource.COMMANDLINE; typer vendors click)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _resume_config(folder: Path, command: str) -> dict | None:
    """The command configuration stored in a checkpoint (refusing another command's checkpoint)."""
    from rgdiff.io.checkpoint import ReadCheckpointError, read_checkpoint

    header = read_checkpoint(folder)[0]
    if header.get("command") != command:
        raise ReadCheckpointError(
            f"{folder} is a checkpoint of `rgdiff {header.get('command')}`, not of `rgdiff {command}`; it was left untouched"
        )
    config = header.get("config") or {}
    return (config.get("command") or {}).get("config") if command == "train" else config


def _required(value, flag: str, key: str):
    from rgdiff.io.config import InvalidConfigError

    if value is None:
        raise InvalidConfigError(f"give {flag} (or {key} in the --config file)")
    return value


def _check_samples(samples) -> None:
    """`rgdiff sample` refuses what `rgdiff measure` could not measure (fewer than 8 per chain)."""
    from rgdiff.errors import InvalidSamplerSettingsError
    from rgdiff.observables.stats import MIN_SAMPLES_PER_CHAIN

    if isinstance(samples, int) and not isinstance(samples, bool) and samples < MIN_SAMPLES_PER_CHAIN:
        raise InvalidSamplerSettingsError(
            f"--samples must be an integer >= {MIN_SAMPLES_PER_CHAIN} per chain (the Gamma method's window "
            f"in `rgdiff measure`), got {samples}"
        )


def _check_memory(dim: int, size: int, chains: int, samples: int, thin: int = 1) -> None:
    """Refuse, before allocating anything, an ensemble that cannot fit in this machine's memory:
    the fields kept, plus one sampling chunk (about 1/50 of the transitions, `thin` per sample
    kept, each held until the chunk is thinned)."""
    from rgdiff.cli.memory import human_bytes, machine_memory
    from rgdiff.errors import RgdiffError

    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in (dim, size, chains, samples, thin)):
        return  # the constructors give the precise message
    sites = size ** min(max(dim, 1), 3)
    chunk = max(thin, -(-samples * thin // 50))  # transitions per jitted call (`rgdiff.samplers.uv.sample`),
    chunk = -(-chunk // thin) * thin  # whole thinning periods; the scan keeps each transition's position
    need = 8 * chains * sites * (samples + chunk)  # float64: the fields kept + every position of one chunk
    have = machine_memory()
    if need > have // 2:
        thinned = f" kept every {thin} transitions (a sampling chunk holds {chunk} of them)" if thin > 1 else ""
        raise RgdiffError(
            f"an ensemble of {chains} chains x {samples} samples{thinned} on a {size}^{dim} lattice needs about "
            f"{human_bytes(need)} of memory (float64), more than half of this machine's {human_bytes(have)}; "
            f"use a smaller --size, fewer --samples or --chains{', or a smaller --thin' if thin > 1 else ''}"
        )


def _sampling_checkpoints(out: Path, resume: Path | None, every: int | None, folder: Path | None, config: dict):
    """The checkpoint folder of `rgdiff sample` (None: no checkpoints), see `rgdiff.io.checkpoint`."""
    if resume is None and every is None and folder is None:
        return None
    from rgdiff.io.checkpoint import Checkpointer

    ckpt = Checkpointer.for_command("sample", out=out, resume=resume, every=1 if every is None else every, folder=folder,
                                    config=config)
    if every is None and ckpt.resumed is not None:  # keep the interrupted run's period
        ckpt.every = int(ckpt.resumed[0].get("host", {}).get("every", 1))
    return ckpt


@app.command("ground-state")
def ground_state(
    ctx: typer.Context,
    dim: Optional[int] = typer.Option(None, "--dim", help="space dimension d (1, 2 or 3; required unless --resume)"),
    size: Optional[int] = typer.Option(None, "--size", help="sites per side N (N = 1: the anharmonic oscillator; required unless --resume)"),
    length: Optional[float] = typer.Option(None, "--length", help="physical side length L (implies --units physical)"),
    m2: Optional[float] = typer.Option(None, "--m2", help="bare mass squared (required unless --resume)"),
    lam: Optional[float] = typer.Option(None, "--lam", help="bare quartic coupling (lam/4! phi^4; required unless --resume)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="Adam steps on the variational energy (required unless --resume)"),
    units: Optional[str] = typer.Option(None, "--units", help="lattice (L = N; the default without --length) | physical"),
    batch: int = typer.Option(256, "--batch", help="configurations per step"),
    lr: float = typer.Option(0.02, "--lr", help="initial Adam learning rate (cosine decay to 10%)"),
    ode_steps: int = typer.Option(16, "--ode-steps", help="RK4 steps of the flow in training (>= 2; evaluation refines them)"),
    ode_error_weight: float = typer.Option(1.0, "--ode-error-weight", help="weight of the RK4 step-doubling gap in the training objective (0: off)"),
    eval_samples: int = typer.Option(8192, "--eval-samples", help="samples of the final energy estimate"),
    init_m2: Optional[float] = typer.Option(None, "--init-m2", help="initial prior M^2 (default: the best Gaussian's)"),
    seed: Seed = 0,
    as_json: bool = typer.Option(False, "--json", help="print the result JSON on stdout"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder to create (result.json and pictures; required unless --resume)"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="save a checkpoint every K steps (in OUT.ckpt)"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="checkpoint folder (default OUT.ckpt)"),
    resume: Resume = None,
    quiet: Quiet = False,
):
    """Variational ground state of the lattice phi^4 Hamiltonian with a renormalizing-flow ansatz (paper section 6).

    Exit code 1: the run finished but its result is impossible (the failures are printed, and
    written to result.json with "valid": false) or the training became non-finite."""
    from rgdiff.cli.ground_state import check_run_size, check_writable, ground_state_checkpoint, run_ground_state
    from rgdiff.errors import RgdiffError
    from rgdiff.io.checkpoint import NumericalFaultError
    from rgdiff.io.locking import output_lock
    from rgdiff.quantum.hamiltonian import Hamiltonian
    from rgdiff.quantum.train import GroundStateSettings

    names = ("dim", "size", "length", "m2", "lam", "steps", "units", "batch", "lr", "ode_steps", "ode_error_weight",
             "eval_samples", "init_m2", "seed", "out")
    v = dict(dim=dim, size=size, length=length, m2=m2, lam=lam, steps=steps, units=units, batch=batch, lr=lr,
                 ode_steps=ode_steps, ode_error_weight=ode_error_weight, eval_samples=eval_samples, init_m2=init_m2,
                 seed=seed, out=None if out is None else str(out))
    if resume is not None:  # the interrupted run's flags, unless typed again (a different one is refused below)
        saved = (_resume_config(resume, "ground-state") or {}).get("flags", {})
        v.update({k: saved[k] for k in names if k in saved and not _given_on_command_line(ctx, k)})
    for name in ("dim", "size", "m2", "lam", "steps", "out"):
        if v[name] is None:
            raise RgdiffError(f"give --{name} (or --resume a checkpoint folder of an interrupted run)")
    if v["units"] is None:
        v["units"] = "lattice" if v["length"] is None else "physical"
    out = Path(v["out"])
    h = Hamiltonian.make(v["dim"], v["size"], m2=v["m2"], lam=v["lam"], units=v["units"], length=v["length"])
    settings = GroundStateSettings(steps=v["steps"], batch=v["batch"], learning_rate=v["lr"], ode_steps=v["ode_steps"],
                                   eval_samples=v["eval_samples"], init_mass_sq=v["init_m2"], seed=v["seed"],
                                   error_weight=v["ode_error_weight"])
    check_run_size(h, settings)
    _check_new_folder(out, f"output folder {out} already exists; choose another --out")
    check_writable(out, resume or checkpoint_dir or (Path(f"{out}.ckpt") if checkpoint_every is not None else None))
    _setup_jax()
    config = {"flags": v, "hamiltonian": h.describe(), "settings": settings.as_dict()}
    with output_lock(out):
        ckpt = ground_state_checkpoint(out, resume=resume, every=checkpoint_every, folder=checkpoint_dir, config=config)
        try:
            result = run_ground_state(h, settings, out, units=v["units"], quiet=quiet, checkpoint=ckpt)
        except NumericalFaultError as exc:  # a run-time failure, not bad input
            print(f"rgdiff: error: {exc}", file=sys.stderr)
            raise typer.Exit(1)
        if ckpt is not None:
            ckpt.remove()
    if as_json:
        print(json.dumps(result, indent=2))
    # on stderr: beside --json's stdout too; --quiet hides the progress only
    from rgdiff.cli.progress import console
    from rgdiff.observables.stats import format_value_error

    exact = "n/a" if result["exact"] is None else f"{result['exact']:.8g}"
    if result["valid"]:  # an invalid result gets the one error line below, which names the file
        console.print(
            f"E = {format_value_error(result['energy'], result['energy_error'])} "
            f"(per site {format_value_error(result['energy_per_site'], result['energy_per_site_error'])}); "
            f"best Gaussian {result['baseline_gaussian']:.8g}; exact {exact}; "
            f"lower bound {result['lower_bound']['value']:.8g}; wrote {out}"
        )
    if not result["valid"]:
        print(f"rgdiff: error: the result is impossible, not a ground-state energy (written to {out / 'result.json'} "
              f"with \"valid\": false): " + "; ".join(result["failures"]), file=sys.stderr)
        raise typer.Exit(1)


def _train_flow(ctx, v: dict, *, data: Path, out: Path, objective: str, ode_steps: int, hmc_steps: int, quiet: bool,
                checkpoint_dir: Path | None = None, resume: Path | None = None, run_config: dict | None = None) -> None:
    """`train --model cnf`: the paper's defaults (1000 steps, lr 5e-3, float64) unless given on the
    command line; resuming, the checkpoint's settings unless given on the command line (a changed
    one is then refused as another run, except --lr after a NaN stop)."""
    import dataclasses

    from rgdiff.cli.jobs import train_flow_job
    from rgdiff.train.cnf import FlowTrainSettings
    from rgdiff.io.locking import output_lock
    from rgdiff.rg import make_scheme

    recorded = {}
    if resume is not None:
        from rgdiff.io.checkpoint import read_checkpoint

        training = (read_checkpoint(resume)[0].get("config") or {}).get("training") or {}
        names = {f.name for f in dataclasses.fields(FlowTrainSettings)}
        recorded = {k: val for k, val in training.items() if k in names} if isinstance(training, dict) else {}

    def flag(name, field, default, value=None):
        if _given_on_command_line(ctx, name):
            return v[name] if value is None else value
        return recorded.get(field, default)

    options = {"noise": v["noise"]} if v["noise"] is not None else {}
    sch = make_scheme(v["scheme"], M=v["M"], **options)
    with _NamedByFlags():
        settings = FlowTrainSettings(**{
            **recorded,
            "objective": flag("objective", "objective", "rg", objective), "steps": flag("steps", "steps", 1000),
            "batch": flag("batch", "batch", v["batch"]), "learning_rate": flag("lr", "learning_rate", 5e-3),
            "dtype": flag("dtype", "dtype", "float64"), "ode_steps": flag("ode_steps", "ode_steps", 16, ode_steps),
            "hmc_steps": flag("hmc_steps", "hmc_steps", 1, hmc_steps),
        })
    _check_arguments(v["seed"])
    _check_new_folder(out, f"--out {out} already exists; choose a new model directory")
    _setup_jax()
    with output_lock(out):
        train_flow_job(data=data, scheme=sch, settings=settings, horizon=v["horizon"], seed=v["seed"], out=out, quiet=quiet,
                       checkpoint_every=v["checkpoint_every"], checkpoint_dir=checkpoint_dir, resume=resume,
                       run_config=run_config)


def _check_arguments(seed: int | None, *outputs: tuple[Path | None, str]) -> None:
    """The checks a command makes before any work: `seed` (None: the command takes none) and
    each output file (path, suffix), where given."""
    from rgdiff.errors import RgdiffError, WriteOutputError

    if seed is not None and not 0 <= seed < 2**63:
        raise RgdiffError(f"seed must be an integer in [0, 2^63), got {seed}")
    from rgdiff.io.locking import check_output_path

    for out, suffix, *flag in outputs:
        if out is None:
            continue
        flag = flag[0] if flag else ("--plot" if suffix == ".png" else "--out")
        if out.exists() and out.is_dir():
            raise WriteOutputError(f"{flag} {out} is a folder; give a file name ending in {suffix}")
        if not out.parent.exists() and str(out.parent):
            raise WriteOutputError(f"cannot write {out}: folder {out.parent} does not exist")
        check_output_path(out, flag)


def _check_new_folder(out: Path, message: str, flag: str = "--out") -> None:
    """Refuse an output folder that exists already (`message` says which and what to do), or
    that cannot be created (a read-only file system, a name too long)."""
    from rgdiff.errors import WriteOutputError
    from rgdiff.io.locking import check_output_path

    if out.exists():
        raise WriteOutputError(message)
    check_output_path(out, flag, make_parents=True)


# data that travel: `export` and `import` (rgdiff.io.export) ------------------------------------


def _sample_option(name: str):
    """The option `name` of `rgdiff sample` (its flag, help and default), for commands that take a
    theory the same way."""
    import inspect

    return inspect.signature(sample).parameters[name].default


# the settings' field names as the user typed them (error messages name the flag)
_FLAG_OF = {
    "chains": "--chains", "samples": "--samples", "warmup": "--warmup", "thin": "--thin", "hmc_steps": "--hmc-steps",
    "hmc_steps_between": "--hmc-steps", "trajectory_length": "--trajectory-length", "ode_steps": "--ode-steps",
    "steps": "--steps", "batch": "--batch", "learning_rate": "--lr", "dtype": "--dtype", "anchor_weight": "--anchor-weight",
    "ema": "--ema", "horizon": "--horizon", "algorithm": "--algorithm", "objective": "--objective",
}


class _NamedByFlags:
    """`with _NamedByFlags():` an error of a settings class that starts with a field name (e.g.
    "hmc_steps_between must be ...") is re-raised naming the flag instead ("--hmc-steps must be ...")."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from rgdiff.errors import RgdiffError

        if not isinstance(exc, RgdiffError):
            return False
        message = str(exc)
        field = message.split(" ", 1)[0]
        if field in _FLAG_OF:
            raise type(exc)(_FLAG_OF[field] + message[len(field):]) from None
        return False


def _check_distinct(out: Path, plot: Path | None, *inputs: Path) -> None:
    """Refuse an output that is also another output or an input of the command."""
    from rgdiff.errors import WriteOutputError

    if plot is not None and os.path.abspath(plot) == os.path.abspath(out):
        raise WriteOutputError(f"--plot {plot} is the --out file; choose two names")
    for path in (out, plot):
        if path is not None:
            for file in inputs:
                _check_not_input(file, path)


def _require_measurable(ens, file: Path) -> None:
    """Refuse, before any work, an ensemble too small for the Gamma method (as `rgdiff measure` does)."""
    from rgdiff.observables.estimators import check_measurable

    chains, samples = ens.fields.shape[:2]
    check_measurable(chains, samples, markov=ens.markov, source=str(file))


def _check_not_input(file: Path, out: Path) -> None:
    from rgdiff.errors import WriteOutputError

    if out.exists() and file.exists() and out.resolve() == file.resolve():
        raise WriteOutputError(f"--out {out} is the input file; choose another name")


@app.command()
def export(
    file: Path = typer.Argument(..., help="ensemble file (.h5) written by rgdiff"),
    to: str = typer.Option(..., "--to", help="npz (NumPy) | netcdf (netCDF-4; needs the 'arviz' extra)"),
    out: Path = typer.Option(..., "--out", help="output file (.npz or .nc)"),
    quiet: Quiet = False,
):
    """Write an ensemble as NumPy .npz or netCDF-4, with its provenance (fields, action, M, max|phi|, MC time)."""
    from rgdiff.io import export as ex
    from rgdiff.io.ensemble import load_ensemble, load_series
    from rgdiff.io.locking import output_lock

    write = ex.writer(to)  # an unknown target, or a missing optional package: one line, before any work
    _check_arguments(None, (out, ex.TARGETS[to]))
    _check_not_input(file, out)
    ens = load_ensemble(file)  # every byte verified
    _, series = load_series(file)  # the stored action, M, max|phi|, exported as stored
    with output_lock(out):
        write(out, ens, series=series, source=file)
    # --quiet hides the progress display only
    from rgdiff.cli.progress import console

    chains, samples = ens.fields.shape[:2]
    console.print(f"wrote {out}: {chains} chains x {samples} samples ({to}) with the provenance of {file}")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="NumPy array (.npy) of shape (chains, samples, *lattice), or an .npz/.nc from `rgdiff export`"),
    out: Path = typer.Option(..., "--out", help="output ensemble file (.h5)"),
    dim: Optional[int] = typer.Option(None, "--dim", help="lattice dimension d (default: from the array's shape, which must match)"),
    size: Optional[int] = typer.Option(None, "--size", help="sites per side N (default: from the array's shape, which must match)"),
    length: Optional[float] = _sample_option("length"),
    m2: Optional[float] = _sample_option("m2"),
    lam: Optional[float] = _sample_option("lam"),
    kappa: Optional[float] = _sample_option("kappa"),
    lambda_h: Optional[float] = _sample_option("lambda_h"),
    units: str = _sample_option("units"),
    markov: Optional[bool] = typer.Option(None, "--markov/--independent", help="Markov chains (the default; Gamma-method errors) or independent samples"),
    quiet: Quiet = False,
):
    """Import configurations from NumPy (or an rgdiff .npz/.nc export) into an ensemble, with the theory
    given as for `rgdiff sample`; the source file's SHA-256 is recorded."""
    from rgdiff.errors import InvalidLatticeError
    from rgdiff.io import export as ex
    from rgdiff.io.ensemble import save_ensemble
    from rgdiff.io.locking import output_lock
    from rgdiff.theory.phi4 import make_phi4

    _check_arguments(None, (out, ".h5"))
    _check_not_input(file, out)
    src = ex.read_array(file)
    chains, samples, *lattice = src.fields.shape
    for flag, given, found in (("--dim", dim, len(lattice)), ("--size", size, lattice[0])):
        if given is not None and given != found:
            raise InvalidLatticeError(
                f"{file} holds configurations of shape {tuple(lattice)} (chains {chains}, samples {samples}), "
                f"not {flag} {given}"
            )
    _check_memory(len(lattice), lattice[0], chains, samples)
    given = {"units": units, "m2": m2, "lam": lam, "kappa": kappa, "lambda_h": lambda_h, "length": length}
    theory = None
    if _given_on_command_line(ctx, "units") or any(v is not None for k, v in given.items() if k != "units"):
        theory = make_phi4(len(lattice), lattice[0], units=units, length=length, m2=m2, lam=lam, kappa=kappa,
                           lambda_h=lambda_h)
    ens = ex.imported_ensemble(src, theory=theory, markov=markov, units=given)
    with output_lock(out):
        save_ensemble(out, ens)
    # --quiet hides the progress display only
    from rgdiff.cli.progress import console

    kind = "Markov chains" if ens.markov else "independent samples"
    console.print(f"wrote {out}: {chains} x {samples} {kind} on a {'x'.join(map(str, lattice))} lattice from {file}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one clear line on stderr for every error; exit code 2 for bad input
    (`RgdiffError`), 1 for a failure at run time (`RunFaultError`, an OS error such as a full
    disk, memory exhausted), 130 for Ctrl-C."""
    code = _main(argv)
    if code == 130 and argv is None:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """Leave at once after Ctrl-C: a JAX computation may still run on XLA's threads, and tearing
    the interpreter down under it can crash (SIGSEGV at exit); every output is already safe."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _os_error_line(exc: OSError) -> str:
    import errno

    what = exc.strerror or str(exc) or exc.__class__.__name__
    if exc.filename:
        what = f"{what}: {exc.filename}"
    hint = {errno.ENOSPC: "free some space or choose another --out", errno.EDQUOT: "free some space or choose another --out",
            errno.EROFS: "choose another --out"}.get(exc.errno)
    return f"{what}{'; ' + hint if hint else ''}; nothing half-written was kept"


def _show_warning(message, category, filename, lineno, file=None, line=None, _original=None):
    """`RgdiffWarning`s as one line, "rgdiff: warning: ..."; others as Python shows them."""
    from rgdiff.errors import RgdiffWarning

    if issubclass(category, RgdiffWarning):
        print(f"rgdiff: warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)
    else:
        _original(message, category, filename, lineno, file, line)


def _main(argv: list[str] | None) -> int:
    import functools
    import warnings

    from rgdiff.errors import RgdiffWarning

    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.filterwarnings("always", category=RgdiffWarning)  # the CLI promises the line, once per event
        warnings.showwarning = functools.partial(_show_warning, _original=warnings.showwarning)
        return _run(argv)


class _InterruptedKeepingWork(Exception):
    """Ctrl-C in a command that kept its finished work; the message says where and how to go on."""


def _run(argv: list[str] | None) -> int:
    from typer.exceptions import TyperException

    from rgdiff.errors import RgdiffError, RunFaultError

    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        # No command at all: show the help, which is what a user wants then.
        code = command.main(args=args or ["--help"], prog_name="rgdiff", standalone_mode=False)
    except RgdiffError as exc:
        print(f"rgdiff: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1 if isinstance(exc, RunFaultError) else 2
    except TyperException as exc:  # usage errors: unknown option, bad value, missing argument
        print(f"rgdiff: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except _InterruptedKeepingWork as exc:
        print(f"rgdiff: interrupted; {exc}", file=sys.stderr)
        return 130
    except (typer.Abort, KeyboardInterrupt):
        print("rgdiff: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except OSError as exc:  # a fault at run time: disk full, read-only file system, I/O error
        print(f"rgdiff: error: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("rgdiff: error: out of memory; use smaller sizes (fewer samples, chains or sites)", file=sys.stderr)
        return 1
    if code == 130:  # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns the code
        print("rgdiff: interrupted; no partial output was kept (a checkpoint, if any, is kept)", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
