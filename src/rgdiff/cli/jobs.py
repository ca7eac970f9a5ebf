"""The model commands as library functions: train, generate, compare-flow (and bridge).

Each writes its outputs atomically (a temporary name, then rename) and records provenance:
the config, seed, package versions and the checksum of every input file.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from rgdiff.io.atomic import atomic_folder, package_versions, write_json
from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
from rgdiff.errors import InvalidSchemeError, RgdiffError
from rgdiff.io.modeldir import CONFIG, COUPLINGS, METRICS, PARAMS, append_metrics, couplings_table, file_checksum, load_model_dir, write_config, write_params
from rgdiff.objectives.score_matching import ANCHOR, TIME_SAMPLING, WEIGHTING
from rgdiff.cli.progress import console, progress_bar
from rgdiff.train.score import TrainSettings, default_horizon, train


def sample_ensemble(theory, settings, *, seed: int, units: dict, extra: dict | None = None, quiet: bool = False,
                    checkpoints=None) -> Ensemble:
    """Run the UV sampler with a progress display and wrap the chains with their provenance.

    `checkpoints`: a `rgdiff.checkpoint.Checkpointer` (periodic checkpoints, exact resume)."""
    from rgdiff.samplers.uv import sample

    with progress_bar(not quiet) as cb:
        result = sample(theory, settings, key=jax.random.key(seed), callback=cb, checkpoint=checkpoints)
    return Ensemble(
        theory=theory,
        fields=result.fields,
        markov=True,
        seed=seed,
        sampler=settings.describe(),
        diagnostics=result.diagnostics,
        units={k: v for k, v in units.items() if v is not None},
        extra=extra or {},
    )


def prior_couplings(scheme, lattice) -> tuple[float, float, float]:
    """(f_1, f_2, f_3) of the score of the scheme's stationary law: a free field of mass M.

    Carosso-M's p_inf has spectrum noise / (|phat|^2 + M^2), so its score is
    (eps^d / noise) (Delta phi - M^2 phi): the model starts there, knowing nothing of the UV.
    """
    e = lattice.spacing**lattice.dim
    noise = float(scheme.describe().get("noise", 1.0))
    return (e / noise, -e * scheme.mass**2 / noise, 0.0)


def _uv_couplings(flat: np.ndarray, lattice, scheme):
    """The EFT model's t-dependent starting couplings: the closed-form score-matching estimate on
    the data at t = 0 (`objectives.hyvarinen_couplings`), relaxing to the stationary law's at
    the rate 2 w_0 at which the slowest mode forgets the UV (a_t^2 = exp(-2 w_0 t)). Gradient
    descent alone finds the t = 0 couplings slowly in a broken phase, where phi ~ v on every site
    makes phi and phi^3 nearly collinear (paper point: m2(0) = -0.31 for the bare -2 after 1500
    steps). None (constant start at the stationary law) if the estimate is not a usable score."""
    from rgdiff.objectives.score_matching import hyvarinen_couplings

    try:
        uv = hyvarinen_couplings(flat, lattice)
    except np.linalg.LinAlgError:
        return None, 1.0
    probe = 1e-2 / lattice.cutoff**2
    a_probe, _ = scheme.kernel(probe, lattice, half=False)
    rate = 2.0 * float(np.min(-np.log(np.asarray(a_probe)) / probe))
    if not (all(np.isfinite(uv)) and uv[0] > 0 and np.isfinite(rate) and rate > 0):
        return None, 1.0
    return uv, rate


def initial_model(kind: str, lattice, scheme, fields: np.ndarray, horizon: float, *, key):
    """A fresh score model for training on UV `fields` under `scheme`, starting at the score of the
    scheme's stationary law.

    The model's field scale follows the flow: sigma(t)^2 is the exact per-site variance of p_t,
    L^-d sum_p [a_t(p)^2 P0(p) + v_t(p)] with P0 the data's power spectrum, written as a few
    exponentials (`models.scales.field_scale_flow_terms`; exact for an Ornstein-Uhlenbeck scheme
    such as Carosso-M, where v_t = G_inf (1 - a_t^2) and a_t = exp(-r t)). Otherwise (no such
    form) the scale is the constant rms of the data.
    """
    from rgdiff.models import ConvScore, EFTScore, InvalidModelError
    from rgdiff.models.scales import field_scale_flow_terms

    flat = np.asarray(fields, dtype=np.float64).reshape(-1, *lattice.shape)
    sigma = float(np.sqrt(np.mean(flat**2)))
    flow = []
    if getattr(scheme, "has_prior", False):
        axes = tuple(range(1, lattice.dim + 1))
        power = lattice.volume * np.mean(np.abs(np.fft.fftn(flat, axes=axes) / lattice.sites) ** 2, axis=0)
        prior = np.asarray(scheme.prior_spectrum(lattice, half=False))
        probe = 1e-2 / lattice.cutoff**2
        a_probe, _ = scheme.kernel(probe, lattice, half=False)
        rates = -np.log(np.asarray(a_probe)) / probe
        sigma0, terms = field_scale_flow_terms(lattice, power, prior, rates)

        def exact(t):
            a, v = (np.asarray(x) for x in scheme.kernel(t, lattice, half=False))
            return float(np.sum(a**2 * power + v)) / lattice.volume

        def approx(t):
            return sigma0**2 + sum(c * np.expm1(-2.0 * r * t) for c, r in terms)

        checks = [0.0, probe, 1.0 / max(scheme.mass, 1e-12) ** 2, horizon]
        if np.all(rates > 0) and all(abs(approx(t) - exact(t)) <= 0.05 * exact(t) for t in checks):
            sigma, flow = sigma0, terms
    prior_f = prior_couplings(scheme, lattice)
    if kind == "eft-score":
        uv, rate = _uv_couplings(flat, lattice, scheme)
        return EFTScore(lattice, time_scale=horizon, field_scale=sigma, field_scale_flow=flow, coupling_init=prior_f,
                        coupling_init_uv=uv, coupling_init_rate=rate, key=key)
    if kind == "score":
        return ConvScore(lattice, time_scale=horizon, field_scale=sigma, field_scale_flow=flow, prior=prior_f, key=key)
    raise InvalidModelError(f"unknown score model {kind!r}; choose one of score, eft-score")


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
) -> Path:
    """Train a score model on a UV ensemble and write the model directory (see `rgdiff.modeldir`).

    With `checkpoint_every` (or `resume`), the state is saved every that many steps in
    `checkpoint_dir` (default OUT.ckpt, see `rgdiff.checkpoint`); `resume` continues from it and
    ends bitwise where the uninterrupted run ends (CPU). The checkpoint is removed once the model
    directory is written.
    """
    ens = load_ensemble(data)
    lattice = ens.lattice
    if not scheme.has_prior:
        raise InvalidSchemeError(
            f"training needs a scheme with a stationary law to generate from (p_T); "
            f"{scheme.describe().get('name')} with M = {scheme.mass:g} has none: use carosso with M > 0"
        )
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
            "file": str(data),
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
            "anchor": ANCHOR if model.has_exact_divergence and settings.anchor_weight > 0 else "none",
            "horizon_rule": "smallest T with a_T(p)^2 <P0(p)> <= 1e-4 v_T(p) for all p (prior p_T = p_inf)",
            "initialization": "score of the scheme's stationary law (free field of mass M)",
        },
        "versions": package_versions(),
    }
    if run_config is not None:
        config["command"] = {"name": "rgdiff train", "config": run_config}
    ckpt = None
    if checkpoint_every is not None or resume is not None:
        from rgdiff.io.checkpoint import Checkpointer

        identity = {k: v for k, v in config.items() if k not in ("versions", "command")}
        identity["data"] = {k: v for k, v in identity["data"].items() if k != "file"}  # the checksum identifies it
        ckpt = Checkpointer.for_command("train", out=out, resume=resume, every=checkpoint_every or 100,
                                        folder=checkpoint_dir, config=config, identity=identity)
        if resume is not None and checkpoint_every is None:
            ckpt.every = int(ckpt.resumed[0]["host"].get("every", 100))
        config["checkpoint_every"] = ckpt.every
        ckpt.total = settings.steps
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
        write_params(work / PARAMS, model)
        if hasattr(model, "couplings"):
            from rgdiff.cli import plots

            table = couplings_table(model, settings.horizon)
            write_json(work / COUPLINGS, table)
            plots.couplings(table, ens.theory, scheme, work / "couplings.png")
    if ckpt is not None:
        ckpt.remove()
    if not quiet:
        _print_training_summary(out)
    if announce:
        console.print(f"model written to [bold]{out}[/]")
    return out


def _print_training_summary(out: Path) -> None:
    lines = (out / METRICS).read_text().strip().splitlines()
    if lines:
        last = json.loads(lines[-1])
        console.print(f"final loss {last['loss']:.4g} after {last['step']} steps ({last['seconds']:.0f} s)")
    if (out / COUPLINGS).exists():
        c = json.loads((out / COUPLINGS).read_text())
        f1, f2, f3 = c["kinetic"][0], c["mass"][0], c["quartic"][0]
        console.print(f"learned couplings at t = 0: m2 = -f2/f1 = {-f2 / f1:.4g}, lam = -6 f3/f1 = {-6 * f3 / f1:.4g}, f1 = {f1:.4g}")


def _checked_sample_ode(*args, **kwargs):
    """`sample_ode`, with a solver that hits its step limit reported as one clear error."""
    import equinox as eqx

    from rgdiff.observables.compare import solver_failure
    from rgdiff.generate.diffusion import sample_ode

    try:
        return sample_ode(*args, **kwargs)
    except eqx.EquinoxRuntimeError as exc:
        raise solver_failure(exc, "sampling with the probability-flow ODE") from None


def generate_job(*, model_dir: Path, samples: int, t: float, solver: str, steps: int | None, seed: int,
                 out: Path, quiet: bool = False) -> Path:
    """Sample p_t^theta with the probability-flow ODE or the reverse SDE and write an ensemble."""
    from rgdiff.generate.diffusion import sample_reverse_sde

    loaded = load_model_dir(model_dir)
    if isinstance(samples, bool) or samples < 2:
        raise RgdiffError(f"--samples must be an integer >= 2, got {samples}")
    if not (0.0 <= t < loaded.horizon):
        raise InvalidSchemeError(f"--t must lie in [0, T) with the model's horizon T = {loaded.horizon:.4g}, got {t}")
    if solver not in ("ode", "sde"):
        raise RgdiffError(f"--solver must be ode or sde, got {solver!r}")
    key = jax.random.key(seed)
    chunk = 256
    fields, log_q = [], []
    with progress_bar(not quiet) as cb:
        cb("generate", 0, samples)
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            k = jax.random.fold_in(key, start)
            if getattr(loaded.model, "is_flow", False):  # an RG-time normalizing flow: its own ODE (rgdiff.flows)
                import equinox as eqx

                from rgdiff.generate.transport import sample as sample_flow

                if solver != "ode":
                    raise RgdiffError(f"a normalizing flow samples with its ODE only; --solver {solver} does not apply")
                phi, lq = eqx.filter_jit(sample_flow)(loaded.model, loaded.scheme, k, chunk, t, steps=steps or 32)
                log_q.append(np.asarray(lq)[:n])
            elif solver == "ode":
                phi, lq = _checked_sample_ode(loaded.model, loaded.scheme, k, chunk, T=loaded.horizon, t_end=t, steps=steps or 64,
                                     log_prob=loaded.model.has_exact_divergence and loaded.scheme.describe().get("name") == "carosso")
                if lq is not None:
                    log_q.append(np.asarray(lq)[:n])
            else:
                phi = sample_reverse_sde(loaded.model, loaded.scheme, k, chunk, T=loaded.horizon, t_end=t, steps=steps or 512)
            fields.append(np.asarray(phi)[:n])
            cb("generate", start + n, samples)
    fields = np.concatenate(fields)
    if not np.all(np.isfinite(fields)):
        from rgdiff.io.checkpoint import NumericalFaultError

        bad = int(np.sum(~np.all(np.isfinite(fields.reshape(len(fields), -1)), axis=1)))
        raise NumericalFaultError(
            f"the model generated non-finite fields ({bad} of {len(fields)} configurations); it may be untrained or unstable"
        )
    extra = {
        "model": str(model_dir),
        "model_config_sha256": file_checksum(Path(model_dir) / CONFIG),
        "model_params_sha256": file_checksum(Path(model_dir) / PARAMS),
        "t": t,
        "solver": solver,
        "steps": steps or (64 if solver == "ode" else 512),
        "note": "independent samples of the model's p_t^theta; the theory attribute is the UV theory it was trained on",
    }
    if log_q:
        lq = np.concatenate(log_q)
        extra["log_q_mean"] = float(np.mean(lq))
    ens = Ensemble(theory=loaded.theory, fields=fields[None], markov=False, seed=seed, sampler={"algorithm": f"model-{solver}"}, extra=extra)
    save_ensemble(out, ens)
    console.print(f"wrote {out}: {samples} samples of p_t at t = {t:g} ({solver})")
    return out


def compare_job(*, model_dir: Path, data: Path, times: np.ndarray, samples: int, solver: str, seed: int, out: Path,
                quiet: bool = False, plot: Path | None = None) -> dict:
    from rgdiff.observables.compare import compare_flow

    loaded = load_model_dir(model_dir)
    ens = load_ensemble(data)
    loaded.check_compatible(ens.theory, f"data {data}")
    with progress_bar(not quiet) as cb:
        cmp = compare_flow(loaded, ens.fields, times, key=jax.random.key(seed), n=samples, markov=ens.markov, solver=solver, callback=cb)
    cmp["meta"].update({"data": str(data), "data_sha256": file_checksum(data), "seed": seed, "versions": package_versions(),
                        "model": str(model_dir), "model_config_sha256": file_checksum(Path(model_dir) / CONFIG),
                        "model_params_sha256": file_checksum(Path(model_dir) / PARAMS)})
    write_json(out, cmp)
    if plot is not None:
        from rgdiff.cli import plots

        plots.flows([("true flow", cmp["true"]), ("learned (model)", cmp["learned"])], plot,
                    f"learned vs true flow: {model_dir}", xscale="symlog")
    return cmp


def bridge_job(*, model_dir: Path, samples: int, chains: int, hmc_steps: int, warmup: int, ode_steps: int, seed: int,
               out: Path, quiet: bool = False) -> Path:
    """Exact sampling of the UV theory with the bridge sampler driven by a trained model."""
    from rgdiff.samplers.bridge import BridgeSettings, run_bridge
    from rgdiff.train.score import cast_model

    loaded = load_model_dir(model_dir)
    settings = BridgeSettings(chains=chains, samples=samples, hmc_steps_between=hmc_steps, warmup=warmup, ode_steps=ode_steps)
    model = cast_model(loaded.model, jax.numpy.float64)  # the Metropolis step compares log-densities: float64
    with progress_bar(not quiet) as cb:
        result = run_bridge(model, loaded.scheme, loaded.theory, settings, key=jax.random.key(seed), T=loaded.horizon, callback=cb)
    ens = Ensemble(
        theory=loaded.theory,
        fields=result.fields,
        markov=True,
        seed=seed,
        sampler={**dataclasses_asdict(settings), "algorithm": "rg-bridge", "local_algorithm": settings.algorithm},
        diagnostics=result.diagnostics,
        extra={
            "model": str(model_dir),
            "model_config_sha256": file_checksum(Path(model_dir) / CONFIG),
            "model_params_sha256": file_checksum(Path(model_dir) / PARAMS),
            "T": loaded.horizon,
        },
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


def dataclasses_asdict(x) -> dict:
    import dataclasses

    return dataclasses.asdict(x)
