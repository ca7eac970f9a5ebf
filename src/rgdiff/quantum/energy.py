"""Variational energy of Psi = sqrt(p) [6.13] in two forms, and the variational gradient.

With Psi = sqrt(p) and H = -1/2 eps^-d Lap + V:

- score form (what [6.13] integrates to by parts):
      E = E_p[ eps^-d/8 |grad log p|^2 + V ],
- local-energy form, E_loc = (H Psi)/Psi:
      E = E_p[ V - eps^-d/2 ( 1/2 Lap log p + 1/4 |grad log p|^2 ) ].

They agree in expectation (integration by parts); the local form has zero variance at an
eigenstate, the score form does not, and the local form needs Lap log p (an exact Hessian trace,
propagated along the flow as the trace of the (V, V) Hessian of log p, affordable for
<= LAPLACIAN_MAX_SITES sites).

Variational gradient: the reparameterised (pathwise) derivative of the score form,
grad_theta E = E_xi[ grad_theta ( eps^-d/8 |score_theta(phi_theta(xi))|^2 + V(phi_theta(xi)) ) ],
with xi the white noise fed to the flow. It is unbiased because the noise law does not depend on
theta; `tests/test_quantum_energy.py` checks it against the closed-form Gaussian energy.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.observables.stats import Estimate
from rgdiff.quantum.ansatz import FlowAnsatz
from rgdiff.quantum.hamiltonian import Hamiltonian

LAPLACIAN_MAX_SITES = 16  # the (V, V) Hessian flow costs O(V^3) per RK4 stage and sample


def score_form(h: Hamiltonian, phi, score):
    """Per-configuration eps^-d/8 |score|^2 + V(phi)."""
    return h.kinetic_prefactor() / 8.0 * jnp.sum(score**2, axis=h.axes) + h.potential(phi)


def local_form(h: Hamiltonian, phi, score, laplacian):
    """Per-configuration E_loc = V - eps^-d/2 (1/2 Lap log p + 1/4 |grad log p|^2)."""
    grad_sq = jnp.sum(score**2, axis=h.axes)
    return h.potential(phi) - 0.5 * h.kinetic_prefactor() * (0.5 * laplacian + 0.25 * grad_sq)


def mean_estimate(values) -> Estimate:
    """Mean of independent samples with its standard error (tau_int = 1/2)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return Estimate(float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)), 0.5)


def noise(key, h: Hamiltonian, n: int):
    return jax.random.normal(key, (n,) + h.shape)


@eqx.filter_jit
def energy_loss(model: FlowAnsatz, xi):
    """Score-form energy averaged over the batch of white noise `xi`: the training objective."""
    x, _, score = jax.vmap(model.flow)(xi)
    return jnp.mean(score_form(model.h, x, score))


@eqx.filter_jit
def sample(model: FlowAnsatz, xi):
    """Fields, log p_theta and scores (forward-propagated) for a batch of white noise."""
    return jax.vmap(model.flow)(xi)


@eqx.filter_jit
def sample_with_laplacian(model: FlowAnsatz, xi):
    """Fields, log p, scores and Lap log p (forward-propagated Hessian) for a batch of white noise."""
    return jax.vmap(lambda z: model.flow(z, hessian=True))(xi)


def estimate_energy(model: FlowAnsatz, key, samples: int, chunk: int = 512, local: bool | None = None) -> dict:
    """Score-form and (where affordable) local-form energies on the same samples, with errors.

    Returns the per-sample arrays too, for observables and tests.
    """
    h = model.h
    if local is None:
        local = h.sites <= LAPLACIAN_MAX_SITES
    xs, score_vals, local_vals = [], [], []
    for i, start in enumerate(range(0, samples, chunk)):
        n = min(chunk, samples - start)
        xi = noise(jax.random.fold_in(key, i), h, chunk)  # always a full chunk: one compiled shape
        if local:
            x, _, score, lap = (a[:n] for a in sample_with_laplacian(model, xi))
            local_vals.append(np.asarray(local_form(h, x, score, lap)))
        else:
            x, _, score = (a[:n] for a in sample(model, xi))
        xs.append(np.asarray(x))
        score_vals.append(np.asarray(score_form(h, x, score)))
    out = {"fields": np.concatenate(xs), "score_values": np.concatenate(score_vals)}
    out["score_form"] = mean_estimate(out["score_values"])
    if local:
        out["local_values"] = np.concatenate(local_vals)
        out["local_form"] = mean_estimate(out["local_values"])
    return out
