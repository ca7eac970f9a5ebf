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

UV samples (the training loop after [5.22], `rgdiff.train.cnf`): a Markov chain per batch entry
that leaves exp(-S) invariant, each step an independence-Metropolis step (`rgdiff.samplers.imh`)
whose proposal is the flow's own fresh sample phi' ~ p_0^theta (the reverse-KL part's draws), then
optionally k Fourier-accelerated HMC trajectories on S (`rgdiff.samplers.hmc.hmc_refresh`). Both are exact for exp(-S)
whatever the flow; the flow only sets the acceptance.
"""

from __future__ import annotations

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
