"""The `rgdiff` command line.

Every user error is one line on stderr and exit code 2; Ctrl-C exits with 130 and leaves no
half-written file (all outputs are written to a temporary name and renamed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="rgdiff: renormalizing diffusion models for lattice field theory.",
)


def _setup_jax():
    import jax

    jax.config.update("jax_enable_x64", True)


@app.command()
def sample(
    dim: int = typer.Option(2, "--dim", help="lattice dimension d (1, 2 or 3)"),
    size: int = typer.Option(..., "--size", help="sites per side N (>= 2)"),
    length: Optional[float] = typer.Option(None, "--length", help="physical side length L (physical units; default 1)"),
    m2: Optional[float] = typer.Option(None, "--m2", help="bare mass squared"),
    lam: Optional[float] = typer.Option(None, "--lam", help="bare quartic coupling (lam_A for --units albergo)"),
    kappa: Optional[float] = typer.Option(None, "--kappa", help="hopping parameter (--units hopping)"),
    lambda_h: Optional[float] = typer.Option(None, "--lambda-h", help="hopping-form quartic coupling (--units hopping)"),
    units: str = typer.Option("physical", "--units", help="physical | lattice | albergo | hopping"),
    samples: int = typer.Option(1000, "--samples", help="samples kept per chain"),
    chains: int = typer.Option(4, "--chains", help="independent chains (run in parallel with vmap)"),
    warmup: int = typer.Option(500, "--warmup", help="window-adaptation steps per chain"),
    algorithm: str = typer.Option("nuts", "--algorithm", help="nuts | hmc"),
    hmc_steps: int = typer.Option(10, "--hmc-steps", help="leapfrog steps per HMC trajectory"),
    thin: int = typer.Option(1, "--thin", help="keep every THIN-th transition"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    out: Path = typer.Option(..., "--out", help="output ensemble file (.h5)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """Sample a lattice phi^4 theory with NUTS (or HMC) and save the ensemble to HDF5."""
    from .ensemble import save_ensemble
    from .jobs import sample_ensemble
    from .progress import console
    from .sampling import SamplerSettings
    from .theory import make_phi4

    theory = make_phi4(dim, size, units=units, length=length, m2=m2, lam=lam, kappa=kappa, lambda_h=lambda_h)
    settings = SamplerSettings(algorithm=algorithm, chains=chains, samples=samples, warmup=warmup, thin=thin, hmc_steps=hmc_steps)
    _check_seed(seed)
    _check_out(out, ".h5")
    _setup_jax()
    given = {"units": units, "m2": m2, "lam": lam, "kappa": kappa, "lambda_h": lambda_h, "length": length}
    ens = sample_ensemble(theory, settings, seed=seed, units=given, quiet=quiet)
    save_ensemble(out, ens)
    if not quiet:
        d = ens.diagnostics
        console.print(
            f"wrote {out}: {chains} chains x {samples} samples, acceptance "
            f"{sum(d['acceptance_rate']) / chains:.2f}, divergences {sum(d['divergences'])}"
        )


@app.command()
def measure(
    file: Path = typer.Argument(..., help="ensemble file written by `rgdiff sample`"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
):
    """Measure the observables of an ensemble, with Gamma-method errors and tau_int."""
    from .ensemble import load_ensemble
    from .observables import measure as measure_fields
    from .report import measurement_meta, print_measurement

    ens = load_ensemble(file)
    m = measure_fields(ens.fields, ens.lattice, markov=ens.markov)
    meta = measurement_meta(ens, m, file)
    if as_json:
        print(json.dumps({"observables": m.as_json()["observables"], "meta": meta}, indent=2))
    else:
        print_measurement(m, meta)


@app.command()
def run(
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: rgdiff-out/run-<time>)"),
    full: bool = typer.Option(False, "--full", help="the full paper-size run (longer chains)"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """The main job: sample the paper's default theory, measure it, write tables, figures and a report."""
    from .pipeline import run_main

    _check_seed(seed)
    _setup_jax()
    run_main(out=out, full=full, seed=seed, quiet=quiet)


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
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """The true RG flow: push a UV ensemble through an exact RG kernel and measure along t."""
    from ._io import package_versions, write_json
    from .ensemble import load_ensemble
    from .errors import InvalidSchemeError
    from .flow import parse_times, time_grid, true_flow
    from .progress import progress_bar
    from .rg import make_scheme

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
    _check_seed(seed)
    _check_out(out, ".json")
    if plot is not None:
        _check_out(plot, ".png")
    ens = load_ensemble(file)
    _setup_jax()
    import jax

    with progress_bar(not quiet) as cb:
        res, _ = true_flow(sch, ens.fields, ens.lattice, grid, key=jax.random.key(seed), markov=ens.markov, callback=cb)
    data = res.as_json()
    data["meta"].update(
        {
            "input": str(file),
            "theory": ens.theory.describe(),
            "uv_sampler": ens.sampler,
            "uv_seed": ens.seed,
            "seed": seed,
            "versions": package_versions(),
        }
    )
    write_json(out, data)
    if plot is not None:
        from . import plots

        th = ens.theory
        plots.flows(
            [(f"{sch.describe().get('name')} M={M:g}", data)],
            plot,
            f"true RG flow, d={th.lattice.dim} N={th.lattice.size} L={th.lattice.length:g} m2={th.m2:g} lam={th.lam:g}",
        )


@app.command()
def reproduce(
    figure: str = typer.Argument(..., help="which figure: fig6"),
    quick: bool = typer.Option(False, "--quick", help="smaller ensembles and grids (minutes on a laptop)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: rgdiff-out/<fig>-<time>)"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """Reproduce a figure of the paper at its parameters: PNG plus the JSON data behind each panel."""
    from .reproduce import reproduce as run_reproduce

    _check_seed(seed)
    _setup_jax()
    run_reproduce(figure, quick=quick, out=out, seed=seed, quiet=quiet)


@app.command()
def train(
    model: str = typer.Option("eft-score", "--model", help="score | eft-score"),
    data: Path = typer.Option(..., "--data", help="UV ensemble (.h5) from `rgdiff sample`"),
    scheme: str = typer.Option("carosso", "--scheme", help="RG scheme of the forward process (needs a stationary law: carosso, M > 0)"),
    M: float = typer.Option(1.0, "--M", help="IR mass of the M-modified scheme"),
    noise: Optional[float] = typer.Option(None, "--noise", help="Carosso noise-variance factor"),
    steps: int = typer.Option(2000, "--steps", help="gradient steps"),
    batch: int = typer.Option(64, "--batch", help="configurations per step"),
    lr: float = typer.Option(3e-3, "--lr", help="initial Adam learning rate"),
    horizon: Optional[float] = typer.Option(None, "--horizon", help="largest RG time T (default: when p_T forgets the UV)"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float64"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    out: Path = typer.Option(..., "--out", help="model directory to create"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """Train a renormalizing diffusion model (score matching on the exact RG kernel)."""
    from .jobs import train_job
    from .models import MODEL_NAMES, InvalidModelError
    from .rg import make_scheme
    from .training import TrainSettings

    if model not in MODEL_NAMES:
        raise InvalidModelError(f"unknown --model {model!r}; choose one of {', '.join(MODEL_NAMES)} (cnf comes with the flow issue)")
    options = {"noise": noise} if noise is not None else {}
    sch = make_scheme(scheme, M=M, **options)
    TrainSettings(steps=steps, batch=batch, learning_rate=lr, horizon=horizon or 1.0, dtype=dtype)  # validate early
    _check_seed(seed)
    _setup_jax()
    train_job(
        kind=model, data=data, scheme=sch, settings=None, seed=seed, out=out, quiet=quiet,
        train_kwargs={"steps": steps, "batch": batch, "learning_rate": lr, "horizon": horizon, "dtype": dtype},
    )


@app.command()
def generate(
    model_dir: Path = typer.Argument(..., help="model directory written by `rgdiff train`"),
    samples: int = typer.Option(..., "--samples", help="number of configurations"),
    t: float = typer.Option(0.0, "--t", help="RG time of the samples (0 = the UV theory)"),
    solver: str = typer.Option("ode", "--solver", help="ode (probability flow [6.14]) | sde (reverse SDE [5.25])"),
    steps: Optional[int] = typer.Option(None, "--steps", help="integration steps (default 64 ode, 512 sde)"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    out: Path = typer.Option(..., "--out", help="output ensemble (.h5), readable by `rgdiff measure`"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """Generate configurations of the learned theory p_t^theta from the IR prior p_T."""
    from .jobs import generate_job

    _check_seed(seed)
    _check_out(out, ".h5")
    _setup_jax()
    generate_job(model_dir=model_dir, samples=samples, t=t, solver=solver, steps=steps, seed=seed, out=out, quiet=quiet)


@app.command("compare-flow")
def compare_flow(
    model_dir: Path = typer.Argument(..., help="model directory written by `rgdiff train`"),
    data: Path = typer.Option(..., "--data", help="UV ensemble (.h5) for the true flow"),
    times: Optional[str] = typer.Option(None, "--times", help="comma-separated RG times (must include 0)"),
    t_max: Optional[float] = typer.Option(None, "--t-max", help="largest time of a geometric grid (default: min(T, 2))"),
    n_times: int = typer.Option(9, "--n-times", help="points of the default grid"),
    samples: int = typer.Option(2000, "--samples", help="model samples per time"),
    solver: str = typer.Option("ode", "--solver", help="ode | sde"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    out: Path = typer.Option(..., "--out", help="output CMP.json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="also draw learned vs true flows to this PNG"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """Compare the model's flow p_t^theta with the true RG flow of the data (m_R, Z, lam_R, max|phi|)."""
    from .errors import InvalidSchemeError
    from .flow import parse_times
    from .jobs import compare_job
    from .modeldir import load_model_dir
    from .reproduce import flow_grid

    _check_seed(seed)
    _check_out(out, ".json")
    if solver not in ("ode", "sde"):
        raise InvalidSchemeError(f"--solver must be ode or sde, got {solver!r}")
    if samples < 2:
        raise InvalidSchemeError(f"--samples must be >= 2, got {samples}")
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
    if not quiet:
        from .progress import console

        console.print("mean |learned - true| / error over t: " + ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in cmp["discrepancy"].items()))


@app.command()
def bridge(
    model_dir: Path = typer.Argument(..., help="model directory written by `rgdiff train` (eft-score)"),
    samples: int = typer.Option(..., "--samples", help="samples kept per chain"),
    chains: int = typer.Option(4, "--chains", help="independent chains"),
    hmc_steps: int = typer.Option(1, "--hmc-steps", help="HMC steps on the UV action between model proposals"),
    warmup: int = typer.Option(200, "--warmup", help="HMC window-adaptation steps"),
    ode_steps: int = typer.Option(32, "--ode-steps", help="probability-flow ODE steps per proposal"),
    seed: int = typer.Option(0, "--seed", help="PRNG seed"),
    out: Path = typer.Option(..., "--out", help="output ensemble (.h5)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
):
    """Sample the UV theory exactly: model proposals (independence Metropolis) interleaved with HMC."""
    from .jobs import bridge_job

    _check_seed(seed)
    _check_out(out, ".h5")
    _setup_jax()
    bridge_job(model_dir=model_dir, samples=samples, chains=chains, hmc_steps=hmc_steps, warmup=warmup,
               ode_steps=ode_steps, seed=seed, out=out, quiet=quiet)


def _check_seed(seed: int) -> None:
    from .errors import RgdiffError

    if not 0 <= seed < 2**63:
        raise RgdiffError(f"seed must be an integer in [0, 2^63), got {seed}")


def _check_out(out: Path, suffix: str) -> None:
    from .errors import WriteOutputError

    if out.exists() and out.is_dir():
        raise WriteOutputError(f"--out {out} is a folder; give a file name ending in {suffix}")
    if not out.parent.exists() and str(out.parent):
        raise WriteOutputError(f"cannot write {out}: folder {out.parent} does not exist")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one clear line and exit code 2 for any user error."""
    from typer.exceptions import TyperException

    from .errors import RgdiffError

    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        # No command at all: show the help, which is what a user wants then.
        command.main(args=args or ["--help"], prog_name="rgdiff", standalone_mode=False)
    except RgdiffError as exc:
        print(f"rgdiff: error: {exc}", file=sys.stderr)
        return 2
    except TyperException as exc:  # usage errors: unknown option, bad value, missing argument
        print(f"rgdiff: error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("rgdiff: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
