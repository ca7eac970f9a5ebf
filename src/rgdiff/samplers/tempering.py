"""RG parallel tempering: an exact multilevel sampler of the UV theory on a ladder of RG times.

The paper's bridge / parallel-tempering reading of a renormalizing diffusion model (sections 1.2,
2.3, 5.1 and Figure 1): run one chain per distribution of a family that interpolates between the
target and an easy distribution, and exchange states between neighbours with a Metropolis rule
that keeps the product of the family invariant. The RG flow is the natural family; here its
levels are RG times 0 = t_0 < t_1 < ... < t_K < T with

- level 0: pi_0 = exp(-S), the UV phi^4 theory (exactly; `Phi4.logdensity_fn`);
- level k >= 1: pi_k = p^theta_{t_k}, the density the score model gives at t_k through the
  probability-flow ODE [6.14] (`rgdiff.generate.diffusion.ODEProposal` with t_end = t_k: phi_T ~
  p_T decoded to t_k, and fields encoded back to T, each with the exact log-density).

Every chain carries one replica per level and a sweep is

1. local moves at every level:
   - level 0: `hmc_steps_between` HMC transitions on S (Fourier-accelerated by default,
     `rgdiff.samplers.hmc.UVMove`, window-adapted as in the bridge);
   - level k >= 1: a preconditioned Crank-Nicolson (pCN) move in the latent of the ODE map,
     z' = rho_k z + sqrt(1 - rho_k^2) xi with xi ~ p_T. The ODE map z -> x = D_k(z) pushes p_T
     to pi_k, and pCN leaves the Gaussian p_T invariant (it is reversible for it: no
     Metropolis test, acceptance 1), so decoding z' moves x_k exactly within pi_k; the decode
     also returns log pi_k(x_k'), which the state caches. rho = 0 is an independent draw.
2. exchanges (replica swaps) of adjacent levels, even pairs (0,1), (2,3), ... on even sweeps and
   odd pairs on odd sweeps: the deterministic even-odd (DEO) scheme of non-reversible parallel
   tempering (Syed, Bouchard-Cote, Deligiannidis and Doucet 2021, "Non-reversible parallel
   tempering: a scalable highly parallel MCMC scheme", JRSS B), whose round-trip rate does not
   collapse as the number of levels grows (the reversible, randomly chosen pair diffuses). A swap
   of x_k and x_{k+1} is accepted with probability

       min(1, pi_k(x_{k+1}) pi_{k+1}(x_k) / (pi_k(x_k) pi_{k+1}(x_{k+1})))     (`exchange_log_ratio`)

   with pi_0 = exp(-S) (the normalisations cancel). The two cross terms are encodes
   (log pi_k(x_{k+1}) and log pi_{k+1}(x_k); at the pair (0, 1) only the second, -S(x_1) is
   closed form), batched over chains and the sweep's pairs in one ODE solve; the encodes also
   give the latents the swapped replicas need for their next pCN move, so a swap costs no extra
   solve. The cached log pi_k(x_k) makes the own terms free.

Every move leaves prod_k pi_k invariant, so level 0 samples exp(-S) whatever the model's quality
(exact up to the ODE solver's error in log pi_k, as in `rgdiff.samplers.bridge`); the model sets
the exchange rates, hence the mixing.

Why not refresh every level independently (rho = 0 everywhere): then x_1 is a fresh draw from
pi_1 at every sweep and the exchange (0, 1) is exactly an independence-Metropolis step with
proposal p^theta_{t_1}; the higher levels only swap one fresh draw for another and add nothing,
so PT collapses to the bridge sampler's IMH at t_1 at K times its cost. The default therefore
refreshes only the top level (rho_top = 0: each sweep injects a fresh, exact draw there) and
moves the intermediate levels locally (rho = 0.8): a state then percolates down the ladder
through a chain of accepted swaps, each between neighbouring, well-overlapping distributions,
instead of having to be accepted at once against exp(-S).

Level choice (Syed et al. 2021, section 5): the rejection rate r_k of pair (k, k+1) measures the
local communication barrier; Lambda(t) = sum of r over the pairs below t (interpolated between
levels, here linearly in u = log(1 + t / t_c), the warp of the ODE time grid, with t_c the
relaxation time of the fastest mode, `rgdiff.generate.diffusion.characteristic_time`) and the
ladder with equal barrier Lambda / K per pair is Lambda^-1 at K equally spaced values
(`choose_levels`). One departure from Syed et al.: level 0 (exp(-S)) is not the t -> 0 limit of
the model's levels, so Lambda jumps at t = 0 by the model's UV error; by default t_1 is kept and
only the levels above it are equalized (`keep_first_level`). `run_tempering` can run
`adapt_levels` pilot rounds of `pilot_sweeps` sweeps, each measuring the rates and re-placing
the levels (t_0 = 0 and t_K stay). For DEO the expected
round-trip rate per sweep is 1 / (2 + 2 sum_k r_k / (1 - r_k)) (Syed et al., Theorem 3); the
diagnostics report it next to the measured one.

Round trips: each replica's index is tracked through the levels (`replicas`: which replica sits
at each level); a round trip is a visit to level 0, then to level K, then to level 0 again
(`round_trips`).

PRNG keys: sweep n draws its pCN noise from fold_in(pcn_key, n) and its exchange uniforms from
fold_in(swap_key, n); HMC step j of sweep n of chain c uses fold_in(chain_key[c], n k + j). The
sweep counter runs on through pilot rounds, burn-in and the recorded sweeps (so the even/odd
alternation continues), and the recorded chains do not depend on the chunk size.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSamplerSettingsError, InvalidSchemeError
from rgdiff.generate import diffusion as gen
from rgdiff.models.base import AbstractScoreModel
from rgdiff.observables.estimators import magnetization
from rgdiff.observables.sanity import check_rate
from rgdiff.observables.stats import tau_int as gamma_tau_int
from rgdiff.rg.base import AbstractLinearScheme
from rgdiff.samplers.bridge import _init_states, _warmup, check_integers, check_moves_and_ode, finite_start, given_start
from rgdiff.samplers.hmc import ALGORITHMS as UV_ALGORITHMS
from rgdiff.samplers.hmc import DEFAULT_TRAJECTORY, UVMove
from rgdiff.theory.phi4 import Phi4

ALGORITHMS = UV_ALGORITHMS
MAX_VALUES = 2**31

__all__ = [
    "TemperingResult",
    "TemperingSettings",
    "TemperingState",
    "choose_levels",
    "exchange_acceptance",
    "exchange_log_ratio",
    "geometric_levels",
    "round_trips",
    "run_tempering",
]


# settings -------------------------------------------------------------------------------------


def _is_int(value, lo: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= lo


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class TemperingSettings:
    """Settings of an RG parallel-tempering run.

    - `chains`, `samples` (recorded sweeps per chain; one sweep = local moves at every level,
      then the exchanges of one parity).
    - The ladder t_1 < ... < t_K (level 0 is t = 0): `levels` gives it explicitly; empty (the
      default), it is `n_levels` = K times geometric from `t_min` to `t_max` (None: T / 2).
      Every level lies in (0, T).
    - `rho`: the pCN coefficient of the intermediate levels 1..K-1 (one number, or a tuple of
      K - 1), `rho_top` that of level K; each in [0, 1] (0: an independent draw, 1: no move).
      The default refreshes only the top level (module docstring: why not all).
    - `hmc_steps_between`: HMC transitions at level 0 per sweep (0: level 0 moves by exchanges
      only); `algorithm`, `hmc_leapfrog`, `trajectory_length`, `target_acceptance`, `warmup`,
      `step_size`: as in `rgdiff.samplers.bridge.BridgeSettings`.
    - `adapt_levels`: pilot rounds that re-place the levels from measured exchange rates
      (`choose_levels`), each of `pilot_sweeps` sweeps; `burn_in`: discarded sweeps after them.
      `keep_first_level` (default): t_1 stays and only the model's levels above it are
      re-placed (`choose_levels(keep_first=True)`: why), so give t_1 small (`t_min`).
    - `ode_steps`, `ode_solver`, `ode_grid`: the probability-flow ODE solves of every level.
    - `chunk`: sweeps per jitted call (0: min(samples, 50)); pilot rounds and burn-in run whole
      chunks.
    """

    chains: int = 4
    samples: int = 1000
    levels: tuple = ()
    n_levels: int = 4
    t_min: float = 0.05
    t_max: float | None = None
    rho: Any = 0.8
    rho_top: float = 0.0
    hmc_steps_between: int = 1
    hmc_leapfrog: int = 10
    algorithm: str = "fa-hmc"
    warmup: int = 200
    step_size: float = 0.1
    trajectory_length: float = DEFAULT_TRAJECTORY
    target_acceptance: float = 0.8
    adapt_levels: int = 0
    pilot_sweeps: int = 200
    keep_first_level: bool = True
    burn_in: int = 0
    ode_steps: int = 32
    ode_solver: str = "tsit5"
    ode_grid: str = "log"
    chunk: int = 0

    def __post_init__(self):
        check_integers(self, (("chains", 1), ("samples", 2), ("n_levels", 1), ("hmc_steps_between", 0),
                              ("adapt_levels", 0), ("pilot_sweeps", 2), ("burn_in", 0), ("chunk", 0)))
        check_moves_and_ode(self)
        if not isinstance(self.keep_first_level, bool):
            raise InvalidSamplerSettingsError(f"keep_first_level must be True or False, got {self.keep_first_level!r}")
        if not isinstance(self.levels, (tuple, list)):
            raise InvalidSamplerSettingsError(f"levels must be a tuple of RG times, got {self.levels!r}")
        if self.levels:
            if not all(_is_number(t) and t > 0 for t in self.levels):
                raise InvalidSamplerSettingsError(f"levels must be finite RG times > 0, got {tuple(self.levels)!r}")
            if any(b <= a for a, b in zip(self.levels[:-1], self.levels[1:])):
                raise InvalidSamplerSettingsError(f"levels must increase strictly, got {tuple(self.levels)!r}")
        else:
            if not (_is_number(self.t_min) and self.t_min > 0):
                raise InvalidSamplerSettingsError(f"t_min must be a number > 0, got {self.t_min!r}")
            if self.t_max is not None and not (_is_number(self.t_max) and self.t_max > self.t_min):
                raise InvalidSamplerSettingsError(
                    f"t_max must be a number > t_min = {self.t_min} (or None: T / 2), got {self.t_max!r}"
                )
        rho = self.rho if isinstance(self.rho, (tuple, list)) else (self.rho,)
        if isinstance(self.rho, (tuple, list)) and len(rho) != self.n_pairs - 1:
            raise InvalidSamplerSettingsError(
                f"rho must be one number or one per intermediate level ({self.n_pairs - 1}), got {len(rho)} values"
            )
        for name, values in (("rho", rho), ("rho_top", (self.rho_top,))):
            if not all(_is_number(r) and 0.0 <= r <= 1.0 for r in values):
                raise InvalidSamplerSettingsError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")

    @property
    def n_pairs(self) -> int:
        """K: the levels above 0, and the adjacent pairs."""
        return len(self.levels) if self.levels else self.n_levels

    @property
    def move(self) -> UVMove:
        return UVMove(self.algorithm, self.hmc_leapfrog, self.trajectory_length, self.target_acceptance)

    def ladder(self, T: float) -> np.ndarray:
        """t_1 < ... < t_K (float64), checked against the horizon T."""
        if self.levels:
            ladder = np.asarray(self.levels, dtype=np.float64)
        else:
            t_max = T / 2 if self.t_max is None else self.t_max
            if not self.t_min < t_max:
                raise InvalidSamplerSettingsError(f"t_min = {self.t_min} must lie below t_max = {t_max}")
            ladder = geometric_levels(self.t_min, t_max, self.n_levels)
        if not ladder[-1] < T:
            raise InvalidSamplerSettingsError(f"every level must lie below T = {T}, got t_K = {ladder[-1]}")
        return ladder

    def rhos(self) -> np.ndarray:
        """The pCN coefficient of each level 1..K (float64, shape (K,))."""
        inner = self.rho if isinstance(self.rho, (tuple, list)) else (self.rho,) * (self.n_pairs - 1)
        return np.asarray([*inner, self.rho_top], dtype=np.float64)

    def describe(self) -> dict:
        out = dataclasses.asdict(self)
        out["levels"], out["rho"] = [float(t) for t in self.levels], self.rhos()[:-1].tolist()
        return out


@dataclasses.dataclass
class TemperingResult:
    fields: np.ndarray  # (chains, samples, *lattice), float64: level 0, i.e. exp(-S)
    diagnostics: dict


class TemperingState(NamedTuple):
    """The state of all chains (chains axis first; levels 1..K on the second axis).

    - `uv`: the level-0 Blackjax HMC state, in the move's coordinates;
    - `fields`: x_k, shape (chains, K, *lattice); `latents`: z_k with x_k = D_k(z_k) (the ODE
      map from T to t_k), same shape; `log_pi`: log pi_k(x_k), shape (chains, K);
    - `replicas`: which replica sits at each level 0..K, int32 (chains, K + 1).
    """

    uv: Any
    fields: jax.Array
    latents: jax.Array
    log_pi: jax.Array
    replicas: jax.Array


# the pure pieces ------------------------------------------------------------------------------


def geometric_levels(t_min: float, t_max: float, n: int) -> np.ndarray:
    """`n` RG times geometric from `t_min` to `t_max` (the pilot ladder; float64)."""
    return np.geomspace(t_min, t_max, n) if n > 1 else np.asarray([t_min], dtype=np.float64)


def exchange_log_ratio(lower_at_lower, upper_at_upper, lower_at_upper, upper_at_lower):
    """log of the exchange ratio of adjacent levels k (lower) and k + 1 (upper):

        log [pi_k(x_{k+1}) pi_{k+1}(x_k) / (pi_k(x_k) pi_{k+1}(x_{k+1}))],

    `lower_at_upper` = log pi_k(x_{k+1}) and so on (any unnormalised log-densities: the
    constants cancel). Broadcasts over batch axes.
    """
    return (lower_at_upper + upper_at_lower) - (lower_at_lower + upper_at_upper)


def exchange_acceptance(log_ratio):
    """min(1, exp(log_ratio)), 0 for a NaN ratio (such a swap is never accepted)."""
    return jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))


def round_trips(replicas: np.ndarray) -> np.ndarray:
    """Round trips per chain from a history of replica positions.

    **Arguments:** `replicas`, int (chains, sweeps, K + 1): which replica sits at each level after
    each sweep (a permutation of 0..K per row).

    **Returns:** int (chains,): completed round trips level 0 -> level K -> level 0, summed over
    the replicas. A replica counts one when it reaches level 0 after having visited level K since
    its previous visit to level 0; a replica never seen at level 0 (e.g. one that starts at the
    top) first has to get there, so a half trip is never counted.
    """
    replicas = np.asarray(replicas)
    if replicas.ndim != 3 or replicas.shape[2] < 2:
        raise ValueError(f"replicas must have shape (chains, sweeps, levels >= 2), got {replicas.shape}")
    chains, sweeps, levels = replicas.shape
    # per replica: 0 = not yet at level 0, 1 = going up (left 0), -1 = going down (has seen K)
    direction = np.zeros((chains, levels), dtype=np.int8)
    count = np.zeros(chains, dtype=np.int64)
    rows = np.arange(chains)
    for n in range(sweeps):
        top, bottom = replicas[:, n, -1], replicas[:, n, 0]
        direction[rows, top] = np.where(direction[rows, top] == 1, -1, direction[rows, top])
        count += direction[rows, bottom] == -1
        direction[rows, bottom] = 1
    return count


def choose_levels(levels, rejection, *, n_levels: int | None = None, floor: float = math.inf,
                  keep_first: bool = False) -> np.ndarray:
    """A ladder with equal communication barrier per pair (Syed et al. 2021, section 5.1).

    **Arguments:**

    - `levels`: 0 = t_0 < t_1 < ... < t_K, the ladder the rates were measured on.
    - `rejection`: r_k in [0, 1], the mean rejection probability of pair (k, k + 1), shape (K,).
    - `n_levels`: K' levels above 0 in the new ladder (default K).
    - `floor`: Lambda is interpolated linearly in u = log(1 + t / floor) (the ODE grid's warp;
      default inf: linearly in t).
    - `keep_first`: keep t_1 too and equalize only the pairs above it (the model's own levels).
      Level 0 is exp(-S), not the t -> 0 limit of the model's levels: Lambda jumps at t = 0 by
      the model's UV error, which the interpolation would spread over (0, t_1] and so crowd
      levels towards 0 where they do not help (measured: a wrong Gaussian model on 4 x 4 phi^4
      kept r_0 ~ 0.5 from t_1 = 0.05 down to 0.009 while the new pair (1, 2) accepted 0.98).

    The barrier Lambda(t_k) = r_0 + ... + r_{k-1}, linear in u between levels, is inverted at
    Lambda(t_K) j / K', j = 0..K'. The ends t_0 = 0 and t_K stay. A pair that never rejects
    makes Lambda flat; rejection rates are floored at 1e-9 Lambda(t_K) so the inverse is unique.
    With no rejection at all the new ladder is uniform in u.

    **Returns:** the new ladder t'_0 = 0 < ... < t'_{K'} = t_K, float64 of shape (K' + 1,).
    """
    levels = np.asarray(levels, dtype=np.float64)
    rejection = np.asarray(rejection, dtype=np.float64)
    if levels.ndim != 1 or levels.size < 2 or levels[0] != 0.0 or np.any(np.diff(levels) <= 0):
        raise InvalidSamplerSettingsError(f"levels must be 0 = t_0 < t_1 < ... < t_K, got {levels.tolist()}")
    if rejection.shape != (levels.size - 1,):
        raise InvalidSamplerSettingsError(
            f"rejection must have one rate per pair ({levels.size - 1}), got shape {rejection.shape}"
        )
    if not np.all((rejection >= 0) & (rejection <= 1)):  # NaN fails too: a pair never attempted
        raise InvalidSamplerSettingsError(f"rejection rates must lie in [0, 1], got {rejection.tolist()}")
    n_new = levels.size - 1 if n_levels is None else n_levels
    if not _is_int(n_new, 1):
        raise InvalidSamplerSettingsError(f"n_levels must be an integer >= 1, got {n_levels!r}")
    if not floor > 0:
        raise InvalidSamplerSettingsError(f"floor must be > 0 (or inf), got {floor!r}")
    if keep_first:
        if n_new == 1 and levels.size == 2:
            return levels.copy()  # the one level is t_1 = t_K: nothing to place
        if n_new < 2 or levels.size < 3:
            raise InvalidSamplerSettingsError(
                f"keep_first needs levels above t_1 in both ladders, got K = {levels.size - 1} and K' = {n_new}"
            )
        upper = _equalize(levels[1:], rejection[1:], n_new - 1, floor)
        return np.concatenate([[0.0], upper])
    return _equalize(levels, rejection, n_new, floor)


def _equalize(levels: np.ndarray, rejection: np.ndarray, n_new: int, floor: float) -> np.ndarray:
    """`n_new` + 1 levels from levels[0] to levels[-1] with equal interpolated barrier per pair."""
    u = levels if math.isinf(floor) else np.log1p(levels / floor)
    total = float(rejection.sum())
    if total == 0.0:
        u_new = np.linspace(u[0], u[-1], n_new + 1)
    else:
        barrier = np.concatenate([[0.0], np.cumsum(np.maximum(rejection, 1e-9 * total))])
        u_new = np.interp(barrier[-1] * np.arange(n_new + 1) / n_new, barrier, u)
    new = u_new if math.isinf(floor) else floor * np.expm1(u_new)
    new[0], new[-1] = levels[0], levels[-1]
    return new


def predicted_round_trip_rate(rejection) -> float:
    """1 / (2 + 2 sum_k r_k / (1 - r_k)): round trips per sweep of DEO parallel tempering
    (Syed et al. 2021, Theorem 3, under their efficient-local-exploration assumption); 0 if a
    pair never accepts."""
    r = np.asarray(rejection, dtype=np.float64)
    if np.any(r >= 1):
        return 0.0
    return float(1.0 / (2.0 + 2.0 * np.sum(r / (1.0 - r))))


# the compiled sweeps --------------------------------------------------------------------------


def _per_level(fn, base: gen.ODEProposal, grids, batch):
    """`fn(proposal_at_level, batch_at_level)` for every level: grids (J, steps + 1), batch
    (chains, J, *lattice) -> outputs with the level axis second. One batched ODE solve."""
    return jax.vmap(lambda ts, x: fn(base.regridded(ts), x), in_axes=(0, 1), out_axes=1)(grids, batch)


def _decode_levels(base, grids, latents):
    return _per_level(lambda p, z: p.decode(z), base, grids, latents)


def _encode_levels(base, grids, fields):
    return _per_level(lambda p, x: p.encode(x), base, grids, fields)


@eqx.filter_jit
def _refresh_levels(base: gen.ODEProposal, grids, key, chains: int):
    """Exact independent draws at every level 1..K: (fields, latents, log_pi)."""
    latents = base.sample_prior(key, (chains, grids.shape[0]))
    fields, log_pi = _decode_levels(base, grids, latents)
    return fields, latents, log_pi


@eqx.filter_jit
def _sample(proposal: gen.ODEProposal, key, n: int):
    return proposal.sample(key, n)


def _select(mask, a, b):
    """where(mask, a, b) with `mask` (chains,) broadcast over the trailing axes of a and b."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)


def _exchange(parity: int, rule, base, grids, logdensity, operand):
    """The exchanges of pairs (k, k + 1) with k = parity mod 2, for all chains.

    Returns the updated (x0, fields, latents, log_pi, replicas) and per pair (chains, K) the
    acceptance probability (NaN where not attempted) and whether it was accepted.
    """
    x0, fields, latents, log_pi, replicas, uniforms = operand
    chains, n_pairs = log_pi.shape
    everything = jnp.concatenate([x0[:, None], fields], axis=1)  # (chains, K + 1, *lattice)
    own = jnp.concatenate([jax.vmap(logdensity)(x0)[:, None], log_pi], axis=1)  # log pi_k(x_k)
    pairs = [k for k in range(n_pairs) if k % 2 == parity]
    probs = jnp.full((chains, n_pairs), jnp.nan, log_pi.dtype)
    accepted = jnp.zeros((chains, n_pairs), bool)
    if not pairs:
        return (x0, fields, latents, log_pi, replicas), probs, accepted
    # the encodes of the sweep, one batched solve: (field's level, target level)
    jobs = [(k + 1, k) for k in pairs if k >= 1] + [(k, k + 1) for k in pairs]
    slot = {job: j for j, job in enumerate(jobs)}
    job_latents, job_log_pi = _encode_levels(
        base, grids[jnp.asarray([t - 1 for _, t in jobs])], everything[:, jnp.asarray([f for f, _ in jobs])]
    )
    new_all, new_own = everything, own
    new_latents, new_replicas = latents, replicas
    for k in pairs:
        up = slot[(k, k + 1)]
        if k == 0:
            lower_at_upper, down = jax.vmap(logdensity)(everything[:, 1]), None  # -S(x_1): closed form
        else:
            down = slot[(k + 1, k)]
            lower_at_upper = job_log_pi[:, down]
        upper_at_lower = job_log_pi[:, up]
        log_ratio = rule(own[:, k], own[:, k + 1], lower_at_upper, upper_at_lower)
        accept = jnp.log(uniforms[:, k]) < log_ratio  # False for NaN
        probs = probs.at[:, k].set(exchange_acceptance(log_ratio))
        accepted = accepted.at[:, k].set(accept)
        new_all = new_all.at[:, k].set(_select(accept, everything[:, k + 1], everything[:, k]))
        new_all = new_all.at[:, k + 1].set(_select(accept, everything[:, k], everything[:, k + 1]))
        new_own = new_own.at[:, k].set(jnp.where(accept, lower_at_upper, own[:, k]))
        new_own = new_own.at[:, k + 1].set(jnp.where(accept, upper_at_lower, own[:, k + 1]))
        if down is not None:  # latents index levels 1..K
            new_latents = new_latents.at[:, k - 1].set(_select(accept, job_latents[:, down], latents[:, k - 1]))
        new_latents = new_latents.at[:, k].set(_select(accept, job_latents[:, up], latents[:, k]))
        new_replicas = new_replicas.at[:, k].set(jnp.where(accept, replicas[:, k + 1], replicas[:, k]))
        new_replicas = new_replicas.at[:, k + 1].set(jnp.where(accept, replicas[:, k], replicas[:, k + 1]))
    return (new_all[:, 0], new_all[:, 1:], new_latents, new_own[:, 1:], new_replicas), probs, accepted


@eqx.filter_jit
def _run_chunk(base, grids, rhos, theory, hmc, rule, state, step_size, imm, keys, start, chunk):
    """`chunk` sweeps for all chains (module docstring). `hmc` = (`UVMove`, k) and `rule` (the
    exchange log-ratio) are static; the ladder (`grids`, one ODE grid per level) and `rhos` are
    traced, so re-placing the levels does not recompile."""
    move, k_hmc = hmc
    pcn_key, swap_key, chain_keys = keys
    coords = move.coordinates(theory)
    logdensity = theory.logdensity_fn()
    chains, n_pairs = state.log_pi.shape
    lattice = base.lattice
    mix = rhos.reshape((1, n_pairs) + (1,) * lattice.dim)

    def hmc_chain(uv, eps, inv_mass, chain_key, sweep):
        kernel = move.kernel(theory, eps, inv_mass)

        def body(st, j):
            st, info = kernel.step(jax.random.fold_in(chain_key, sweep * k_hmc + j), st)
            return st, info.acceptance_rate

        return jax.lax.scan(body, uv, jnp.arange(k_hmc))

    def sweep_fn(state, sweep):
        uv = state.uv
        # 1. local moves: HMC on S at level 0, pCN in the latent at levels >= 1
        if k_hmc > 0:
            uv, hmc_acc = jax.vmap(hmc_chain, in_axes=(0, 0, 0, 0, None))(uv, step_size, imm, chain_keys, sweep)
            hmc_acc = jnp.mean(hmc_acc, axis=1)
        else:
            hmc_acc = jnp.zeros((chains,), state.log_pi.dtype)
        noise = base.sample_prior(jax.random.fold_in(pcn_key, sweep), (chains, n_pairs))
        latents = mix * state.latents + jnp.sqrt(1.0 - mix**2) * noise
        fields, log_pi = _decode_levels(base, grids, latents)
        # 2. exchanges of one parity (DEO)
        uniforms = jax.random.uniform(jax.random.fold_in(swap_key, sweep), (chains, n_pairs), state.log_pi.dtype)
        operand = (coords.to_field(uv.position), fields, latents, log_pi, state.replicas, uniforms)
        (x0, fields, latents, log_pi, replicas), probs, accepted = jax.lax.cond(
            sweep % 2 == 0,
            lambda op: _exchange(0, rule, base, grids, logdensity, op),
            lambda op: _exchange(1, rule, base, grids, logdensity, op),
            operand,
        )
        uv = _init_states(move, theory, x0)  # level 0 may hold the swapped-in x_1
        levels_m = jnp.concatenate([x0[:, None], fields], axis=1).mean(axis=tuple(range(2, 2 + lattice.dim)))
        out = (x0, hmc_acc, probs, accepted, replicas, jnp.abs(levels_m))
        return TemperingState(uv, fields, latents, log_pi, replicas), out

    sweeps = start + jnp.arange(chunk)
    return jax.lax.scan(sweep_fn, state, sweeps)


# the driver -----------------------------------------------------------------------------------


def _check_run(model, scheme, theory, settings) -> None:
    if not isinstance(settings, TemperingSettings):
        raise InvalidSamplerSettingsError(f"settings must be a TemperingSettings, got {type(settings).__name__}")
    if not isinstance(theory, Phi4):
        raise InvalidSamplerSettingsError(f"parallel tempering samples a Phi4 theory, got {type(theory).__name__}")
    if not isinstance(model, AbstractScoreModel):
        raise InvalidSamplerSettingsError(f"expected a score model (AbstractScoreModel), got {type(model).__name__}")
    if model.lattice != theory.lattice:
        raise InvalidSchemeError(
            f"the model's lattice {model.lattice.describe()} is not the theory's {theory.lattice.describe()}"
        )
    if settings.chains * settings.samples * theory.lattice.sites > MAX_VALUES:
        raise InvalidSamplerSettingsError(
            f"{settings.chains} chains x {settings.samples} samples x {theory.lattice.sites} sites is more than "
            f"{MAX_VALUES:.3g} numbers; sample less"
        )


def run_tempering(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    theory: Phi4,
    settings: TemperingSettings,
    *,
    key: jax.Array,
    T: float,
    prior_spectrum=None,
    callback: Callable[[str, int, int], None] | None = None,
    start=None,
) -> TemperingResult:
    """Sample `theory` exactly by RG parallel tempering on the levels of `model` (module docstring).

    **Arguments:**

    - `model`: a score model with an exact divergence (an `AbstractExactScoreModel`, else
      `LikelihoodUnavailableError`) on the theory's lattice.
    - `scheme`: the linear RG scheme the model inverts, with p-independent noise (e.g. Carosso),
      else `InvalidSchemeError`.
    - `theory`: the UV theory (`Phi4`); level 0 targets exp(-S).
    - `settings`: a `TemperingSettings`.
    - `key`: a JAX PRNG key (keyword-only).
    - `T`: the horizon where every level's ODE starts, from p_T (the scheme's stationary law, or
      the half-grid spectrum `prior_spectrum`); every level lies below it.
    - `callback(stage, done, total)`: progress, stage in {"warmup", "pilot", "burn-in", "sampling"}.
    - `start`: level 0's first configurations `(chains, *lattice)` (e.g. an equilibrated local
      run's last states; `rgdiff.samplers.bridge.sample_bridge` says why); default: the model's
      samples at t = 0.

    **Returns:** a `TemperingResult`: `fields` (chains, samples, *lattice) float64 at level 0, and
    diagnostics: `levels` [0, t_1, ..., t_K] (after adaptation) and per pair
    `exchange_acceptance` (mean acceptance probability) and `exchange_accepted_fraction`;
    `communication_barrier` (sum of rejection rates); `round_trips_per_chain`,
    `round_trips_per_1000_sweeps` and `predicted_round_trips_per_1000_sweeps` (DEO theory from
    the measured rates); `hmc_acceptance`; `tau_int_abs_M` (Gamma method) and
    `ess_abs_M` = chains x samples / (2 tau_int); `mean_abs_M_per_level`;
    `level_adaptation` (per pilot round, the ladder and its measured acceptance); timings. An
    acceptance rate outside [0, 1] is reported as None and named in `diagnostics["impossible"]`
    (`rgdiff.observables.sanity.check_rate`).
    """
    _check_run(model, scheme, theory, settings)
    lattice = theory.lattice
    dtype = jnp.zeros(()).dtype  # float64 under x64
    callback = callback or (lambda *a: None)
    ladder = settings.ladder(float(T))

    def proposal_at(t_end: float) -> gen.ODEProposal:
        return gen.ode_proposal(
            model, scheme, T=T, t_end=float(t_end), steps=settings.ode_steps, solver=settings.ode_solver,
            grid=settings.ode_grid, prior_spectrum=prior_spectrum, dtype=dtype,
        )  # refuses models without exact divergence and schemes with coloured noise

    def grids_of(ladder) -> jax.Array:
        return jnp.stack([proposal_at(t).grid for t in ladder])

    base = proposal_at(0.0)
    t_c = gen.characteristic_time(scheme, lattice)
    rhos = jnp.asarray(settings.rhos(), dtype)
    move = settings.move
    hmc = (move, settings.hmc_steps_between)
    rule = exchange_log_ratio  # looked up per call: the static rule of the compiled sweeps
    k_init, k_warm, k_levels, k_pcn, k_swap, k_chain = jax.random.split(key, 6)
    keys = (k_pcn, k_swap, jax.random.split(k_chain, settings.chains))
    chunk = settings.chunk or min(settings.samples, 50)
    chains, n_pairs = settings.chains, settings.n_pairs

    # level 0 starts from `start` or the model's own samples at t = 0, tuned by HMC from there
    t0 = time.perf_counter()
    callback("warmup", 0, settings.warmup)
    if start is None:
        positions, _ = finite_start(_sample(base, k_init, chains)[0])
    else:
        positions = given_start(start, chains, theory.lattice, dtype)
    if settings.warmup > 0 and settings.hmc_steps_between > 0:
        uv, params = _warmup(move, theory, jax.random.split(k_warm, chains), positions, settings.warmup)
    else:
        uv = _init_states(move, theory, positions)
        params = move.default_params(theory, chains, dtype, settings.step_size)
    step_size, imm = params["step_size"], params["inverse_mass_matrix"]
    grids = grids_of(ladder)
    replicas = jnp.tile(jnp.arange(n_pairs + 1, dtype=jnp.int32), (chains, 1))
    state = TemperingState(uv, *_refresh_levels(base, grids, jax.random.fold_in(k_levels, 0), chains), replicas)
    jax.block_until_ready(state.log_pi)
    callback("warmup", settings.warmup, settings.warmup)
    t_warm = time.perf_counter() - t0

    sweep = 0
    t_compile = None

    def run(state, grids, n_sweeps: int, stage: str, record: bool):
        nonlocal sweep, t_compile
        outs, done = [], 0
        callback(stage, 0, n_sweeps)
        while done < n_sweeps:
            t = time.perf_counter()
            state, out = _run_chunk(base, grids, rhos, theory, hmc, rule, state, step_size, imm, keys,
                                    jnp.asarray(sweep), chunk)
            out = tuple(np.asarray(x) for x in out)  # (chunk, chains, ...)
            if t_compile is None:
                t_compile = time.perf_counter() - t
            take = min(chunk, n_sweeps - done)
            if record:
                outs.append(tuple(np.swapaxes(x[:take], 0, 1) for x in out))  # chains first
            sweep += chunk
            done += take
            callback(stage, done, n_sweeps)
        if not record:
            return state, None
        return state, tuple(np.concatenate(parts, axis=1) for parts in zip(*outs))

    # pilot rounds: measure the exchange rates, re-place the levels, redraw levels >= 1 exactly
    t1 = time.perf_counter()
    adaptation = []
    for r in range(settings.adapt_levels):
        state, out = run(state, grids, settings.pilot_sweeps, "pilot", True)
        acceptance = np.nanmean(out[2], axis=(0, 1))
        adaptation.append({"levels": [0.0, *ladder.tolist()], "exchange_acceptance": acceptance.tolist()})
        ladder = choose_levels(np.concatenate([[0.0], ladder]), 1.0 - acceptance, floor=t_c,
                               keep_first=settings.keep_first_level)[1:]
        grids = grids_of(ladder)
        state = state._replace(**dict(zip(
            ("fields", "latents", "log_pi"), _refresh_levels(base, grids, jax.random.fold_in(k_levels, r + 1), chains)
        )))
    if settings.burn_in:
        state, _ = run(state, grids, settings.burn_in, "burn-in", False)
    t_pilot = time.perf_counter() - t1

    t2 = time.perf_counter()
    state, (fields, hmc_acc, probs, accepted, replica_history, abs_m_levels) = run(
        state, grids, settings.samples, "sampling", True
    )
    t_sample = time.perf_counter() - t2
    fields = np.asarray(fields, dtype=np.float64)
    if not np.all(np.isfinite(fields)):
        from rgdiff.io.checkpoint import NumericalFaultError

        raise NumericalFaultError("non-finite field values in the chains; the sampler diverged")

    attempted = ~np.isnan(probs)
    acceptance = np.nanmean(probs, axis=(0, 1))
    rejection = 1.0 - acceptance
    trips = round_trips(replica_history)
    abs_m = np.abs(magnetization(fields, lattice))
    try:
        tau = gamma_tau_int(abs_m).tau_int
    except ValueError:  # too short for the Gamma method
        tau = None
    n_total = chains * settings.samples
    diagnostics = {
        "levels": [0.0, *np.asarray(ladder).tolist()],
        "rho": settings.rhos().tolist(),
        "exchange_acceptance": acceptance.tolist(),
        "exchange_accepted_fraction": (accepted.sum(axis=(0, 1)) / attempted.sum(axis=(0, 1))).tolist(),
        "communication_barrier": float(rejection.sum()),
        "round_trips_per_chain": trips.tolist(),
        "round_trips_per_1000_sweeps": float(1000.0 * trips.mean() / settings.samples),
        "predicted_round_trips_per_1000_sweeps": 1000.0 * predicted_round_trip_rate(rejection),
        "hmc_acceptance": float(hmc_acc.mean()) if settings.hmc_steps_between > 0 else None,
        "tau_int_abs_M": tau,
        "ess_abs_M": n_total / (2.0 * tau) if tau else None,
        "mean_abs_M_per_level": abs_m_levels.mean(axis=(0, 1)).tolist(),
        "level_adaptation": adaptation,
        "step_size": np.asarray(step_size).tolist(),
        "T": float(T),
        "settings": settings.describe(),
        "scheme": scheme.describe(),
        "warmup_seconds": t_warm,
        "pilot_seconds": t_pilot,
        "sampling_seconds": t_sample,
        "first_chunk_seconds_incl_compile": t_compile,
    }
    for name in ("exchange_acceptance", "exchange_accepted_fraction", "hmc_acceptance"):
        check_rate(diagnostics, name, where="parallel tempering")
    return TemperingResult(fields, diagnostics)
