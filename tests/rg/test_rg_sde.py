"""Position-space RG SDEs (diffrax) against the exact Gaussian kernels.

Statistical criterion: B independent paths. For every Fourier mode, the residual
r(p) = phi~_t(p) - a_t(p) phi~_0(p) must have mean 0 (real and imaginary parts, |z| < 5 per
component) and L^d <|r|^2> = v_t(p) (|z| < 5 per mode, |z| < 4 for the per-path average over
modes), with z = (estimate - exact) / standard error. Step sizes are chosen so that the
Euler-Maruyama bias (relative O(beta dt / 2): <= 0.25% on the stiffest mode, 0.16% averaged over modes) stays
well below the per-mode standard error (2.2% with 2048 paths).
"""

import itertools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice, Phi4
from rgdiff.errors import InvalidSchemeError
from rgdiff.theory.gaussian import free_field_spectrum, sample_gaussian_field
from rgdiff.rg import Carosso, Polchinski, SeedForce, diffusion_function, drift_function, simulate_sde

LAT = Lattice(2, 4, 4.0)  # lattice units, |phat|^2 in [0, 8]
N_PATHS = 4096


def kernel_z_scores(phi_t, phi0, scheme, t, lattice):
    """(max |z| of the mean, max per-mode |z| of the variance, pooled z of the variance)."""
    a, v = scheme.kernel(t, lattice, half=False)
    residual = np.asarray(lattice.fourier(phi_t)) - np.asarray(a) * np.asarray(lattice.fourier(phi0))
    n = residual.shape[0]
    parts = np.concatenate([residual.real.reshape(n, -1), residual.imag.reshape(n, -1)], axis=1)
    spread = parts.std(0, ddof=1)
    random = spread > 0  # imaginary parts of self-conjugate modes vanish identically
    z_mean = parts.mean(0)[random] / (spread[random] / np.sqrt(n))
    ratio = (lattice.volume * np.abs(residual) ** 2 / np.asarray(v)).reshape(n, -1)
    z_var = (ratio.mean(0) - 1.0) / (ratio.std(0, ddof=1) / np.sqrt(n))
    pooled = ratio.mean(1)
    z_pooled = (pooled.mean() - 1.0) / (pooled.std(ddof=1) / np.sqrt(n))
    return np.max(np.abs(z_mean)), np.max(np.abs(z_var)), z_pooled


@pytest.fixture(scope="module")
def phi0():
    """One fixed UV configuration (a free-field sample), the same for every path."""
    field = sample_gaussian_field(jax.random.key(11), LAT, free_field_spectrum(LAT, 1.0))
    return jnp.broadcast_to(field, (N_PATHS,) + LAT.shape)


@pytest.mark.parametrize("scheme", [Carosso(1.0), Polchinski(1.0)], ids=["carosso-M1", "polchinski-M1-K-exp-wt"])
def test_euler_maruyama_reproduces_exact_kernel(scheme, phi0, getkey):
    t1, dt = 0.2, 5e-4
    phi0 = phi0[:2048]
    phi_t = simulate_sde(scheme, getkey(), phi0, t1, LAT, dt, solver=diffrax.Euler(), brownian="unsafe")
    assert phi_t.shape == phi0.shape and phi_t.dtype == phi0.dtype
    z_mean, z_var, z_pooled = kernel_z_scores(phi_t, phi0[0], scheme, t1, LAT)
    assert z_mean < 5 and z_var < 5 and abs(z_pooled) < 4, (z_mean, z_var, z_pooled)


def test_virtual_brownian_tree_path(phi0, getkey):
    """The default (VirtualBrownianTree) path, on 512 paths and 25 steps (its tree is costly)."""
    scheme = Carosso(1.0, noise=0.5)
    phi_t = simulate_sde(scheme, getkey(), phi0[:512], 0.1, LAT, 4e-3)
    z_mean, z_var, z_pooled = kernel_z_scores(phi_t, phi0[0], scheme, 0.1, LAT)
    assert z_mean < 5 and z_var < 5 and abs(z_pooled) < 4, (z_mean, z_var, z_pooled)


def test_carosso_noise_is_white_sqrt_2_eps_per_site():
    """gamma = 2: the diffusion is sqrt(2 eps^-d) times the identity on dW [5.20]."""
    lattice = Lattice(2, 4, 2.0)  # eps = 1/2
    operator = diffusion_function(Carosso(1.0), lattice)(0.3, jnp.zeros(lattice.shape), None)
    dense = jax.vmap(operator.mv)(jnp.eye(lattice.sites).reshape((-1,) + lattice.shape)).reshape(lattice.sites, -1)
    np.testing.assert_allclose(dense, np.sqrt(2.0 / lattice.spacing**2) * np.eye(lattice.sites), atol=1e-13)


def test_coloured_noise_has_rate_gamma_per_mode():
    """D D^T = eps^-d F^-1 gamma_t F, i.e. L^d <|noise~(p)|^2> = gamma_t(p) dt (Polchinski: gamma = K_t)."""
    lattice = Lattice(2, 3, 1.5)
    scheme = Polchinski(0.5)
    t = 0.4
    operator = diffusion_function(scheme, lattice)(t, jnp.zeros(lattice.shape), None)
    dense = np.asarray(
        jax.vmap(operator.mv)(jnp.eye(lattice.sites).reshape((-1,) + lattice.shape)).reshape(lattice.sites, -1)
    )
    gamma = np.exp(-(np.asarray(lattice.phat_sq()) + 0.25) * t)
    sites = list(itertools.product(range(3), repeat=2))
    expected = (
        np.array(
            [
                [sum(gamma[p] * np.cos(2 * np.pi * np.dot(p, np.subtract(n, m)) / 3) for p in sites) for m in sites]
                for n in sites
            ]
        )
        / lattice.volume
    )
    np.testing.assert_allclose(dense @ dense.T, expected, atol=1e-12)


def test_gaussian_seed_force_reproduces_linear_drift():
    """-gamma_t * eps^-d dS_seed/dphi with S_seed = L^d sum 1/2 (beta/gamma) |phi~|^2 is the linear drift."""
    phi = jax.random.normal(jax.random.key(0), LAT.shape)
    t = 0.37

    def drift(scheme, seed=None):
        return jax.jit(drift_function(scheme, LAT, seed))(t, phi, None)

    carosso = Carosso(1.0)  # beta/gamma = w/2: S_seed = S_M / 2
    seed = SeedForce(lambda s, f: 0.5 * Phi4(LAT, 1.0, 0.0).action(f), LAT)
    np.testing.assert_allclose(drift(carosso, seed), drift(carosso), atol=1e-12)
    np.testing.assert_allclose(drift(carosso), LAT.laplacian(phi) - phi, atol=1e-12)

    polchinski = Polchinski(1.0)  # slow profile: beta/gamma = w / K_t = w e^{w t}, the seed exp(-S/K_t)-like
    w = LAT.phat_sq() + 1.0

    def seed_action(s, f):
        return 0.5 * LAT.volume * jnp.sum(w * jnp.exp(w * s) * jnp.abs(LAT.fourier(f)) ** 2)

    np.testing.assert_allclose(drift(polchinski, SeedForce(seed_action, LAT)), drift(polchinski), atol=1e-12)


def test_quartic_seed_relaxes_to_exp_minus_two_seed_action(getkey):
    """A nonlinear seed [after 5.56]: with B = gamma = 2 and S_seed = S_phi4 / 2 the stationary law
    is exp(-2 S_seed) = exp(-S_phi4). Two sites (d = 1, N = 2, eps = 1): <phi(n)^2> from a 2D
    quadrature of exp(-S_phi4)."""
    lattice = Lattice(1, 2, 2.0)
    theory = Phi4(lattice, 1.0, 6.0)
    grid = np.linspace(-6.0, 6.0, 601)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    weights = np.exp(-np.asarray(theory.action(jnp.stack([x, y], axis=-1))))
    exact = np.sum(weights * x**2) / np.sum(weights)

    seed = SeedForce(lambda s, f: 0.5 * theory.action(f), lattice)
    phi = simulate_sde(
        Carosso(0.0), getkey(), jnp.zeros((N_PATHS, 2)), 4.0, lattice, 5e-3, seed_force=seed, brownian="unsafe"
    )
    squares = np.asarray(jnp.mean(phi**2, axis=-1))  # average the two (equivalent) sites per path
    z = (squares.mean() - exact) / (squares.std(ddof=1) / np.sqrt(N_PATHS))
    assert abs(z) < 4, (squares.mean(), exact, z)


def test_zero_duration_and_bad_input():
    phi = jnp.ones((2,) + LAT.shape)
    assert simulate_sde(Carosso(1.0), jax.random.key(0), phi, 0.3, LAT, 0.1, t0=0.3) is not None
    np.testing.assert_array_equal(simulate_sde(Carosso(1.0), jax.random.key(0), phi, 0.3, LAT, 0.1, t0=0.3), phi)
    for kwargs in (
        dict(t1=-0.1, dt=0.01),
        dict(t1=0.1, dt=0.0),
        dict(t1=0.1, dt=0.01, t0=0.2),
        dict(t1=0.1, dt=0.01, brownian="levy"),
    ):
        with pytest.raises(InvalidSchemeError):
            simulate_sde(Carosso(1.0), jax.random.key(0), phi, lattice=LAT, **kwargs)
