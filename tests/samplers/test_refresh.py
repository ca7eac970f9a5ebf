"""The Fourier-accelerated HMC refresh of a batch of UV chains and the importance-sampling ESS,
against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.lattice.geometry import Lattice
from rgdiff.samplers.imh import importance_ess
from rgdiff.samplers.hmc import hmc_refresh
from rgdiff.theory.phi4 import Phi4

LAT = Lattice(2, 4, 1.0)


def test_importance_ess_limits():
    assert float(importance_ess(jnp.array([0.0, -1e3, -1e3, -1e3]))) == pytest.approx(0.25)
    assert float(importance_ess(jnp.zeros(10))) == pytest.approx(1.0)


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
