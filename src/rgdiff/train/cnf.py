"""Training RG-time normalizing flows: the RG objective [5.22] or reverse KL [5.5], and the flow as a sampler.

Defaults are the paper's (section 7.1): batch 64, Adam(b1 = 0.8, b2 = 0.9), learning rate 5e-3
with exponential decay (8000 transition steps, rate 0.1), 1000 gradient steps. Both objectives
use the same flow (`ContinuousFlow`), the same prior (the scheme's stationary law) and the same
number of gradient steps.

One RG-objective step (the loop after [5.22], see `rgdiff.flow_objectives`): the gradient of the
loss at the chain's current UV states, then the chain moves (IMH with the flow's fresh samples as
proposals, log q of both at the same parameters, then `hmc_steps` HMC trajectories), then Adam.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgdiff.errors import RgdiffError
from rgdiff.objectives.cnf import OBJECTIVES, effective_sample_size, hmc, hmc_step_size, imh, reverse_kl_loss, rg_loss
from rgdiff.generate.transport import SOLVERS, encode, sample
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.observables.estimators import magnetization
from rgdiff.observables.stats import tau_int
from rgdiff.theory.phi4 import Phi4


class InvalidFlowSettingsError(RgdiffError):
    """A flow-training setting is out of range; the message names it and its allowed values."""


@dataclasses.dataclass(frozen=True)
class FlowTrainSettings:
    """Settings of `train_flow` (defaults: the paper's, section 7.1).

    - `objective`: "rg" ([5.22]) or "reverse-kl" ([5.5]).
    - `steps`, `batch`: gradient steps and configurations per step (also the number of UV chains).
    - `learning_rate`, `transition_steps`, `decay_rate`, `b1`, `b2`: Adam with exponential decay.
    - `ode_steps`, `solver`: RK4 steps in log-time (or the first step of the adaptive solver).
    - `hmc_steps`, `leapfrog`: HMC trajectories per training step on the UV chains (rg only).
    - `rg_weight`: the factor of the integral term of [5.22].
    - `frequencies`, `time_bumps`: the vector field's size.
    - `dtype`: "float32" or "float64".
    - `log_every`: steps between logged records.
    """

    objective: str = "rg"
    steps: int = 1000
    batch: int = 64
    learning_rate: float = 5e-3
    transition_steps: int = 8000
    decay_rate: float = 0.1
    b1: float = 0.8
    b2: float = 0.9
    ode_steps: int = 16
    solver: str = "rk4"
    hmc_steps: int = 1
    leapfrog: int = 10
    rg_weight: float = 1.0
    frequencies: int = 6
    time_bumps: int = 8
    dtype: str = "float64"
    log_every: int = 10

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise InvalidFlowSettingsError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.solver not in SOLVERS:
            raise InvalidFlowSettingsError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.dtype not in ("float32", "float64"):
            raise InvalidFlowSettingsError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name, lo in (("steps", 1), ("batch", 2), ("transition_steps", 1), ("ode_steps", 1), ("hmc_steps", 0),
                         ("leapfrog", 1), ("frequencies", 0), ("time_bumps", 1), ("log_every", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise InvalidFlowSettingsError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name in ("learning_rate", "decay_rate", "rg_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InvalidFlowSettingsError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("b1", "b2"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise InvalidFlowSettingsError(f"{name} must lie in [0, 1), got {v!r}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)

    def optimizer(self):
        schedule = optax.exponential_decay(self.learning_rate, self.transition_steps, self.decay_rate)
        return optax.adam(schedule, b1=self.b1, b2=self.b2)


def field_scale_nodes(scheme, lattice: Lattice, fields, horizon: float, t0: float, nodes: int = 17) -> tuple:
    """sigma(s) at `nodes` log-time nodes: the exact rms of p_t, L^-d sum_p [a_t^2 P0(p) + v_t(p)].

    P0 is the data's power per mode; the scale only normalizes the features (not learned).
    """
    flat = np.asarray(fields, dtype=np.float64).reshape(-1, *lattice.shape)
    power = lattice.volume * np.mean(np.abs(np.fft.fftn(flat, axes=lattice.axes) / lattice.sites) ** 2, axis=0)
    span = math.log1p(horizon / t0)
    out = []
    for s in np.linspace(0.0, 1.0, nodes):
        t = t0 * math.expm1(s * span)
        a, v = (np.asarray(x) for x in scheme.kernel(t, lattice, half=False))
        out.append(float(np.sqrt(np.sum(a**2 * power + v) / lattice.volume)))
    return tuple(out)


def initial_flow(lattice: Lattice, scheme, fields, horizon: float, settings: FlowTrainSettings) -> ContinuousFlow:
    """The identity flow (zero weights) with the data-derived field scale sigma(s)."""
    t0 = 1.0 / lattice.cutoff**2
    scale = field_scale_nodes(scheme, lattice, fields, horizon, t0)
    flow = ContinuousFlow(lattice, horizon, settings.frequencies, settings.time_bumps, t0, scale)
    return cast(flow, settings.dtype)


def cast(flow, dtype):
    dtype = jnp.dtype(dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, flow)


# one jitted step per objective ---------------------------------------------------------------


@eqx.filter_jit
def _reverse_kl_step(flow, opt_state, key, scheme, theory, optimizer, batch, ode_steps, solver):
    (loss, (phi, log_q)), grads = eqx.filter_value_and_grad(
        lambda f: reverse_kl_loss(f, scheme, theory, key, batch, ode_steps, solver), has_aux=True
    )(flow)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(flow, eqx.is_inexact_array))
    log_w = -theory.action(phi) - log_q
    finite = jnp.isfinite(loss)
    flow = eqx.apply_updates(flow, jax.tree.map(lambda u: jnp.where(finite, u, 0.0), updates))
    return flow, opt_state, {"loss": loss, "reverse_kl": loss, "ess": effective_sample_size(log_w)}


@eqx.filter_jit
def _rg_step(flow, opt_state, chain, key, scheme, theory, optimizer, ode_steps, solver, rg_weight, hmc_steps,
             leapfrog, step_size):
    k_loss, k_imh, k_hmc = jax.random.split(key, 3)
    (loss, (phi, log_q, reverse, cross)), grads = eqx.filter_value_and_grad(
        lambda f: rg_loss(f, scheme, theory, k_loss, chain, ode_steps, rg_weight, solver), has_aux=True
    )(flow)
    # the chain moves with the parameters the proposals came from (exact IMH)
    _, log_q_chain = encode(flow, scheme, chain, 0.0, steps=ode_steps, solver=solver)
    chain, accepted, log_w = imh(theory, k_imh, chain, log_q_chain, phi, log_q)
    hmc_acc = jnp.zeros((), chain.dtype)
    for j in range(hmc_steps):
        chain, prob = hmc(theory, jax.random.fold_in(k_hmc, j), chain, step_size, leapfrog)
        hmc_acc = hmc_acc + jnp.mean(prob) / hmc_steps
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(flow, eqx.is_inexact_array))
    finite = jnp.isfinite(loss)
    flow = eqx.apply_updates(flow, jax.tree.map(lambda u: jnp.where(finite, u, 0.0), updates))
    metrics = {"loss": loss, "reverse_kl": reverse, "cross_entropy": cross, "ess": effective_sample_size(log_w),
               "imh_acceptance": jnp.mean(accepted.astype(chain.dtype)), "hmc_acceptance": hmc_acc}
    return flow, opt_state, chain, metrics


def train_flow(
    flow: ContinuousFlow,
    scheme,
    theory: Phi4,
    settings: FlowTrainSettings,
    *,
    key,
    uv_start=None,
    callback: Callable[[str, int, int], None] | None = None,
    on_log: Callable[[dict, ContinuousFlow], None] | None = None,
) -> ContinuousFlow:
    """Train `flow` with `settings.objective`; returns the trained flow.

    `uv_start` (rg only): configurations (any leading axes) from which the `batch` UV chains
    start, drawn at random; without it the chains start from the flow's own samples.
    """
    if theory.lattice != flow.lattice:
        raise RgdiffError(f"the flow is on lattice {flow.lattice.describe()}, the theory on {theory.lattice.describe()}")
    dtype = jnp.dtype(settings.dtype)
    flow = cast(flow, dtype)
    optimizer = settings.optimizer()
    opt_state = optimizer.init(eqx.filter(flow, eqx.is_inexact_array))
    key, k_chain = jax.random.split(key)
    chain = None
    if settings.objective == "rg":
        if uv_start is not None:
            flat = np.asarray(uv_start, dtype=np.float64).reshape(-1, *flow.lattice.shape)
            idx = np.asarray(jax.random.choice(k_chain, flat.shape[0], (settings.batch,), replace=flat.shape[0] < settings.batch))
            chain = jnp.asarray(flat[idx], dtype)
        else:
            chain, _ = sample(flow, scheme, k_chain, settings.batch, 0.0, steps=settings.ode_steps, dtype=dtype)
    step_size = hmc_step_size(theory)
    callback = callback or (lambda *a: None)
    start = time.time()
    callback("train", 0, settings.steps)
    for i in range(settings.steps):
        k = jax.random.fold_in(key, i)
        if settings.objective == "rg":
            flow, opt_state, chain, metrics = _rg_step(
                flow, opt_state, chain, k, scheme, theory, optimizer, settings.ode_steps, settings.solver,
                settings.rg_weight, settings.hmc_steps, settings.leapfrog, step_size,
            )
        else:
            flow, opt_state, metrics = _reverse_kl_step(
                flow, opt_state, k, scheme, theory, optimizer, settings.batch, settings.ode_steps, settings.solver
            )
        if on_log is not None and ((i + 1) % settings.log_every == 0 or i + 1 == settings.steps):
            record = {"step": i + 1, "seconds": time.time() - start, **{k: float(v) for k, v in metrics.items()}}
            on_log(record, flow)
        callback("train", i + 1, settings.steps)
    return flow


# the flow as a sampler at t = 0 ----------------------------------------------------------------


@eqx.filter_jit
def _proposals(flow, scheme, theory, key, n, steps, solver, dtype):
    phi, log_q = sample(flow, scheme, key, n, 0.0, steps=steps, solver=solver, dtype=dtype)
    return phi, -theory.action(phi) - log_q


def sampler_diagnostics(flow: ContinuousFlow, scheme, theory: Phi4, *, key, n: int = 1024, chains: int = 4,
                        chunk: int = 256, steps: int = 16, solver: str = "rk4") -> dict:
    """ESS / n from importance weights, and an independence-Metropolis chain fed by the flow.

    The IMH chains (`chains` of n / chains proposals each) accept phi' with min(1, w(phi') / w(phi)),
    w = exp(-S) / q. **Returns:** {"ess": ESS/n, "imh_acceptance", "tau_int_abs_M", "n", "chains",
    "ode_steps", "non_finite_weights"}; tau_int from the Gamma method on |M| of the IMH chains.
    """
    dtype = flow.weights.dtype
    fields, log_w = [], []
    for start in range(0, n, chunk):
        phi, lw = _proposals(flow, scheme, theory, jax.random.fold_in(key, start), chunk, steps, solver, dtype)
        fields.append(np.asarray(phi))
        log_w.append(np.asarray(lw, dtype=np.float64))
    fields = np.concatenate(fields)[:n]
    log_w = np.concatenate(log_w)[:n]
    finite = np.isfinite(log_w)
    lw = np.where(finite, log_w, -np.inf)
    w = np.exp(lw - np.max(lw))
    ess = float(np.sum(w) ** 2 / (n * np.sum(w**2)))
    # IMH chains over the stream of proposals (uniforms from the key, independent of the flow's)
    per = n // chains
    u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 2**31 - 1), (chains, per)), dtype=np.float64)
    m = np.abs(magnetization(fields[: chains * per], flow.lattice)).reshape(chains, per)
    lw_c = lw[: chains * per].reshape(chains, per)
    series = np.empty_like(m)
    accepted = 0
    for c in range(chains):
        cur_w, cur_m = lw_c[c, 0], m[c, 0]
        series[c, 0] = cur_m
        for j in range(1, per):
            if np.log(u[c, j]) < lw_c[c, j] - cur_w:
                cur_w, cur_m = lw_c[c, j], m[c, j]
                accepted += 1
            series[c, j] = cur_m
    acc = accepted / (chains * (per - 1))
    tau = tau_int(series) if per >= 5 and np.ptp(series) > 0 else None  # the Gamma method needs >= 5 per chain
    return {
        "ess": ess,
        "imh_acceptance": acc,
        "tau_int_abs_M": None if tau is None or not tau.defined else tau.tau_int,
        "n": int(n),
        "chains": int(chains),
        "ode_steps": int(steps),
        "non_finite_weights": int(np.sum(~finite)),
    }


# the model directory (`rgdiff train --model cnf`) ----------------------------------------------

SAMPLER = "SAMPLER.json"


def flow_model_config(flow, scheme, theory, settings: FlowTrainSettings, *, seed: int, data: dict | None) -> dict:
    """config.toml of a flow model directory (the `rgdiff.modeldir` contract, [training] with horizon and dtype)."""
    from rgdiff.io.atomic import package_versions
    from rgdiff.objectives.cnf import TIME_WEIGHTING

    objective = {
        "rg": "RG objective [5.22]: KL(p_0^theta || p_0) + int lambda(t) KL(p_t || p_t^theta) dt",
        "reverse-kl": "reverse KL [5.5]: KL(p_0^theta || p_0)",
    }[settings.objective]
    training = {
        **settings.describe(),
        "horizon": flow.horizon,
        "seed": seed,
        "objective_formula": objective,
        "prior": "the scheme's stationary law p_inf at t = T (exact samples and log-density)",
        "initialization": "zero weights: the identity flow (p_t^theta = p_T for all t)",
        "horizon_rule": "smallest T with a_T(p)^2 <P0(p)> <= 1e-4 v_T(p) for all p (prior p_T = p_inf)",
    }
    if settings.objective == "rg":
        training["time_weighting"] = TIME_WEIGHTING
        training["uv_chain"] = (f"{settings.batch} chains: IMH with the flow's samples as proposals + "
                                f"{settings.hmc_steps} HMC trajectories ({settings.leapfrog} leapfrog steps) per step")
    config = {"model": flow.describe(), "scheme": scheme.describe(), "theory": theory.describe(), "training": training,
              "versions": package_versions()}
    if data is not None:
        config["data"] = data
    return config


def write_flow_dir(work, flow, config: dict, records: list[dict], diagnostics: dict | None) -> None:
    from rgdiff.io.atomic import write_json
    from rgdiff.io.modeldir import CONFIG, METRICS, PARAMS, append_metrics, write_config, write_params

    write_config(work / CONFIG, config)
    (work / METRICS).touch()
    for r in records:
        append_metrics(work / METRICS, r)
    write_params(work / PARAMS, flow)
    if diagnostics is not None:
        write_json(work / SAMPLER, diagnostics)


def train_flow_job(*, data, scheme, settings: FlowTrainSettings, horizon: float | None, seed: int, out,
                   quiet: bool = False, diagnostics_samples: int = 1024) -> dict:
    """`rgdiff train --model cnf`: train on the theory of the UV ensemble `data`, write the model directory.

    The ensemble gives the theory, the horizon T (`rgdiff.training.default_horizon`), the field
    scale sigma(s), and (objective rg) the starting states of the UV chains. Also writes
    SAMPLER.json: the flow as a sampler at t = 0 (ESS, IMH acceptance, tau_int of |M|).
    """
    from pathlib import Path

    from rgdiff.io.atomic import atomic_folder
    from rgdiff.io.ensemble import load_ensemble
    from rgdiff.errors import InvalidSchemeError
    from rgdiff.io.modeldir import file_checksum
    from rgdiff.cli.progress import console, progress_bar
    from rgdiff.train.score import default_horizon

    ens = load_ensemble(data)
    lattice = ens.lattice
    if not scheme.has_prior:
        raise InvalidSchemeError(
            f"a flow starts from the scheme's stationary law p_T; {scheme.describe().get('name')} with "
            f"M = {scheme.mass:g} has none: use carosso with M > 0"
        )
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
    records: list[dict] = []
    with progress_bar(not quiet) as cb:
        flow = train_flow(flow, scheme, ens.theory, settings, key=k_train, uv_start=ens.fields, callback=cb,
                          on_log=lambda r, f: records.append(r))
    diag = sampler_diagnostics(flow, scheme, ens.theory, key=k_diag, n=diagnostics_samples, steps=settings.ode_steps)
    with atomic_folder(Path(out)) as work:
        write_flow_dir(work, flow, config, records, diag)
    if not quiet:
        console.print(f"flow model written to [bold]{out}[/]: {settings.objective} objective, {settings.steps} steps; "
                      f"at t = 0 ESS/n {diag['ess']:.3f} (n = {diag['n']}), IMH acceptance {diag['imh_acceptance']:.3f}")
    return diag
