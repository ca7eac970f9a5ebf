"""Exact sampling of the UV theory with Blackjax: Fourier-accelerated HMC (default) or NUTS, and
the paper's plain NUTS and HMC.

Many chains run at once: in lockstep (`jax.vmap` over a leading chain axis), or one after
another inside one jitted call (`jax.lax.map`; NUTS and FA-NUTS on a CPU from
`SEQUENTIAL_NUTS_SITES` sites, where chains in lockstep would all build trees as deep as the
deepest one's). Each chain is tuned by Stan's window adaptation (step size and diagonal inverse
mass matrix; in the Fourier coordinates of `rgdiff.samplers.fourier` one variance per momentum
orbit), then sampled in fixed-size chunks so that a progress display can be updated and a run
checkpointed between chunks. The PRNG key of step k of chain c is fold_in(chain_key[c], k), so
the samples do not depend on the chunk size. How a chain moves is `rgdiff.samplers.hmc.UVMove`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff import parallel
from rgdiff.errors import InvalidSamplerSettingsError
from rgdiff.precision import warn_unless_float64
from rgdiff.lattice.symmetry import lattice_orbits
from rgdiff.samplers.hmc import ALGORITHMS, DEFAULT_TRAJECTORY, NO_U_TURN, UVMove
from rgdiff.theory.phi4 import Phi4

MAX_VALUES = 2**31  # refuse ensembles of more than this many numbers before allocating
SEQUENTIAL_NUTS_SITES = 256  # NUTS chains one after another from here on a CPU (`SamplerSettings.in_lockstep`)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Settings of a Markov-chain run.

    - `algorithm`: "fa-hmc" (Fourier-accelerated HMC, the default), "fa-nuts" (NUTS in the same
      coordinates), "nuts" (No-U-Turn in site coordinates, the paper's choice) or "hmc".
    - `chains`, `samples` (kept per chain), `warmup` (window-adaptation steps per chain).
    - `thin`: keep every `thin`-th transition.
    - `hmc_steps`: leapfrog steps per trajectory of "hmc".
    - `trajectory_length`: mean trajectory length of "fa-hmc" (whitened units; pi/2 = a quarter
      period of every mode).
    - `target_acceptance`: the adaptation's target acceptance rate.
    - `lockstep`: sample the chains in lockstep (`jax.vmap`) or one after another (`jax.lax.map`);
      None (default): `in_lockstep` decides. The draws are the same either way (up to rounding);
      only the cost differs.
    """

    algorithm: str = "fa-hmc"
    chains: int = 4
    samples: int = 1000
    warmup: int = 500
    thin: int = 1
    hmc_steps: int = 10
    target_acceptance: float = 0.8
    trajectory_length: float = DEFAULT_TRAJECTORY
    lockstep: bool | None = None

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise InvalidSamplerSettingsError(
                f"unknown sampler {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        for name, lo in (("chains", 1), ("samples", 2), ("warmup", 0), ("thin", 1), ("hmc_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise InvalidSamplerSettingsError(f"{name} must be an integer >= {lo}, got {value!r}")
        if self.lockstep is not None and not isinstance(self.lockstep, bool):
            raise InvalidSamplerSettingsError(f"lockstep must be True, False or None, got {self.lockstep!r}")
        if self.warmup == 1:
            raise InvalidSamplerSettingsError("warmup must be 0 or >= 2 (window adaptation needs steps)")
        self.move  # validates trajectory_length and target_acceptance

    def in_lockstep(self, sites: int, platform: str) -> bool:
        """Whether the chains run in lockstep on a lattice of `sites` sites on `platform` ("cpu",
        "gpu", ...): `lockstep` if set; else all but NUTS and FA-NUTS on a CPU from
        `SEQUENTIAL_NUTS_SITES` sites, which pay for the deepest tree of all chains at every
        transition in lockstep. Per chain and transition, 8 chains, benchmark line, 2 CPU cores,
        lockstep against one after another: NUTS 0.065 against 0.10 ms at N = 8, 0.11 against
        0.12 ms at N = 12, 1.5 against 0.37 ms at N = 20 and 6.9 against 1.0 ms at N = 32; FA-NUTS
        1.2 against 0.88 ms at N = 20. HMC and FA-HMC are 0-25% cheaper in lockstep at N = 20 and
        32. On an accelerator chains one after another would leave it idle."""
        if self.lockstep is not None:
            return self.lockstep
        return not (self.algorithm in NO_U_TURN and platform == "cpu" and sites >= SEQUENTIAL_NUTS_SITES)

    @property
    def move(self) -> UVMove:
        return UVMove(self.algorithm, self.hmc_steps, self.trajectory_length, self.target_acceptance)

    def describe(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SampleResult:
    fields: np.ndarray  # (chains, samples, *lattice)
    diagnostics: dict


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
    warn_unless_float64("rgdiff.samplers.uv.sample")
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
    move = settings.move
    coords = move.coordinates(theory)
    positions = coords.from_field(0.1 * jax.random.normal(k_init, (settings.chains, *lat.shape), dtype))
    mesh = mesh if mesh is not None else parallel.mesh_for_batch(settings.chains)
    positions = parallel.shard_batch(positions, mesh)  # chains split over the devices

    t0 = time.perf_counter()
    callback("warmup", 0, settings.warmup)
    resumed = None
    if checkpoint is not None and checkpoint.resumed is not None:
        skeleton = move.init(theory, positions)
        resumed = checkpoint.resumed_sampling(skeleton, move.default_params(theory, settings.chains, dtype))
    if resumed is not None:
        states, params = resumed["states"], resumed["params"]
    elif settings.warmup > 0:
        warm_keys = parallel.shard_batch(jax.random.split(k_warm, settings.chains), mesh)
        states, params = jax.jit(move.warmup, static_argnums=(0, 3))(theory, warm_keys, positions, settings.warmup)
        jax.block_until_ready(states)
    else:
        params = move.default_params(theory, settings.chains, dtype)
        states = move.init(theory, positions)
    callback("warmup", settings.warmup, settings.warmup)
    t_warm = time.perf_counter() - t0

    n_steps = settings.samples * settings.thin
    chunk = chunk or max(settings.thin, -(-n_steps // 50))
    chunk = -(-chunk // settings.thin) * settings.thin  # whole thinning periods per chunk
    chain_keys = jax.random.split(k_sample, settings.chains)
    states, params, chain_keys = parallel.shard_batch((states, params, chain_keys), mesh)

    def one_step(state, params, chain_key, step):
        kernel = move.kernel(theory, params["step_size"], params["inverse_mass_matrix"])
        state, info = kernel.step(jax.random.fold_in(chain_key, step), state)
        n_int = info.num_integration_steps if hasattr(info, "num_integration_steps") else settings.hmc_steps
        return state, (coords.to_field(state.position), info.acceptance_rate, info.is_divergent, n_int)

    def run_chunk(state, params, chain_key, start):
        def body(st, k):
            return one_step(st, params, chain_key, start + k)

        state, (pos, acc, div, n_int) = jax.lax.scan(body, state, jnp.arange(chunk))
        return state, pos[settings.thin - 1 :: settings.thin], acc, div, n_int

    lockstep = settings.in_lockstep(lat.sites, mesh.devices.flat[0].platform)
    if lockstep:
        run = jax.jit(jax.vmap(run_chunk, in_axes=(0, 0, 0, None)))
    else:
        groups = parallel.mesh_size(mesh)  # the chains of each device one after another, devices in parallel

        def in_sequence(states, params, chain_keys, start):
            def split(x):
                return x.reshape(groups, -1, *x.shape[1:])

            def merge(x):
                return x.reshape(-1, *x.shape[2:])

            def one_device(chains):
                return jax.lax.map(lambda c: run_chunk(*c, start), chains)

            return jax.tree.map(merge, jax.vmap(one_device)(jax.tree.map(split, (states, params, chain_keys))))

        run = jax.jit(in_sequence)

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
        from rgdiff.io.checkpoint import NumericalFaultError

        raise NumericalFaultError("non-finite field values in the chains; the sampler diverged")

    imm = np.asarray(params["inverse_mass_matrix"])
    diagnostics = {
        "step_size": np.asarray(params["step_size"]).tolist(),
        "inverse_mass_matrix_mean": imm.mean(axis=-1).tolist(),
        "acceptance_rate": (acc_sum / n_steps).tolist(),
        "divergences": div_sum.tolist(),
        "mean_integration_steps": (nint_sum / n_steps).tolist(),
        "lockstep": lockstep,
        "warmup_seconds": t_warm,
        "sampling_seconds": t_sample,
        "first_chunk_seconds_incl_compile": t_compile,
    }
    if move.fourier:
        diagnostics["mode_variance_ratio"] = mode_variance_ratio(imm, lat)
    return SampleResult(fields, diagnostics)


def mode_variance_ratio(inverse_mass_matrix: np.ndarray, lattice) -> list[float]:
    """The adapted Fourier-accelerated metric per momentum orbit (`lattice_orbits` labels),
    averaged over chains: the measured variance of each mode over its closed-form start, i.e.
    G2(p) / G2_free(p; m2_ref). One number per orbit, orbit 0 the zero mode."""
    count, index = lattice_orbits(lattice.dim, lattice.size)
    flat = np.asarray(inverse_mass_matrix).reshape(-1, lattice.sites).mean(axis=0)
    sums = np.bincount(index.reshape(-1), weights=flat, minlength=count)
    return (sums / np.bincount(index.reshape(-1), minlength=count)).tolist()
