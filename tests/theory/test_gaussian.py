"""Gaussian fields from a continuum-normalized spectrum, against dense multivariate normals.

Reference: the covariance matrix written out site by site,
C[n, m] = L^-d sum_p G(p) cos(2 pi p.(n - m) / N), and the textbook multivariate normal density
-1/2 x^T C^-1 x - 1/2 log det(2 pi C). Statistical checks use z = (estimate - exact) / standard
error with |z| < 5 per entry (Bonferroni over at most a few hundred entries) and |z| < 4 pooled.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice
from rgdiff.errors import InvalidTheoryError
from rgdiff.theory.gaussian import free_field_spectrum, gaussian_field_log_prob, gaussian_field_score, sample_gaussian_field, standard_half_spectrum_noise, two_point_function

# even and odd N, d = 1, 2, 3, and L != N so that eps != 1 shows up
TINY_LATTICES = [Lattice(1, 4, 2.0), Lattice(1, 5, 1.3), Lattice(2, 4, 3.0), Lattice(2, 3, 1.0), Lattice(3, 2, 0.7)]
STATISTICS_LATTICES = [Lattice(1, 5, 1.3), Lattice(2, 4, 3.0), Lattice(2, 3, 1.0)]  # odd, even, odd in d = 2


def even_spectrum(lattice, half=True):
    """A non-free, even spectrum: the code must not rely on G = 1/(p^2 + m2)."""
    phat_sq = np.asarray(lattice.phat_sq())
    full = (1.0 + 0.3 * np.cos(phat_sq)) / (phat_sq + 0.7)
    return full[..., : lattice.size // 2 + 1] if half else full


def dense_covariance(lattice, spectrum_full):
    sites = list(itertools.product(range(lattice.size), repeat=lattice.dim))
    cov = np.zeros((len(sites), len(sites)))
    for i, n in enumerate(sites):
        for j, m in enumerate(sites):
            phases = [2 * np.pi * np.dot(p, np.subtract(n, m)) / lattice.size for p in sites]
            cov[i, j] = sum(spectrum_full[p] * np.cos(ph) for p, ph in zip(sites, phases, strict=True)) / lattice.volume
    return cov


def dense_log_prob(x, cov):
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    return -0.5 * np.einsum("bi,ij,bj->b", x, np.linalg.inv(cov), x) - 0.5 * logdet


@pytest.mark.parametrize("lattice", TINY_LATTICES, ids=str)
def test_log_prob_and_score_match_dense_normal(lattice):
    rng = np.random.default_rng(0)
    cov = dense_covariance(lattice, even_spectrum(lattice, half=False))
    phi = rng.normal(size=(2, 3) + lattice.shape)
    mean = rng.normal(size=lattice.shape)
    x = (phi - mean).reshape(6, -1)

    log_prob = gaussian_field_log_prob(phi, lattice, even_spectrum(lattice), mean=mean)
    assert log_prob.shape == (2, 3)
    np.testing.assert_allclose(log_prob.reshape(-1), dense_log_prob(x, cov), rtol=1e-12, atol=1e-10)

    score = gaussian_field_score(phi, lattice, even_spectrum(lattice), mean=mean)
    dense_score = -(np.linalg.solve(cov, x.T)).T.reshape(phi.shape)
    np.testing.assert_allclose(score, dense_score, rtol=1e-10, atol=1e-10)


def test_score_is_gradient_of_log_prob():
    lattice = Lattice(2, 3, 1.0)
    phi = jax.random.normal(jax.random.key(1), (3,) + lattice.shape)
    spectrum = even_spectrum(lattice)
    autodiff = jax.grad(lambda f: jnp.sum(gaussian_field_log_prob(f, lattice, spectrum)))(phi)
    np.testing.assert_allclose(gaussian_field_score(phi, lattice, spectrum), autodiff, rtol=1e-12, atol=1e-12)


def test_free_field_score_is_minus_grad_action():
    """G = 1/(p^2 + m2) gives the free action's score eps^d (Delta phi - m2 phi) [7.2]."""
    from rgdiff import Phi4

    lattice = Lattice(2, 5, 2.5)
    theory = Phi4(lattice, 0.8, 0.0)
    phi = jax.random.normal(jax.random.key(2), (2,) + lattice.shape)
    score = gaussian_field_score(phi, lattice, free_field_spectrum(lattice, 0.8))
    np.testing.assert_allclose(score, theory.score(phi), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lattice", STATISTICS_LATTICES, ids=str)
def test_samples_have_the_dense_covariance(lattice, getkey):
    n_samples = 8192
    cov = dense_covariance(lattice, even_spectrum(lattice, half=False))
    phi = np.asarray(sample_gaussian_field(getkey(), lattice, even_spectrum(lattice), (n_samples,)))
    x = phi.reshape(n_samples, -1)
    products = x[:, :, None] * x[:, None, :]
    estimate = products.mean(0)
    stderr = products.std(0, ddof=1) / np.sqrt(n_samples)
    z = (estimate - cov) / stderr
    assert np.max(np.abs(z)) < 5, f"max |z| = {np.max(np.abs(z)):.2f}"
    z_mean = x.mean(0) / (x.std(0, ddof=1) / np.sqrt(n_samples))
    assert np.max(np.abs(z_mean)) < 5


@pytest.mark.parametrize("lattice", STATISTICS_LATTICES, ids=str)
def test_half_spectrum_noise_is_hermitian_with_unit_variance(lattice, getkey):
    """The drawn half spectrum is exactly that of a real field (no silent projection by irfftn),
    self-conjugate modes are real, and E|z|^2 = 1 on every mode."""
    n_samples = 8192
    z = standard_half_spectrum_noise(getkey(), lattice, (n_samples,))
    round_trip = lattice.rfourier(lattice.inverse_rfourier(z))
    np.testing.assert_allclose(round_trip, z, atol=1e-13)
    real = lattice.real_mode_mask_half()
    assert np.all(np.asarray(jnp.imag(z))[:, real] == 0)
    power = np.abs(np.asarray(z)) ** 2
    stderr = power.std(0, ddof=1) / np.sqrt(n_samples)
    assert np.max(np.abs((power.mean(0) - 1.0) / stderr)) < 5


def test_spectrum_batch_axes_and_dtype(getkey):
    lattice = Lattice(2, 4, 3.0)
    spectra = np.stack([even_spectrum(lattice), 2.0 * even_spectrum(lattice)])  # (2, *half)
    phi = sample_gaussian_field(getkey(), lattice, spectra, batch_shape=(5, 2), dtype=jnp.float32)
    assert phi.shape == (5, 2) + lattice.shape and phi.dtype == jnp.float32
    log_prob = gaussian_field_log_prob(phi, lattice, spectra)
    assert log_prob.shape == (5, 2) and log_prob.dtype == jnp.float32
    # the second spectrum is the first scaled by 2: log p_2(phi) = log p_1(phi / sqrt 2) - V log(sqrt 2)
    phi64 = phi.astype(jnp.float64)
    lhs = gaussian_field_log_prob(phi64[:, 1], lattice, spectra[1])
    rhs = gaussian_field_log_prob(phi64[:, 1] / np.sqrt(2.0), lattice, spectra[0]) - lattice.sites * np.log(
        np.sqrt(2.0)
    )
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("lattice", [Lattice(1, 5, 1.3), Lattice(2, 4, 3.0)], ids=str)
def test_two_point_function_matches_dense_covariance(lattice):
    cov = dense_covariance(lattice, even_spectrum(lattice, half=False))
    c_r = np.asarray(two_point_function(lattice, even_spectrum(lattice))).reshape(-1)
    np.testing.assert_allclose(c_r, cov[0], rtol=1e-12, atol=1e-14)  # row of site 0: C(0, r)


def test_free_field_spectrum_needs_positive_mass():
    lattice = Lattice(2, 4, 1.0)
    np.testing.assert_allclose(free_field_spectrum(lattice, 2.0, half=False), 1.0 / (lattice.phat_sq() + 2.0))
    with pytest.raises(InvalidTheoryError, match="m2 > 0"):
        free_field_spectrum(lattice, 0.0)


# the noise source -----------------------------------------------------------------------------


def test_threefry_is_jaxs_hash_bit_for_bit():
    """The fused threefry of `rgdiff.theory.gaussian` is JAX's threefry-2x32, word for word."""
    import jax.extend.random

    from rgdiff.theory.gaussian import _threefry2x32

    pair = (jnp.uint32(0x12345678), jnp.uint32(0x9ABCDEF0))
    x0 = jax.lax.iota(jnp.uint32, 4096)
    x1 = jnp.full((4096,), 3, jnp.uint32)
    ours = jax.jit(_threefry2x32)(*pair, x0, x1)
    theirs = jax.extend.random.threefry2x32_p.bind(*pair, x0, x1)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_noise_is_a_function_of_the_key(dtype):
    """Same key, same noise (bitwise), for typed keys of any implementation and legacy raw keys;
    another key, other noise. A resumed run restores its key from a checkpoint and redraws this."""
    lattice = Lattice(2, 6, 6.0)
    for key in (jax.random.key(3), jax.random.PRNGKey(3), jax.random.key(3, impl="rbg")):
        a = np.asarray(standard_half_spectrum_noise(key, lattice, (4,), dtype))
        b = np.asarray(standard_half_spectrum_noise(key, lattice, (4,), dtype))
        np.testing.assert_array_equal(a, b)
        assert a.dtype == (np.complex64 if dtype == jnp.float32 else np.complex128)
    other = np.asarray(standard_half_spectrum_noise(jax.random.key(4), lattice, (4,), dtype))
    assert not np.any(other == a)
    # a stored key's data wraps back to the same key, hence the same noise
    key = jax.random.key(3)
    rewrapped = jax.random.wrap_key_data(np.asarray(jax.random.key_data(key)))
    np.testing.assert_array_equal(
        np.asarray(standard_half_spectrum_noise(rewrapped, lattice, (4,), dtype)),
        np.asarray(standard_half_spectrum_noise(key, lattice, (4,), dtype)),
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_unit_complex_normal_moments(dtype, getkey):
    """Independent N(0, 1/2) parts: mean 0, variance 1/2 each, uncorrelated, Gaussian fourth
    moment (3/4), within 5 standard errors; a variance off by 2% would be seen (power check)."""
    from rgdiff.theory.gaussian import unit_complex_normal

    n = 2**20
    re, im = (np.asarray(x, np.float64).ravel() for x in unit_complex_normal(getkey(), (n,), dtype))
    for x in (re, im):
        assert abs(x.mean()) / np.sqrt(0.5 / n) < 5
        sq = x**2
        assert abs(sq.mean() - 0.5) / (sq.std() / np.sqrt(n)) < 5
        q = x**4
        assert abs(q.mean() - 0.75) / (q.std() / np.sqrt(n)) < 5
        # power: noise with variance 0.51 instead of 0.5 fails the same criterion
        wrong = sq * 1.02
        assert abs(wrong.mean() - 0.5) / (wrong.std() / np.sqrt(n)) > 5
    prod = re * im
    assert abs(prod.mean()) / (prod.std() / np.sqrt(n)) < 5
    # independence beyond correlation: |z|^2 is exponential with mean 1 (variance 1)
    power = re**2 + im**2
    assert abs(power.var(ddof=1) - 1.0) / np.sqrt(8.0 / n) < 5  # var of the sample variance of Exp(1) ~ 8/n
