"""Exact sampling of the UV theory with Blackjax: NUTS (the paper's choice) or plain HMC.

Many chains run at once (`jax.vmap` over a leading chain axis). Each chain is tuned by Stan's
window adaptation (step size and diagonal inverse mass matrix), then sampled in fixed-size
chunks so that a progress display can be updated and, later, a run can be checkpointed between
chunks. The PRNG key of step k of chain c is fold_in(chain_key[c], k), so the samples do not
depend on the chunk size.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn

from rgdiff import parallel
from rgdiff.errors import InvalidSamplerSettingsError
from rgdiff.theory.phi4 import Phi4

ALGORITHMS = ("nuts", "hmc")
MAX_VALUES = 2**31  # refuse ensembles of more than this many numbers before allocating


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Settings of a Markov-chain run.

    - `algorithm`: "nuts" (No-U-Turn, the paper's choice) or "hmc" (fixed trajectory length).
    - `chains`, `samples` (kept per chain), `warmup` (window-adaptation steps per chain).
    - `thin`: keep every `thin`-th transition.
    - `hmc_steps`: leapfrog steps per HMC trajectory.
    - `target_acceptance`: the adaptation's target acceptance rate.
    """

    algorithm: str = "nuts"
    chains: int = 4
    samples: int = 1000
    warmup: int = 500
    thin: int = 1
    hmc_steps: int = 10
    target_acceptance: float = 0.8

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise InvalidSamplerSettingsError(
                f"unknown sampler {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        for name, lo in (("chains", 1), ("samples", 2), ("warmup", 0), ("thin", 1), ("hmc_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise InvalidSamplerSettingsError(f"{name} must be an integer >= {lo}, got {value!r}")
        if self.warmup == 1:
            raise InvalidSamplerSettingsError("warmup must be 0 or >= 2 (window adaptation needs steps)")
        if not 0.0 < self.target_acceptance < 1.0:
            raise InvalidSamplerSettingsError(
                f"target_acceptance must lie in (0, 1), got {self.target_acceptance}"
            )

    def describe(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SampleResult:
    fields: np.ndarray  # (chains, samples, *lattice)
    diagnostics: dict


def hmc_step_size(theory: Phi4) -> float:
    """A stable leapfrog step for identity mass: 1/2 over the largest free frequency sqrt(eps^d (Lambda_0^2 + |m2|))."""
    lat = theory.lattice
    return 0.5 / math.sqrt(lat.spacing**lat.dim * (lat.cutoff**2 + abs(theory.m2)))


def hmc_refresh(theory: Phi4, key: jax.Array, phi: jax.Array, *, step_size, leapfrog: int):
    """One HMC trajectory (identity mass, `leapfrog` steps of `step_size`) per configuration of
    `phi` (batch, *lattice) on exp(-S): Blackjax's kernel vmapped over the batch, one key each.

    The refresh of a batch of UV chains that a learned proposal moves between (the training
    loop after [5.22]); exact for exp(-S) whatever the step.

    **Returns:** `(phi_new, acceptance probability per configuration)`.
    """
    logdensity = theory.logdensity_fn()
    kernel = blackjax.hmc.build_kernel()
    inverse_mass = jnp.ones((theory.lattice.sites,), phi.dtype)

    def one(k, x):
        state, info = kernel(k, blackjax.hmc.init(x, logdensity), logdensity, step_size, inverse_mass, leapfrog)
        return state.position, info.acceptance_rate

    return jax.vmap(one)(jax.random.split(key, phi.shape[0]), phi)


def _kernel(theory: Phi4, settings: SamplerSettings, params: dict):
    logdensity = theory.logdensity_fn()
    if settings.algorithm == "nuts":
        return blackjax.nuts(logdensity, params["step_size"], params["inverse_mass_matrix"])
    return blackjax.hmc(
        logdensity, params["step_size"], params["inverse_mass_matrix"], settings.hmc_steps
    )


def _warmup(theory: Phi4, settings: SamplerSettings, keys, positions):
    logdensity = theory.logdensity_fn()
    algo = blackjax.nuts if settings.algorithm == "nuts" else blackjax.hmc
    extra = {} if settings.algorithm == "nuts" else {"num_integration_steps": settings.hmc_steps}
    adaptation = blackjax.window_adaptation(
        algo,
        logdensity,
        target_acceptance_rate=settings.target_acceptance,
        adaptation_info_fn=get_filter_adapt_info_fn(),  # keep no per-step warm-up history
        **extra,
    )

    def one_chain(key, position):
        with jax.numpy_dtype_promotion("standard"):  # blackjax's window adaptation mixes bool and int
            (state, params), _ = adaptation.run(key, position, num_steps=settings.warmup)
        return state, {"step_size": params["step_size"], "inverse_mass_matrix": params["inverse_mass_matrix"]}

    return jax.jit(jax.vmap(one_chain))(keys, positions)


def _default_params(theory: Phi4, n_chains: int, dtype):
    size = theory.lattice.sites
    return {
        "step_size": jnp.full((n_chains,), 0.1, dtype),
        "inverse_mass_matrix": jnp.ones((n_chains, size), dtype),
    }


def sample(
    theory: Phi4,
    settings: SamplerSettings,
    *,
    key: jax.Array,
    callback: Callable[[str, int, int], None] | None = None,
    chunk: int = 0,
    checkpoint=None,
    mesh=None,
) -> SampleResult:
    """Sample `settings.chains` Markov chains of `theory`.

    **Arguments:**

    - `theory`: the UV theory.
    - `settings`: a `SamplerSettings`.
    - `key`: a JAX PRNG key (keyword-only: seeds are explicit everywhere).
    - `callback(stage, done, total)`: progress, stage in {"warmup", "sampling"}.
    - `chunk`: transitions per jitted call (default: about 1/50 of the run).
    - `mesh`: a 1-D device mesh (`rgdiff.parallel.batch_mesh`) to split the chains over (data
      parallel, same results); default: as many devices as divide `settings.chains`.
    - `checkpoint`: a `rgdiff.checkpoint.Checkpointer`; the chain states, adapted parameters and
      samples so far are saved every `checkpoint.every` chunks, and a resumed run continues after
      the last saved chunk (bitwise the uninterrupted run on the CPU: step k of chain c always
      uses fold_in(chain_key[c], k)).

    **Returns:** a `SampleResult` with `fields` of shape (chains, samples, *lattice) in the
    default float dtype (float64 when `jax_enable_x64` is on) and a diagnostics dict.
    """
    lat = theory.lattice
    total_values = settings.chains * settings.samples * lat.sites
    if total_values > MAX_VALUES:
        raise InvalidSamplerSettingsError(
            f"{settings.chains} chains x {settings.samples} samples x {lat.sites} sites is "
            f"{total_values:.3g} numbers, more than the {MAX_VALUES:.3g} allowed; sample less or thin"
        )
    dtype = jnp.zeros(()).dtype  # float64 under x64
    callback = callback or (lambda *a: None)
    k_init, k_warm, k_sample = jax.random.split(key, 3)
    positions = 0.1 * jax.random.normal(k_init, (settings.chains, *lat.shape), dtype)
    mesh = mesh if mesh is not None else parallel.mesh_for_batch(settings.chains)
    positions = parallel.shard_batch(positions, mesh)  # chains split over the devices

    t0 = time.perf_counter()
    callback("warmup", 0, settings.warmup)
    resumed = None
    if checkpoint is not None and checkpoint.resumed is not None:
        logdensity = theory.logdensity_fn()
        skeleton = jax.vmap(lambda x: blackjax.nuts.init(x, logdensity))(positions)
        resumed = checkpoint.resumed_sampling(skeleton, _default_params(theory, settings.chains, dtype))
    if resumed is not None:
        states, params = resumed["states"], resumed["params"]
    elif settings.warmup > 0:
        warm_keys = parallel.shard_batch(jax.random.split(k_warm, settings.chains), mesh)
        states, params = _warmup(theory, settings, warm_keys, positions)
        jax.block_until_ready(states)
    else:
        params = _default_params(theory, settings.chains, dtype)
        logdensity = theory.logdensity_fn()
        states = jax.vmap(lambda x: blackjax.nuts.init(x, logdensity))(positions)
    callback("warmup", settings.warmup, settings.warmup)
    t_warm = time.perf_counter() - t0

    n_steps = settings.samples * settings.thin
    chunk = chunk or max(settings.thin, -(-n_steps // 50))
    chunk = -(-chunk // settings.thin) * settings.thin  # whole thinning periods per chunk
    chain_keys = jax.random.split(k_sample, settings.chains)
    states, params, chain_keys = parallel.shard_batch((states, params, chain_keys), mesh)

    def one_step(state, params, chain_key, step):
        kernel = _kernel(theory, settings, params)
        state, info = kernel.step(jax.random.fold_in(chain_key, step), state)
        n_int = info.num_integration_steps if settings.algorithm == "nuts" else settings.hmc_steps
        return state, (state.position, info.acceptance_rate, info.is_divergent, n_int)

    def run_chunk(state, params, chain_key, start):
        def body(st, k):
            return one_step(st, params, chain_key, start + k)

        state, (pos, acc, div, n_int) = jax.lax.scan(body, state, jnp.arange(chunk))
        return state, pos[settings.thin - 1 :: settings.thin], acc, div, n_int

    run = jax.jit(jax.vmap(run_chunk, in_axes=(0, 0, 0, None)))

    fields = np.empty((settings.chains, settings.samples, *lat.shape), dtype=np.dtype(dtype))
    acc_sum = np.zeros(settings.chains)
    div_sum = np.zeros(settings.chains, dtype=np.int64)
    nint_sum = np.zeros(settings.chains)
    t1 = time.perf_counter()
    t_compile = None
    done = 0
    if resumed is not None:
        done = resumed["done"]
        fields[:, :done] = resumed["fields"][:, :done]
        acc_sum, div_sum, nint_sum = resumed["acc_sum"], resumed["div_sum"], resumed["nint_sum"]
    callback("sampling", done, settings.samples)
    while done < settings.samples:
        start = done * settings.thin
        states, pos, acc, div, n_int = run(states, params, chain_keys, start)
        pos = np.asarray(pos)
        if t_compile is None:
            t_compile = time.perf_counter() - t1
        take = min(pos.shape[1], settings.samples - done)
        steps_taken = take * settings.thin
        fields[:, done : done + take] = pos[:, :take]
        acc_sum += np.asarray(acc)[:, :steps_taken].sum(axis=1)
        div_sum += np.asarray(div)[:, :steps_taken].sum(axis=1)
        nint_sum += np.asarray(n_int)[:, :steps_taken].sum(axis=1)
        if not np.all(np.isfinite(pos[:, :take])):
            bad = np.flatnonzero(~np.all(np.isfinite(pos[:, :take].reshape(settings.chains, -1)), axis=1))
            from rgdiff.io.checkpoint import NumericalFaultError

            kept = f"; {checkpoint.last_good()}" if checkpoint is not None else ""
            raise NumericalFaultError(
                f"non-finite field values in chain(s) {bad.tolist()} between transitions {start} and "
                f"{start + steps_taken}; the sampler diverged{kept}"
            )
        done += take
        callback("sampling", done, settings.samples)
        if checkpoint is not None:
            checkpoint.after_sampling_chunk(
                done, states, params, fields, acc_sum, div_sum, nint_sum, final=done >= settings.samples
            )
    t_sample = time.perf_counter() - t1
    if not np.all(np.isfinite(fields)):
        raise FloatingPointError("non-finite field values in the chains; the sampler diverged")

    diagnostics = {
        "step_size": np.asarray(params["step_size"]).tolist(),
        "inverse_mass_matrix_mean": np.asarray(params["inverse_mass_matrix"]).mean(axis=-1).tolist(),
        "acceptance_rate": (acc_sum / n_steps).tolist(),
        "divergences": div_sum.tolist(),
        "mean_integration_steps": (nint_sum / n_steps).tolist(),
        "warmup_seconds": t_warm,
        "sampling_seconds": t_sample,
        "first_chunk_seconds_incl_compile": t_compile,
    }
    return SampleResult(fields, diagnostics)
