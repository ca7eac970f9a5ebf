"""Independence Metropolis-Hastings (IMH) with an exact proposal density, in Blackjax's shape.

Target pi(phi) (here exp(-S)), proposals phi' ~ q drawn independently of the state, with log q
known exactly (a learned model's likelihood, paper section 5.2 and [5.3]). With importance
weights log w = log pi - log q, a proposal is accepted with probability

    min(1, w(phi') / w(phi)),

which leaves pi invariant whatever q is (q only sets the acceptance rate). The state caches
log w of the current position, so a step costs one target evaluation of the proposal; a
proposal with a non-finite weight is always rejected.

The kernel acts on ONE chain (`jax.vmap` over chains): pure, `rng_key` first, returning
`(state, info)`. Proposals are inputs, not drawn inside, so they can be generated in large
batches ahead of time (they do not depend on the state).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class IMHState(NamedTuple):
    """`position` (one configuration) and `log_weight` = log pi(position) - log q(position)."""

    position: jax.Array
    log_weight: jax.Array


class IMHInfo(NamedTuple):
    """`acceptance_rate` = min(1, w'/w) (0 for a NaN ratio), `is_accepted`, and the proposal's
    `proposal_log_weight` (for importance-sampling diagnostics such as `importance_ess`)."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    proposal_log_weight: jax.Array


def init(position: jax.Array, log_q: jax.Array, logdensity_fn: Callable) -> IMHState:
    """The state at `position`, whose proposal log-density is `log_q`."""
    return IMHState(position, logdensity_fn(position) - log_q)


def build_kernel() -> Callable:
    """The IMH step `kernel(rng_key, state, proposal, proposal_log_q, logdensity_fn)`."""

    def kernel(rng_key, state: IMHState, proposal: jax.Array, proposal_log_q: jax.Array,
               logdensity_fn: Callable) -> tuple[IMHState, IMHInfo]:
        log_w = logdensity_fn(proposal) - proposal_log_q
        log_ratio = log_w - state.log_weight
        log_u = jnp.log(jax.random.uniform(rng_key, (), dtype=jnp.result_type(log_ratio)))
        accepted = log_u < log_ratio  # False for NaN
        rate = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
        new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), IMHState(proposal, log_w), state)
        return new, IMHInfo(rate, accepted, log_w)

    return kernel


def chains_over(logdensity_fn: Callable, keys, proposals, proposals_log_q):
    """IMH chains over pre-drawn proposals `(chains, steps, *site)` with their log q `(chains, steps)`,
    each chain starting at its first proposal (`keys`: one per chain).

    **Returns:** the chains' positions `(chains, steps, *site)` and whether each later step
    accepted `(chains, steps - 1)`.
    """
    kernel = build_kernel()

    def chain(key, props, props_log_q):
        def body(state, xs):
            k, proposal, proposal_log_q = xs
            state, info = kernel(k, state, proposal, proposal_log_q, logdensity_fn)
            return state, (state.position, info.is_accepted)

        steps = (jax.random.split(key, props.shape[0] - 1), props[1:], props_log_q[1:])
        _, (positions, accepted) = jax.lax.scan(body, init(props[0], props_log_q[0], logdensity_fn), steps)
        return jnp.concatenate([props[:1], positions]), accepted

    return jax.vmap(chain)(keys, proposals, proposals_log_q)


def importance_ess(log_w: jax.Array) -> jax.Array:
    """ESS / n = (sum w)^2 / (n sum w^2) of importance weights given as logs (in (0, 1]).

    The standard measure of a proposal's overlap with the target (Kish); 1 for a perfect q.
    Non-finite log-weights count as w = 0.
    """
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    log_w = log_w - jnp.max(log_w)
    w = jnp.exp(log_w)
    return jnp.sum(w) ** 2 / (log_w.shape[0] * jnp.sum(w**2))


def expected_acceptance(log_w: jax.Array) -> jax.Array:
    """The stationary IMH acceptance rate estimated from n independent proposals' log weights.

    In equilibrium the state is distributed as pi = q w / E_q[w] and the proposal as q, so ::

        E[min(1, w' / w)] = E_{q x q}[min(w, w')] / E_q[w],

    estimated by the U-statistic over the n (n - 1) / 2 distinct pairs (sorted weights: the k-th
    smallest is the minimum of the n - k pairs with a larger one). Unlike the importance ESS it
    is the quantity an IMH chain's cost depends on, and both use only the proposals. Like any
    ratio over importance weights it reads low when a few proposals carry very large weights: for
    a CNF at N = 32 it gave 0.117 from 512 proposals where the IMH chains accepted 0.265 of 4000
    (stop 28; for a lighter-tailed flow 0.289 against 0.264). Non-finite log weights count as w = 0.
    """
    n = log_w.shape[0]
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    w = jnp.sort(jnp.exp(log_w - jnp.max(log_w)))
    larger = jnp.arange(n - 1, -1, -1, dtype=w.dtype)  # pairs in which the k-th smallest is the minimum
    pair_mean = jnp.sum(w * larger) / (n * (n - 1) / 2)
    return pair_mean / jnp.mean(w)


MIN_TAIL_WEIGHTS = 100  # fewer weights than this hold too few in their tail for `pareto_k` to mean anything


def pareto_k(log_w) -> float:
    """The Pareto shape k of the upper tail of importance weights given as logs: PSIS's k-hat
    (Vehtari et al. 2024, through ArviZ), a host-side diagnostic of the proposal.

    A tail P(w > t) ~ t^(-1/k) has finite moments E_q[w^r] for r < 1/k only. An IMH chain needs
    the second: a state of weight w accepts with probability E_q[min(1, w'/w)] <= E_q[w] / w, so
    it is held for at least w / E_q[w] steps on average, and in equilibrium (pi = q w / E_q[w])
    the mean holding time is at least E_pi[w] / E_q[w] = E_q[w^2] / E_q[w]^2, infinite for
    k >= 1/2. There the chain sticks now and then for as long as the largest weights say, and
    tau_int and ESS/s from finite chains scatter beyond their own errors (the flow samplers at
    N = 32, stop 28). For q = N(0, s^2) and pi = N(0, 1), k = 1 - s^2 (s < 1); k < 0 means
    bounded weights (a uniformly ergodic chain), and -inf is returned for equal weights.
    Non-finite log weights (w = 0) are left out. The tail fit uses the largest min(n / 5,
    3 sqrt(n)) weights: k-hat scatters by about 0.06 from 4 10^4 weights, and NaN is returned
    for fewer than `MIN_TAIL_WEIGHTS` unequal ones.
    """
    from rgdiff.observables.stats import _arviz

    log_w = np.asarray(log_w, dtype=np.float64).ravel()
    log_w = log_w[np.isfinite(log_w)]
    if log_w.size == 0 or np.ptp(log_w) == 0.0:
        return -math.inf
    if log_w.size < MIN_TAIL_WEIGHTS:
        return math.nan
    az = _arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # ArviZ warns when k-hat is large: that is the answer here
        _, k = az.psislw(log_w - log_w.max())
    return float(k)
