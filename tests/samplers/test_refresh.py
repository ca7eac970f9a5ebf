"""The Fourier-accelerated HMC refresh of a batch of UV chains and the importance-sampling ESS,
against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.lattice.geometry import Lattice
from rgdiff.samplers.imh import expected_acceptance, importance_ess, pareto_k
from rgdiff.samplers.hmc import hmc_refresh
from rgdiff.theory.phi4 import Phi4

LAT = Lattice(2, 4, 1.0)


def test_importance_ess_limits():
    assert float(importance_ess(jnp.array([0.0, -1e3, -1e3, -1e3]))) == pytest.approx(0.25)
    assert float(importance_ess(jnp.zeros(10))) == pytest.approx(1.0)


@pytest.mark.parametrize("width", [0.7, 1.5, 3.0])
def test_expected_acceptance_matches_the_imh_acceptance_integral(width):
    """`expected_acceptance` from proposals q = N(0, width^2) for pi = N(0, 1) against the double
    integral int pi(x) q(x') min(1, w(x') / w(x)) by quadrature; and its limits."""
    grid = np.linspace(-12 * max(width, 1.0), 12 * max(width, 1.0), 3001)
    dx = grid[1] - grid[0]
    pi = np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi)
    q = np.exp(-grid**2 / (2 * width**2)) / np.sqrt(2 * np.pi * width**2)
    w = pi / q
    exact = np.sum(pi[:, None] * q[None, :] * np.minimum(1.0, w[None, :] / w[:, None])) * dx * dx
    x = width * jax.random.normal(jax.random.key(3), (40_000,))
    log_w = -x**2 / 2 + x**2 / (2 * width**2) + jnp.log(width)
    assert float(expected_acceptance(log_w)) == pytest.approx(exact, abs=0.01)
    assert float(expected_acceptance(jnp.zeros(7))) == pytest.approx(1.0)  # q = pi: every proposal accepted
    assert float(expected_acceptance(jnp.array([0.0, -jnp.inf, -jnp.inf]))) == 0.0  # one state holds all the weight


@pytest.mark.parametrize("width", [0.6, 0.8])
def test_pareto_k_finds_the_weight_tail(width):
    """k-hat of the weights of q = N(0, s^2) for pi = N(0, 1) against the tail's shape 1 - s^2
    (P(w > t) ~ t^(-1/(1 - s^2)), up to a slowly varying factor), of Pareto weights against
    1 / alpha, and its bounded and equal-weight limits. From 40000 weights k-hat scatters by
    0.05-0.07 (20 seeds); the tolerance is about 3.5 of those."""
    x = width * jax.random.normal(jax.random.key(5), (40_000,), dtype=jnp.float64)
    assert pareto_k(x**2 / (2 * width**2) - x**2 / 2) == pytest.approx(1 - width**2, abs=0.22)
    pareto = jax.random.pareto(jax.random.key(6), 1 / (1 - width**2), (40_000,), dtype=jnp.float64)  # w >= 1
    assert pareto_k(jnp.log(pareto)) == pytest.approx(1 - width**2, abs=0.22)
    y = 1.5 * jax.random.normal(jax.random.key(7), (4_000,), dtype=jnp.float64)
    assert pareto_k(y**2 / (2 * 1.5**2) - y**2 / 2) < 0  # q wider than pi: bounded weights
    assert pareto_k(np.zeros(100)) == -np.inf
    assert pareto_k(np.array([0.0, -np.inf, 0.0])) == -np.inf


def test_hmc_keeps_the_free_field_variance():
    """HMC chains started at zero reach the exact per-site variance sum_p G(p) / L^d of a free field."""
    theory = Phi4(LAT, 0.5, 0.0)
    step = jax.jit(lambda k, x: hmc_refresh(theory, k, x, leapfrog=10))
    x = jnp.zeros((256,) + LAT.shape)
    acc, second = [], []
    for i in range(150):
        x, prob = step(jax.random.key(i), x)
        acc.append(float(jnp.mean(prob)))
        if i >= 50:
            second.append(np.asarray(jnp.mean(x**2, axis=(1, 2))))
    exact = float(jnp.sum(theory.free_propagator())) / LAT.volume
    chains = np.mean(second, axis=0)  # per-chain time averages: independent across chains
    assert abs(chains.mean() - exact) < 5 * chains.std() / np.sqrt(chains.size)
    assert np.mean(acc) > 0.5
