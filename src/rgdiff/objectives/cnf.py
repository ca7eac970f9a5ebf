"""Objectives for RG-time normalizing flows: reverse KL [5.5] and the RG objective [5.22].

Reverse KL (Albergo et al., the baseline) ::

    KL(p_0^theta || p_0) = E_{phi ~ p_0^theta} [ log p_0^theta(phi) + S(phi) ] + log Z,

estimated with prior draws decoded to t = 0 (gradients through the ODE solver).

RG objective [5.22] ::

    KL(p_0^theta || p_0) + int_0^T lambda(t) KL(p_t || p_t^theta) dt,

with KL(p_t || p_t^theta) = -E_{p_t}[log p_t^theta] + const. Here lambda(t) is the density of the
sampled times: t_j = t(s_j) with s_j uniform on [0, 1] in the flow's log-time, i.e.
lambda(t) = 1 / ((t + t0) log(1 + T / t0)) (normalized; it weighs each scale of t alike), times
`rg_weight`. p_t samples are UV samples pushed through the exact kernel at t_j
(`scheme.push_forward`), and log p_t^theta(phi_t) comes from encoding phi_t up to T.

UV samples (the training loop after [5.22]): a Markov chain per batch entry that leaves exp(-S)
invariant, each step

1. an independence-Metropolis step whose proposal is the flow's own fresh sample phi' ~ p_0^theta
   (the reverse-KL part's draws), accepted with min(1, exp(-S(phi') + S(phi) + log q(phi) -
   log q(phi'))), where q = p_0^theta at the current parameters (log q(phi) by encoding phi);
2. optionally k HMC trajectories on S (identity mass, fixed step).

Both steps are exact for exp(-S) whatever the flow; the flow only sets the acceptance.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rgdiff.generate.transport import decode, encode
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.theory.phi4 import Phi4

OBJECTIVES = ("rg", "reverse-kl")
TIME_WEIGHTING = "lambda(t) = 1 / ((t + t0) log(1 + T/t0)): t uniform in the flow's log-time s, t0 = 1/Lambda_0^2"


def reverse_kl_loss(flow: ContinuousFlow, scheme, theory: Phi4, key, batch: int, steps: int, solver: str = "rk4"):
    """E_q[log q + S] on `batch` fresh draws (= KL(q || p_0) - log Z).

    **Returns:** `(loss, (phi, log_q))` with the draws and their log-densities (for the IMH chain).
    """
    dtype = flow.weights.dtype
    phi_T = scheme.prior_sample(key, flow.lattice, (batch,), dtype)
    phi, log_q = decode(flow, scheme, phi_T, 0.0, steps=steps, solver=solver)
    return jnp.mean(log_q + theory.action(phi)), (phi, log_q)


def sample_rg_times(flow: ContinuousFlow, key, n: int, dtype):
    """t_j with s_j uniform on [0, 1] (the weighting lambda(t) of `TIME_WEIGHTING`)."""
    return flow.t_of_s(jax.random.uniform(key, (n,), dtype))


def flowed_log_likelihood(flow: ContinuousFlow, scheme, key, uv_fields, steps: int, solver: str = "rk4", times=None):
    """log p_{t_j}^theta(phi_{t_j}) per configuration, phi_{t_j} ~ p_{t_j|0}(. | uv_fields[j]).

    `times` (batch,) fixes t_j; by default t_j ~ lambda (`sample_rg_times`).
    """
    dtype = flow.weights.dtype
    k_t, k_push = jax.random.split(key)
    t = sample_rg_times(flow, k_t, uv_fields.shape[0], dtype) if times is None else jnp.asarray(times, dtype)
    phi_t = scheme.push_forward(k_push, uv_fields.astype(dtype), t, flow.lattice)
    _, log_p = encode(flow, scheme, phi_t, t, steps=steps, solver=solver)
    return log_p


def flowed_cross_entropy(flow: ContinuousFlow, scheme, key, uv_fields, steps: int, solver: str = "rk4"):
    """-mean_j log p_{t_j}^theta(phi_{t_j}) with t_j ~ lambda.

    Its expectation is int lambda(t) [KL(p_t || p_t^theta) + H(p_t)] dt.
    """
    return -jnp.mean(flowed_log_likelihood(flow, scheme, key, uv_fields, steps, solver))


def rg_loss(flow: ContinuousFlow, scheme, theory: Phi4, key, uv_fields, steps: int, rg_weight: float = 1.0,
            solver: str = "rk4"):
    """The RG objective [5.22] (up to theta-independent constants) on one batch.

    `uv_fields` (batch, *lattice): samples of p_0 (the Markov chain's current states).
    **Returns:** `(loss, (phi, log_q, reverse, cross))`.
    """
    k_rev, k_rg = jax.random.split(key)
    reverse, (phi, log_q) = reverse_kl_loss(flow, scheme, theory, k_rev, uv_fields.shape[0], steps, solver)
    cross = flowed_cross_entropy(flow, scheme, k_rg, uv_fields, steps, solver)
    return reverse + rg_weight * cross, (phi, log_q, reverse, cross)


# the UV Markov chain ---------------------------------------------------------------------------


def hmc_step_size(theory: Phi4) -> float:
    """A stable leapfrog step for identity mass: 1/2 over the largest free frequency sqrt(eps^d (Lambda_0^2 + |m2|))."""
    lat = theory.lattice
    return 0.5 / math.sqrt(lat.spacing**lat.dim * (lat.cutoff**2 + abs(theory.m2)))


def hmc(theory: Phi4, key, phi, step_size: float, leapfrog: int):
    """One HMC trajectory per configuration (batch, *lattice) on exp(-S); identity mass.

    **Returns:** `(phi, acceptance probability per configuration)`.
    """
    k_p, k_u = jax.random.split(key)
    p0 = jax.random.normal(k_p, phi.shape, phi.dtype)

    def grad(x):
        return theory.grad_action(x)

    def body(carry, _):
        x, p = carry
        x = x + step_size * p
        p = p - step_size * grad(x)
        return (x, p), None

    p = p0 - 0.5 * step_size * grad(phi)
    (x, p), _ = jax.lax.scan(body, (phi, p), None, length=leapfrog - 1)
    x = x + step_size * p
    p = p - 0.5 * step_size * grad(x)
    lat = theory.lattice
    h0 = theory.action(phi) + 0.5 * lat.sum_sites(p0**2)
    h1 = theory.action(x) + 0.5 * lat.sum_sites(p**2)
    log_ratio = h0 - h1
    u = jax.random.uniform(k_u, log_ratio.shape, phi.dtype)
    accept = jnp.log(u) < log_ratio
    shape = (-1,) + (1,) * lat.dim
    prob = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
    return jnp.where(accept.reshape(shape), x, phi), prob


def imh(theory: Phi4, key, current, log_q_current, proposal, log_q_proposal):
    """Independence Metropolis for exp(-S) with proposal density q (both log q at the same theta).

    **Returns:** `(fields, accepted (bool per chain), log importance weight of the proposals)`.
    """
    log_w_prop = -theory.action(proposal) - log_q_proposal
    log_w_cur = -theory.action(current) - log_q_current
    log_ratio = log_w_prop - log_w_cur
    u = jax.random.uniform(key, log_ratio.shape, current.dtype)
    accept = jnp.log(u) < log_ratio  # False for NaN
    shape = (-1,) + (1,) * theory.lattice.dim
    return jnp.where(accept.reshape(shape), proposal, current), accept, log_w_prop


def effective_sample_size(log_w) -> jax.Array:
    """ESS / n = (sum w)^2 / (n sum w^2) from log importance weights (in (0, 1])."""
    log_w = log_w - jnp.max(log_w)
    w = jnp.exp(log_w)
    return jnp.sum(w) ** 2 / (log_w.shape[0] * jnp.sum(w**2))
