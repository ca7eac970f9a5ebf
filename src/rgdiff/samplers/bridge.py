"""The adaptive bridge sampler: an exact MCMC for the UV theory driven by a renormalizing diffusion model.

The paper's reading (sections 1.2, 2.3, 5.1): a bridge / parallel-tempering sampler runs chains for
a family of distributions that interpolates between an easy one and the target p_0 ∝ exp(-S);
the RG flow p_t is the natural bridge, and a learned inverse flow carries samples of the easy end
(p_T) to the UV. Here the whole bridge is collapsed into one exact proposal
(`rgdiff.generate.proposal.AbstractProposal`): for a score model the probability-flow ODE [6.14]
maps phi_T ~ p_T to phi' ~ q = p_0^theta with its exact log-density log q(phi')
(`rgdiff.generate.diffusion.ode_proposal`); any other exact proposal (a CNF,
`rgdiff.generate.transport.FlowProposal`) runs through `sample_bridge`. Each chain alternates

1. an independence-Metropolis step (section 5.2: a state-independent proposal Q_theta(phi'),
   here q, with its exact density as in [5.3]; the kernel `rgdiff.samplers.imh`): accept phi'
   with probability min(1, exp(-S(phi') + S(phi) + log q(phi) - log q(phi'))). The log q of the
   current state is cached; after HMC moves it is recomputed with `proposal.log_prob` (for the
   ODE, the run 0 -> T);
2. after every B such steps (`imh_per_block`), k HMC transitions on the UV action (Blackjax;
   Fourier-accelerated by default, `rgdiff.samplers.hmc.UVMove`), which explore locally where
   the model is poor. Within a block the cached log q stays exact without any ODE solve (an
   accepted proposal brings its own log q), so a sweep costs one decode plus 1/B encode: with
   B large the cost per sweep approaches one model sample.

Both steps leave exp(-S) invariant, so the chain is exact whatever the model's quality; the model
only sets the acceptance rate and so the autocorrelation time. (Exact up to the ODE solver's
error in log q, below 1e-7 in the tests at 32 Tsit5 steps on a 4 x 4 lattice; a log q biased by
delta(phi) would make the IMH step target exp(-S - delta).) Section 5.4.1's training loop also
refines model samples by HMC on S; here HMC is interleaved with an exact Metropolis correction of
the model's proposals, so the chain, not only the training data, is exact.

Proposals do not depend on the chain state, so a whole chunk of them (chunk x chains) is
generated ahead by one batched ODE solve; the encodes after HMC moves are batched over chains.
PRNG keys: the proposals of sweep k use fold_in(proposal_key, 2k) and the Metropolis uniform of
chain c split(fold_in(proposal_key, 2k + 1), chains)[c]; HMC step j of sweep k of chain c uses
fold_in(chain_key[c], k * k_hmc + j). So the recorded chains do not depend on the chunk size
(except through the pure-IMH burn-in, which runs whole chunks).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSamplerSettingsError, InvalidSchemeError
from rgdiff.generate import diffusion as gen
from rgdiff.generate.proposal import AbstractProposal
from rgdiff.models.base import AbstractScoreModel, cast_model
from rgdiff.observables.estimators import magnetization
from rgdiff.observables.stats import tau_int as gamma_tau_int
from rgdiff.rg.base import AbstractLinearScheme
from rgdiff.samplers import imh
from rgdiff.samplers.hmc import ALGORITHMS as UV_ALGORITHMS
from rgdiff.samplers.hmc import DEFAULT_TRAJECTORY, UVMove
from rgdiff.theory.phi4 import Phi4

ALGORITHMS = UV_ALGORITHMS
MAX_VALUES = 2**31


def check_integers(settings, bounds) -> None:
    """Refuse a setting that is not an integer >= its bound, in one line naming it."""
    for name, lo in bounds:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise InvalidSamplerSettingsError(f"{name} must be an integer >= {lo}, got {value!r}")


def check_moves_and_ode(settings) -> None:
    """The checks shared by the samplers that combine HMC moves on S with probability-flow ODE
    solves (the bridge, `rgdiff.samplers.tempering`): `hmc_leapfrog`, `warmup`, `step_size`, the
    move (`settings.move`), `ode_steps`, `ode_solver` and `ode_grid`."""
    check_integers(settings, (("hmc_leapfrog", 1), ("warmup", 0), ("ode_steps", 1)))
    if settings.warmup == 1:
        raise InvalidSamplerSettingsError("warmup must be 0 or >= 2 (window adaptation needs steps)")
    step = settings.step_size
    if isinstance(step, bool) or not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise InvalidSamplerSettingsError(f"step_size must be a number > 0, got {step!r}")
    settings.move  # validates algorithm, trajectory_length and target_acceptance
    if settings.ode_solver not in gen.ODE_SOLVERS:
        raise InvalidSamplerSettingsError(
            f"unknown ODE solver {settings.ode_solver!r}; choose one of {', '.join(gen.ODE_SOLVERS)}"
        )
    if settings.ode_grid not in gen.GRIDS:
        raise InvalidSamplerSettingsError(f"unknown time grid {settings.ode_grid!r}; choose one of {', '.join(gen.GRIDS)}")


@dataclasses.dataclass(frozen=True)
class BridgeSettings:
    """Settings of a bridge run.

    - `chains`, `samples` (recorded sweeps per chain; one sweep = one IMH step + k HMC steps).
    - `hmc_steps_between`: k, HMC transitions after every block of independence-Metropolis steps
      (0: pure independence Metropolis, no encode needed).
    - `imh_per_block`: B, independence-Metropolis steps per block. Inside a block the cached log q
      of the state stays exact (an accepted proposal brings its own), so the one encode the HMC
      moves make necessary is paid once per B sweeps; every IMH step is a recorded sweep.
    - `algorithm`: how the HMC moves go (`rgdiff.samplers.hmc.UVMove`): "fa-hmc" (Fourier-
      accelerated HMC, the default), "fa-nuts", "hmc" (`hmc_leapfrog` leapfrog steps per
      trajectory) or "nuts"; `trajectory_length`: the mean trajectory of "fa-hmc".
    - `warmup`: window-adaptation steps per chain (step size, diagonal mass matrix), run from
      the model's own samples; 0 uses `step_size` and a unit mass matrix (in Fourier coordinates:
      the closed-form free propagator). With
      `hmc_steps_between` = 0 (nothing to tune) it is the number of discarded IMH sweeps
      instead (rounded up to whole chunks).
    - `target_acceptance`: of the adaptation.
    - `ode_steps`, `ode_solver`, `ode_grid`: the probability-flow ODE solves
      (`rgdiff.generate.diffusion.decode` / `encode`); `ode_dtype`: their precision ("float32"
      about halves their cost on a CPU; the chains and the Metropolis tests stay in float64, and
      an ODE error delta in log q makes the chain target exp(-S - delta), so choose the fewest
      steps and the precision whose log q error is well below the spread of the log weights:
      `rgdiff bench` measures it).
    - `chunk`: sweeps per jitted call (0: min(samples, 50)).
    """

    chains: int = 4
    samples: int = 1000
    hmc_steps_between: int = 1
    imh_per_block: int = 1
    hmc_leapfrog: int = 10
    algorithm: str = "fa-hmc"
    warmup: int = 200
    step_size: float = 0.1
    trajectory_length: float = DEFAULT_TRAJECTORY
    target_acceptance: float = 0.8
    ode_steps: int = 32
    ode_solver: str = "tsit5"
    ode_grid: str = "log"
    ode_dtype: str = "float64"
    chunk: int = 0

    def __post_init__(self):
        check_integers(self, (("chains", 1), ("samples", 2), ("hmc_steps_between", 0), ("imh_per_block", 1),
                              ("chunk", 0)))
        check_moves_and_ode(self)
        if self.ode_dtype not in ("float32", "float64"):
            raise InvalidSamplerSettingsError(f"ode_dtype must be float32 or float64, got {self.ode_dtype!r}")

    @property
    def move(self) -> UVMove:
        return UVMove(self.algorithm, self.hmc_leapfrog, self.trajectory_length, self.target_acceptance)

    def describe(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class BridgeResult:
    fields: np.ndarray  # (chains, samples, *lattice), float64
    diagnostics: dict


# pieces ---------------------------------------------------------------------------------------


@eqx.filter_jit
def _sample(proposal: AbstractProposal, key, n: int, dtype):
    phi, log_q = proposal.sample(key, n)
    return phi.astype(dtype), log_q.astype(dtype)


@eqx.filter_jit
def _log_prob(proposal: AbstractProposal, fields):
    return _log_prob_as(proposal, fields, fields.dtype)


def _log_prob_as(proposal: AbstractProposal, fields, dtype):
    """log q of chain states, computed in the proposal's precision and returned in the chain's."""
    return proposal.log_prob(fields.astype(proposal.dtype)).astype(dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _warmup(move: UVMove, theory: Phi4, keys, fields, steps: int):
    """Stan's window adaptation per chain (`UVMove.warmup`) from `fields`; cached per theory and move."""
    return move.warmup(theory, keys, move.coordinates(theory).from_field(fields), steps)


def _init_states(move: UVMove, theory: Phi4, fields):
    """HMC states (in the move's coordinates) at `fields`."""
    return move.init(theory, move.coordinates(theory).from_field(fields))


@eqx.filter_jit
def _run_chunk(proposal, theory, hmc, states, log_q, step_size, imm, proposal_key, chain_keys, start, chunk):
    """`chunk` sweeps for all chains: IMH with pre-generated proposals; after every B-th, k HMC steps and an encode.

    `hmc` = (`UVMove`, k, B): the only settings that shape the compiled code. The HMC states live in
    the move's coordinates (Fourier or site), the independence-Metropolis step in field space.
    """
    move, k_hmc, block = hmc
    coords = move.coordinates(theory)
    chains = log_q.shape[0]
    dtype = log_q.dtype

    # proposals for the whole chunk, one batched ODE solve (they do not depend on the chains)
    def proposals_of(k):
        return proposal.sample(jax.random.fold_in(proposal_key, 2 * k), chains)

    sweeps = start + jnp.arange(chunk)
    prop_phi, prop_log_q = jax.vmap(proposals_of)(sweeps)  # (chunk, chains, ...), (chunk, chains)
    prop_phi, prop_log_q = prop_phi.astype(dtype), prop_log_q.astype(dtype)  # the chains run in float64

    def hmc_chain(state, eps, inv_mass, chain_key, sweep):
        kernel = move.kernel(theory, eps, inv_mass)

        def body(st, j):
            st, info = kernel.step(jax.random.fold_in(chain_key, sweep * k_hmc + j), st)
            return st, info.acceptance_rate

        return jax.lax.scan(body, state, jnp.arange(k_hmc))

    logdensity = theory.logdensity_fn()
    imh_step = jax.vmap(imh.build_kernel(), in_axes=(0, 0, 0, 0, None))

    def sweep_fn(carry, xs):
        states, log_q = carry
        phi_p, log_q_p, sweep = xs
        # independence Metropolis (section 5.2): target exp(-S), proposal q
        keys = jax.random.split(jax.random.fold_in(proposal_key, 2 * sweep + 1), chains)
        # the chain's log density -S(phi) is the same number in either coordinates (constant Jacobian dropped)
        current = imh.IMHState(coords.to_field(states.position), states.logdensity - log_q)
        moved, info = imh_step(keys, current, phi_p, log_q_p, logdensity)
        log_q = jnp.where(info.is_accepted, log_q_p, log_q)
        states = _init_states(move, theory, moved.position)
        phi = moved.position

        def local_moves(states):
            states, acc = jax.vmap(hmc_chain, in_axes=(0, 0, 0, 0, None))(states, step_size, imm, chain_keys, sweep)
            phi = coords.to_field(states.position)
            # the cached log q must follow the HMC moves: the block's one encode
            return states, phi, _log_prob_as(proposal, phi, dtype), jnp.mean(acc, axis=1)

        def no_moves(states):
            return states, phi, log_q, jnp.full((chains,), jnp.nan, dtype)

        if k_hmc == 0:
            hmc_acc = jnp.zeros((chains,), dtype)
        elif block == 1:
            states, phi, log_q, hmc_acc = local_moves(states)
        else:  # the sweep index is not batched, so this is a real branch: skipped sweeps cost no encode
            states, phi, log_q, hmc_acc = jax.lax.cond((sweep + 1) % block == 0, local_moves, no_moves, states)
        out = (phi, info.is_accepted, info.acceptance_rate, hmc_acc, info.proposal_log_weight)
        return (states, log_q), out

    (states, log_q), out = jax.lax.scan(sweep_fn, (states, log_q), (prop_phi, prop_log_q, sweeps))
    return states, log_q, out


# the driver -----------------------------------------------------------------------------------


def run_bridge(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    theory: Phi4,
    settings: BridgeSettings,
    *,
    key: jax.Array,
    T: float,
    prior_spectrum=None,
    callback: Callable[[str, int, int], None] | None = None,
) -> BridgeResult:
    """Sample `theory` exactly with the bridge sampler driven by `model`.

    **Arguments:**

    - `model`: a score model with an exact divergence (an `AbstractExactScoreModel`, else
      `LikelihoodUnavailableError`), on the theory's lattice.
    - `scheme`: the linear RG scheme the model inverts; its noise must be p-independent (e.g.
      Carosso), else `InvalidSchemeError` (see `rgdiff.generate.diffusion`).
    - `theory`: the UV theory (`Phi4`), target exp(-S).
    - `settings`: a `BridgeSettings`.
    - `key`: a JAX PRNG key (keyword-only).
    - `T`: the flow time where proposals start, from the scheme's stationary law (or from
      `prior_spectrum`, a half-grid Gaussian spectrum, e.g. an exact finite-T marginal).
    - `callback(stage, done, total)`: progress, stage in {"warmup", "sampling"}.

    The proposal is `rgdiff.generate.diffusion.ode_proposal(model, scheme, ...)` with the
    settings' ODE options; `sample_bridge` takes any `AbstractProposal`.

    **Returns:** a `BridgeResult`: `fields` (chains, samples, *lattice) in float64, and
    diagnostics: IMH acceptance (fraction accepted, and mean acceptance probability), HMC
    acceptance, tau_int of |M| (Gamma method) and ESS = chains x samples / (2 tau_int), the
    spread of the proposals' log importance weights -S - log q, timings.
    """
    _check_settings(settings)
    proposal = gen.ode_proposal(
        cast_model(model, settings.ode_dtype), scheme, T=T, steps=settings.ode_steps, solver=settings.ode_solver,
        grid=settings.ode_grid, prior_spectrum=prior_spectrum, dtype=settings.ode_dtype,
    )  # refuses models without exact divergence and schemes with coloured noise
    result = sample_bridge(proposal, theory, settings, key=key, callback=callback)
    result.diagnostics.update({"T": float(T), "model": _describe(model), "scheme": scheme.describe()})
    return result


def given_start(start, chains: int, lattice, dtype):
    """`start` as the first configurations of `chains` chains, checked: shape (chains, *lattice)
    and finite, else `InvalidSamplerSettingsError`."""
    positions = jnp.asarray(start, dtype)
    if positions.shape != (chains, *lattice.shape) or not np.all(np.isfinite(np.asarray(positions))):
        raise InvalidSamplerSettingsError(f"start must hold {chains} finite configurations of shape {lattice.shape}, "
                                          f"got shape {positions.shape}")
    return positions


def finite_start(positions):
    """The model's samples as chain starts, a non-finite one (a poor model's ODE can blow up)
    replaced by phi = 0: where a chain starts does not affect exactness, only the burn-in.
    **Returns:** (positions, whether any was replaced)."""
    ok = np.all(np.isfinite(np.asarray(positions)).reshape(positions.shape[0], -1), axis=1)
    if ok.all():
        return positions, False
    mask = jnp.asarray(ok).reshape((-1,) + (1,) * (positions.ndim - 1))
    return jnp.where(mask, positions, 0.0), True


def _check_settings(settings) -> None:
    if not isinstance(settings, BridgeSettings):
        raise InvalidSamplerSettingsError(f"settings must be a BridgeSettings, got {type(settings).__name__}")


def _check_run(theory, settings, lattice) -> None:
    if not isinstance(theory, Phi4):
        raise InvalidSamplerSettingsError(f"the bridge samples a Phi4 theory, got {type(theory).__name__}")
    _check_settings(settings)
    if lattice != theory.lattice:
        raise InvalidSchemeError(
            f"the model's lattice {lattice.describe()} is not the theory's {theory.lattice.describe()}"
        )
    total_values = settings.chains * settings.samples * lattice.sites
    if total_values > MAX_VALUES:
        raise InvalidSamplerSettingsError(
            f"{settings.chains} chains x {settings.samples} samples x {lattice.sites} sites is more than "
            f"{MAX_VALUES:.3g} numbers; sample less"
        )


def sample_bridge(
    proposal: AbstractProposal,
    theory: Phi4,
    settings: BridgeSettings,
    *,
    key: jax.Array,
    callback: Callable[[str, int, int], None] | None = None,
    start=None,
) -> BridgeResult:
    """The bridge sampler of `theory` with any exact `proposal` on its lattice (`run_bridge` for the
    arguments and the result; the ODE settings in `settings` are the proposal's business).

    `start`: the chains' first configurations `(chains, *lattice)`, e.g. the last states of an
    equilibrated local run; default: the proposal's own samples. Where the chains start does not
    affect exactness, only the burn-in: from a poor proposal's samples, whose |M| is too small at
    a broken point, a warm-up of a few local sweeps leaves <|M|> biased (measured: 0.617(10)
    against 0.663(2) at `benchmark_broken_N20` after 50 sweeps)."""
    lattice = proposal.lattice
    _check_run(theory, settings, lattice)
    dtype = jnp.zeros(()).dtype  # float64 under x64
    callback = callback or (lambda *a: None)
    k_init, k_warm, k_prop, k_chain, k_burn = jax.random.split(key, 5)
    chunk = settings.chunk or min(settings.samples, 50)  # a fixed size: one compilation per setup
    move = settings.move
    hmc = (move, settings.hmc_steps_between, settings.imh_per_block)
    chain_keys = jax.random.split(k_chain, settings.chains)

    # start from the model's own samples, then tune HMC from there
    t0 = time.perf_counter()
    callback("warmup", 0, settings.warmup)
    if start is None:
        positions, log_q = _sample(proposal, k_init, settings.chains, dtype)
        positions, replaced = finite_start(positions)
        if replaced:
            log_q = _log_prob(proposal, positions)
    else:
        positions = given_start(start, settings.chains, lattice, dtype)
        log_q = _log_prob(proposal, positions)
    if settings.warmup > 0 and settings.hmc_steps_between > 0:
        states, params = _warmup(move, theory, jax.random.split(k_warm, settings.chains), positions, settings.warmup)
        step_size, imm = params["step_size"], params["inverse_mass_matrix"]
        log_q = _log_prob(proposal, move.coordinates(theory).to_field(states.position))
    else:
        states = _init_states(move, theory, positions)
        params = move.default_params(theory, settings.chains, dtype, settings.step_size)
        step_size, imm = params["step_size"], params["inverse_mass_matrix"]
        # pure independence Metropolis: discarded sweeps (whole chunks) let the chains forget
        # their start, a draw from q rather than from exp(-S)
        for burned in range(0, settings.warmup, chunk):
            states, log_q, _ = _run_chunk(
                proposal, theory, hmc, states, log_q, step_size, imm, k_burn, chain_keys, jnp.asarray(burned), chunk
            )
    jax.block_until_ready(log_q)
    callback("warmup", settings.warmup, settings.warmup)
    t_warm = time.perf_counter() - t0

    fields = np.empty((settings.chains, settings.samples, *lattice.shape), dtype=np.float64)
    accepted = np.zeros((settings.chains, settings.samples), dtype=bool)
    probs = np.zeros((settings.chains, settings.samples))
    hmc_acc = np.zeros((settings.chains, settings.samples))
    log_w = np.zeros((settings.chains, settings.samples))
    t1 = time.perf_counter()
    t_compile = None
    done = 0
    callback("sampling", 0, settings.samples)
    while done < settings.samples:
        states, log_q, out = _run_chunk(
            proposal, theory, hmc, states, log_q, step_size, imm, k_prop, chain_keys, jnp.asarray(done), chunk
        )
        pos, acc, prob, h_acc, lw = (np.asarray(x) for x in out)  # (chunk, chains, ...)
        if t_compile is None:
            t_compile = time.perf_counter() - t1
        take = min(chunk, settings.samples - done)
        sl = slice(done, done + take)
        fields[:, sl] = np.swapaxes(pos[:take], 0, 1)
        accepted[:, sl] = acc[:take].T
        probs[:, sl] = prob[:take].T
        hmc_acc[:, sl] = h_acc[:take].T
        log_w[:, sl] = lw[:take].T
        done += take
        callback("sampling", done, settings.samples)
    t_sample = time.perf_counter() - t1
    if not np.all(np.isfinite(fields)):
        from rgdiff.io.checkpoint import NumericalFaultError

        raise NumericalFaultError("non-finite field values in the chains; the sampler diverged")

    abs_m = np.abs(magnetization(fields, lattice))
    try:
        tau = gamma_tau_int(abs_m).tau_int
    except ValueError:  # too short for the Gamma method (pyerrors needs >= 5 samples per chain)
        tau = None
    n_total = settings.chains * settings.samples
    finite_w = log_w[np.isfinite(log_w)]
    diagnostics = {
        "imh_acceptance": float(accepted.mean()),
        "imh_acceptance_per_chain": accepted.mean(axis=1).tolist(),
        "imh_mean_acceptance_probability": float(probs.mean()),
        "hmc_acceptance": float(np.nanmean(hmc_acc)) if settings.hmc_steps_between > 0 else None,
        "tau_int_abs_M": tau,
        "ess_abs_M": n_total / (2.0 * tau) if tau else None,
        "log_weight_std": float(finite_w.std()) if finite_w.size else None,
        "step_size": np.asarray(step_size).tolist(),
        "settings": settings.describe(),
        "warmup_seconds": t_warm,
        "sampling_seconds": t_sample,
        "first_chunk_seconds_incl_compile": t_compile,
    }
    return BridgeResult(fields, diagnostics)


def _describe(model) -> dict | str:
    try:
        return model.describe()
    except NotImplementedError:
        return type(model).__name__
