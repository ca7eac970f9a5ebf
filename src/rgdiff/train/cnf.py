"""Training RG-time normalizing flows: the RG objective [5.22] or reverse KL [5.5], and the flow as a sampler.

Defaults are the paper's (section 7.1): batch 64, Adam(b1 = 0.8, b2 = 0.9), learning rate 5e-3
with exponential decay (8000 transition steps, rate 0.1), 1000 gradient steps. Both objectives
use the same flow (`ContinuousFlow`), the same prior (the scheme's stationary law) and the same
number of gradient steps.

One RG-objective step (the loop after [5.22], see `rgdiff.objectives.cnf`): the gradient of the
loss at the chain's current UV states, then the chain moves (IMH with the flow's fresh samples as
proposals, log q of both at the same parameters, then `hmc_steps` HMC trajectories), then Adam.
The loop is `rgdiff.train.loop.fit` (checkpoints, exact resume, the non-finite rule); the UV
chains are its carried state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgdiff.errors import RgdiffError
from rgdiff.generate.transport import SOLVERS, encode, sample
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.objectives.cnf import OBJECTIVES, reverse_kl_loss, rg_loss
from rgdiff.observables.estimators import magnetization
from rgdiff.observables.stats import tau_int
from rgdiff.rg import LogTime, flowed_site_variance
from rgdiff.samplers import imh
from rgdiff.samplers.hmc import hmc_refresh
from rgdiff.theory.phi4 import Phi4
from rgdiff.models.base import cast_model
from rgdiff.train.loop import fit


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
    """sigma(s) at `nodes` log-time nodes (`LogTime(horizon, t0)`): the exact rms of p_t,
    sigma^2 = L^-d sum_p [a_t^2 G_0(p) + v_t(p)] (`rgdiff.rg.flowed_site_variance`).

    G_0 is the data's power spectrum; the scale only normalizes the features (not learned).
    """
    spectrum = lattice.power_spectrum(fields)
    times = LogTime(horizon, t0).grid(0.0, horizon, nodes - 1)
    return tuple(math.sqrt(flowed_site_variance(scheme, lattice, spectrum, t)) for t in times)


def initial_flow(lattice: Lattice, scheme, fields, horizon: float, settings: FlowTrainSettings) -> ContinuousFlow:
    """The identity flow (zero weights) with the data-derived field scale sigma(s)."""
    t0 = 1.0 / lattice.cutoff**2
    scale = field_scale_nodes(scheme, lattice, fields, horizon, t0)
    flow = ContinuousFlow(lattice, horizon, settings.frequencies, settings.time_bumps, t0, scale)
    return cast_model(flow, settings.dtype)


# the objectives as `fit` losses ----------------------------------------------------------------


def _reverse_kl_objective(scheme, theory: Phi4, settings: FlowTrainSettings):
    def loss_fn(flow, state, data, key):
        loss, (phi, log_q) = reverse_kl_loss(flow, scheme, theory, key, settings.batch, settings.ode_steps,
                                             settings.solver)
        log_w = jax.lax.stop_gradient(-theory.action(phi) - log_q)
        return loss, (state, {"reverse_kl": loss, "ess": imh.importance_ess(log_w)})

    return loss_fn


def _rg_objective(scheme, theory: Phi4, settings: FlowTrainSettings):
    """The RG loss [5.22] at the UV chains (the carried state), which then move: IMH with the
    flow's samples as proposals, then `hmc_steps` HMC trajectories."""
    logdensity = theory.logdensity_fn()
    kernel = jax.vmap(imh.build_kernel(), in_axes=(0, 0, 0, 0, None))

    def loss_fn(flow, chain, data, key):
        k_loss, k_imh, k_hmc = jax.random.split(key, 3)
        loss, aux = rg_loss(flow, scheme, theory, k_loss, chain, settings.ode_steps, settings.rg_weight, settings.solver)
        phi, log_q, reverse, cross = jax.lax.stop_gradient(aux)
        # the chain moves with the parameters the proposals came from (exact IMH)
        params, static = eqx.partition(flow, eqx.is_inexact_array)
        frozen = eqx.combine(jax.lax.stop_gradient(params), static)
        _, log_q_chain = encode(frozen, scheme, chain, 0.0, steps=settings.ode_steps, solver=settings.solver)
        state = jax.vmap(imh.init, in_axes=(0, 0, None))(chain, log_q_chain, logdensity)
        state, info = kernel(jax.random.split(k_imh, chain.shape[0]), state, phi, log_q, logdensity)
        chain = state.position
        hmc_acc = jnp.zeros((), chain.dtype)
        for j in range(settings.hmc_steps):
            chain, prob = hmc_refresh(theory, jax.random.fold_in(k_hmc, j), chain, leapfrog=settings.leapfrog)
            hmc_acc = hmc_acc + jnp.mean(prob) / settings.hmc_steps
        metrics = {"reverse_kl": reverse, "cross_entropy": cross, "ess": imh.importance_ess(info.proposal_log_weight),
                   "imh_acceptance": jnp.mean(info.is_accepted.astype(chain.dtype)), "hmc_acceptance": hmc_acc}
        return loss, (chain, metrics)

    return loss_fn


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
    checkpoint=None,
) -> ContinuousFlow:
    """Train `flow` with `settings.objective`; returns the trained flow.

    - `uv_start` (rg only): configurations (any leading axes) from which the `batch` UV chains
      start, drawn at random; without it the chains start from the flow's own samples.
    - `on_log(record, flow)`: every `settings.log_every` steps, {"step", "loss" (mean since the
      last record), the objective's metrics at that step, "seconds"}.
    - `checkpoint`: a `rgdiff.io.checkpoint.Checkpointer`: the run starts from its saved (flow,
      optimizer state, UV chains) when resuming and saves them every `checkpoint.every` steps;
      the key of step i is fold_in(key, i), so a resumed run is bitwise the uninterrupted one (CPU).
    """
    if theory.lattice != flow.lattice:
        raise RgdiffError(f"the flow is on lattice {flow.lattice.describe()}, the theory on {theory.lattice.describe()}")
    dtype = jnp.dtype(settings.dtype)
    flow = cast_model(flow, dtype)
    key, k_chain = jax.random.split(key)
    chain = None
    if settings.objective == "rg":
        if uv_start is not None:
            flat = np.asarray(uv_start, dtype=np.float64).reshape(-1, *flow.lattice.shape)
            idx = np.asarray(jax.random.choice(k_chain, flat.shape[0], (settings.batch,), replace=flat.shape[0] < settings.batch))
            chain = jnp.asarray(flat[idx], dtype)
        else:
            chain, _ = sample(flow, scheme, k_chain, settings.batch, 0.0, steps=settings.ode_steps, dtype=dtype)
        loss_fn = _rg_objective(scheme, theory, settings)
    else:
        loss_fn = _reverse_kl_objective(scheme, theory, settings)
    if callback is not None:
        callback("train", 0, settings.steps)
    flow, _ = fit(flow, settings.optimizer(), loss_fn, key=key, steps=settings.steps, state=chain,
                  log_every=settings.log_every, on_log=on_log, callback=callback, checkpoint=checkpoint)
    return flow


# the flow as a sampler at t = 0 ----------------------------------------------------------------


@eqx.filter_jit
def _proposals(flow, scheme, key, n, steps, solver, dtype):
    return sample(flow, scheme, key, n, 0.0, steps=steps, solver=solver, dtype=dtype)


@eqx.filter_jit
def _imh_chains(theory: Phi4, key, proposals, log_q):
    """IMH chains (`rgdiff.samplers.imh.chains_over`) over the given proposals (chains, per, *lattice)."""
    return imh.chains_over(theory.logdensity_fn(), jax.random.split(key, proposals.shape[0]), proposals, log_q)


def sampler_diagnostics(flow: ContinuousFlow, scheme, theory: Phi4, *, key, n: int = 1024, chains: int = 4,
                        chunk: int = 256, steps: int = 16, solver: str = "rk4") -> dict:
    """ESS / n from importance weights, and an independence-Metropolis chain fed by the flow.

    The IMH chains (`chains` of n / chains proposals each) accept phi' with min(1, w(phi') / w(phi)),
    w = exp(-S) / q. **Returns:** {"ess": ESS/n, "imh_acceptance", "tau_int_abs_M", "n", "chains",
    "ode_steps", "non_finite_weights"}; tau_int from the Gamma method on |M| of the IMH chains.
    """
    dtype = flow.weights.dtype
    fields, log_q = [], []
    for start in range(0, n, chunk):
        phi, lq = _proposals(flow, scheme, jax.random.fold_in(key, start), chunk, steps, solver, dtype)
        fields.append(np.asarray(phi))
        log_q.append(np.asarray(lq))
    fields = np.concatenate(fields)[:n]
    log_q = np.concatenate(log_q)[:n]
    log_w = np.asarray(-theory.action(jnp.asarray(fields)), np.float64) - log_q
    finite = np.isfinite(log_w)
    ess = float(imh.importance_ess(jnp.asarray(log_w)))
    # IMH chains over the stream of proposals; a non-finite weight counts as w = 0 (log q = +inf)
    per = n // chains
    lq = np.where(finite, log_q, np.inf)[: chains * per].reshape(chains, per)
    positions, accepted = _imh_chains(theory, jax.random.fold_in(key, 2**31 - 1),
                                      jnp.asarray(fields[: chains * per]).reshape(chains, per, *flow.lattice.shape),
                                      jnp.asarray(lq, dtype))
    series = np.abs(magnetization(np.asarray(positions), flow.lattice))
    acc = float(np.mean(np.asarray(accepted)))
    tau = tau_int(series) if per >= 5 and np.ptp(series) > 0 else None  # the Gamma method needs >= 5 per chain
    from rgdiff.observables.sanity import check_importance_ess, check_rate

    diag = {
        "ess": ess,
        "imh_acceptance": acc,
        "tau_int_abs_M": None if tau is None or not tau.defined else tau.tau_int,
        "n": int(n),
        "chains": int(chains),
        "ode_steps": int(steps),
        "non_finite_weights": int(np.sum(~finite)),
    }
    check_importance_ess(diag, "ess", n=n, where="the flow as a sampler at t = 0")  # ESS/n in (0, 1]
    check_rate(diag, "imh_acceptance", where="the flow as a sampler at t = 0")
    return diag


# the model directory (`rgdiff train --model cnf`) ----------------------------------------------

SAMPLER = "SAMPLER.json"


def flow_model_config(flow, scheme, theory, settings: FlowTrainSettings, *, seed: int, data: dict | None) -> dict:
    """config.toml of a flow model directory (the `rgdiff.io.modeldir` contract, [training] with horizon and dtype)."""
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
    from rgdiff.io.modeldir import METRICS, append_metrics, write_model

    (work / METRICS).touch()
    for r in records:
        append_metrics(work / METRICS, r)
    write_model(work, config, flow)  # params.eqx, then config.toml with its checksum
    if diagnostics is not None:
        write_json(work / SAMPLER, diagnostics)
