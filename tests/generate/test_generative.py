"""Reverse SDE [5.25] and probability-flow ODE [6.14] against closed forms.

Reference model: `GaussianFlowScore`, the exact score of the free UV field (m2 = 4) flowed by
Carosso-M (M = 1), on a 4 x 4 lattice with L = 2 (eps = 1/2, so every eps^d factor is tested);
w = |phat|^2 + M^2 ranges over [1, 33]. With T = 6 the stationary prior differs from the exact
marginal p_T by a relative e^{-12} ~ 6e-6 on the slowest mode: far below the statistical errors.
Where a test needs the identity exactly it starts from the exact marginal (`prior_spectrum`).

Statistical criterion: n independent samples; per Fourier mode the ratio
r(p) = L^d |phi~(p)|^2 / G(p) has mean 1; z = (mean r - 1) / (std r / sqrt n). Every mode must
have |z| < 4 and the per-sample average over modes ("pooled") |z| < 4. (10 independent modes:
false alarm rate ~1e-3 per test.)
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice, Phi4
from rgdiff.errors import InvalidSamplerSettingsError, InvalidSchemeError, InvalidTheoryError, RgdiffError
from rgdiff.theory.gaussian import free_field_spectrum, gaussian_field_log_prob, gaussian_field_score, sample_gaussian_field
from rgdiff.generate.diffusion import LikelihoodUnavailableError, cap_steps, characteristic_time, decode, encode, forward_drift, log_likelihood, noise_covariance_apply, probability_flow_divergence, probability_flow_field, reverse_drift, reverse_sde, sample_ode, sample_reverse_sde, stability_caps, time_grid
from rgdiff.models.base import AbstractExactScoreModel, AbstractScoreModel
from rgdiff.models.gaussian_score import GaussianFlowScore
from rgdiff.rg import Carosso, Polchinski, flowed_spectrum

LAT = Lattice(2, 4, 2.0)
M2_UV = 4.0
SCHEME = Carosso(1.0)
T = 6.0
N_SAMPLES = 4096


def spectrum_z(phi, spectrum_full, lattice=LAT):
    """(max_p |z(p)|, pooled z) of L^d |phi~(p)|^2 / G(p) against 1."""
    modes = np.asarray(lattice.fourier(jnp.asarray(phi)))
    n = modes.shape[0]
    ratio = (lattice.volume * np.abs(modes) ** 2 / np.asarray(spectrum_full)).reshape(n, -1)
    z = (ratio.mean(0) - 1.0) / (ratio.std(0, ddof=1) / np.sqrt(n))
    pooled = ratio.mean(1)
    return float(np.max(np.abs(z))), float((pooled.mean() - 1.0) / (pooled.std(ddof=1) / np.sqrt(n)))


def flowed_full(t, scheme=SCHEME):
    """G_t = a_t^2 G_0 + v_t on the full grid."""
    a, v = scheme.kernel(t, LAT, half=False)
    return a**2 * free_field_spectrum(LAT, M2_UV, half=False) + v


def exact_marginal(t, scheme=SCHEME):
    return flowed_spectrum(scheme, LAT, free_field_spectrum(LAT, M2_UV), t)


@pytest.fixture(scope="module")
def model():
    return GaussianFlowScore.free_field(LAT, SCHEME, M2_UV)


class NoDivergence(AbstractScoreModel):
    """The exact Gaussian score, but as a model without an exact divergence (like a generic network)."""

    inner: GaussianFlowScore
    lattice: Lattice = eqx.field(static=True)

    def __init__(self, *args):
        self.inner = GaussianFlowScore(*args)
        self.lattice = self.inner.lattice

    def __call__(self, phi, t):
        return self.inner(phi, t)


# the reference model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", [Carosso(1.0, noise=0.5, speed=1.5), Polchinski(0.5), Polchinski(1.0, "exponential")],
    ids=["carosso", "polchinski-slow", "polchinski-exp"],
)
def test_gaussian_flow_score_is_exact(scheme, getkey):
    model = GaussianFlowScore.free_field(LAT, scheme, M2_UV, scale=1.3)
    phi = jax.random.normal(getkey(), LAT.shape)
    for t in (0.0, 0.01, 0.7):
        spectrum = flowed_spectrum(scheme, LAT, 1.3 * free_field_spectrum(LAT, M2_UV), t)
        np.testing.assert_allclose(model(phi, t), gaussian_field_score(phi, LAT, spectrum), rtol=1e-12, atol=1e-12)
        trace = jnp.trace(jax.jacfwd(lambda x: model(x, t))(phi).reshape(LAT.sites, LAT.sites))
        np.testing.assert_allclose(model.divergence(phi, t), trace, rtol=1e-12)
    # at t = 0 the exact model is the UV score -dS/dphi of the free theory [5.26]
    exact = GaussianFlowScore.free_field(LAT, scheme, M2_UV)
    np.testing.assert_allclose(exact(phi, 0.0), Phi4(LAT, M2_UV, 0.0).score(phi), rtol=1e-12, atol=1e-12)
    assert isinstance(model, AbstractExactScoreModel) and model.describe()["scale"] == 1.3


def test_gaussian_flow_score_refuses_bad_input():
    with pytest.raises(InvalidTheoryError, match="half grid"):
        GaussianFlowScore(LAT, SCHEME, free_field_spectrum(LAT, 1.0, half=False))
    with pytest.raises(InvalidTheoryError, match="positive"):
        GaussianFlowScore(LAT, SCHEME, -free_field_spectrum(LAT, 1.0))
    with pytest.raises(InvalidTheoryError, match="scale"):
        GaussianFlowScore.free_field(LAT, SCHEME, 1.0, scale=0.0)
    with pytest.raises(InvalidSchemeError):
        GaussianFlowScore(LAT, "carosso", free_field_spectrum(LAT, 1.0))


# vector fields ---------------------------------------------------------------------------------


def test_vector_fields_and_exact_divergence(getkey):
    """v = f - 1/2 G G^T s, div v = trace of its Jacobian (half-grid multiplicities, eps^-d, noise, speed)."""
    scheme = Carosso(1.0, noise=0.5, speed=1.5)
    model = GaussianFlowScore.free_field(LAT, scheme, M2_UV, scale=1.7)
    phi = jax.random.normal(getkey(), LAT.shape)
    for t in (0.0, 0.003, 0.4):
        f = forward_drift(scheme, LAT, phi, t)
        np.testing.assert_allclose(f, -scheme.speed * (-LAT.laplacian(phi) + phi), atol=1e-12)  # (Delta - M^2) phi
        ggs = noise_covariance_apply(scheme, LAT, model(phi, t), t)
        # Carosso: G G^T = 2 noise speed eps^-d (white noise)
        np.testing.assert_allclose(ggs, 2 * 0.5 * 1.5 / LAT.spacing**2 * model(phi, t), rtol=1e-12)
        v = probability_flow_field(model, scheme, phi, t)
        np.testing.assert_allclose(v, f - 0.5 * ggs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(reverse_drift(model, scheme, phi, t), f - ggs, rtol=1e-12, atol=1e-12)
        jac = jax.jacfwd(lambda x: probability_flow_field(model, scheme, x, t))(phi)
        trace = jnp.trace(jac.reshape(LAT.sites, LAT.sites))
        np.testing.assert_allclose(probability_flow_divergence(model, scheme, phi, t), trace, rtol=1e-11)


def test_time_grids():
    t_c = characteristic_time(SCHEME, LAT)
    assert t_c == pytest.approx(1.0 / 33.0)  # 1 / max_p (|phat|^2 + M^2) = 1 / (4 d N^2 / L^2 + 1)
    ts = time_grid(0.0, T, 64, t_c)
    assert ts[0] == 0.0 and ts[-1] == T and len(ts) == 65 and np.all(np.diff(ts) > 0)
    u = np.log1p(ts / t_c)  # uniform in log(1 + t / t_c)
    np.testing.assert_allclose(np.diff(u), np.diff(u)[0], rtol=1e-9)
    assert np.diff(ts)[0] < t_c / 5 and np.diff(ts)[-1] > 50 * np.diff(ts)[0]
    np.testing.assert_allclose(time_grid(0.5, 1.0, 5, grid="uniform"), np.linspace(0.5, 1.0, 6))
    capped = cap_steps(ts, t_c)
    assert np.max(np.diff(capped)) <= t_c * (1 + 1e-12) and set(ts) <= set(capped)
    # the stability caps follow the fastest local rate: constant for Carosso, e^{-2t} for Polchinski-exp
    np.testing.assert_allclose(stability_caps(SCHEME, LAT, ts), t_c)
    exp_caps = stability_caps(Polchinski(1.0, "exponential"), LAT, np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(exp_caps[1] / exp_caps[0], np.exp(-2.0))
    with pytest.raises(InvalidSamplerSettingsError):
        time_grid(0.0, 1.0, 4, grid="cubic")


# the probability-flow ODE ----------------------------------------------------------------------


@pytest.mark.parametrize("t_end", [0.0, 0.03, 0.5])
def test_ode_samples_have_flowed_spectrum(model, t_end, getkey):
    """(i), (v): from the stationary prior at T = 6, PF-ODE samples at t_end have G_t = a^2 G_0 + v."""
    phi, log_q = sample_ode(model, SCHEME, getkey(), N_SAMPLES, T=T, t_end=t_end, steps=32)
    assert phi.shape == (N_SAMPLES, *LAT.shape) and log_q.shape == (N_SAMPLES,) and phi.dtype == jnp.float64
    z_max, z_pooled = spectrum_z(phi, flowed_full(t_end))
    print(f"z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)


def test_ode_log_likelihood_is_exact(model, getkey):
    """(ii): log q of generated samples, and of `encode`, equal the exact Gaussian log density."""
    prior = exact_marginal(T)  # start from the exact p_T, so that q = p_0 exactly
    phi, log_q = sample_ode(model, SCHEME, getkey(), 64, T=T, steps=64, prior_spectrum=prior)
    exact = gaussian_field_log_prob(phi, LAT, free_field_spectrum(LAT, M2_UV))
    np.testing.assert_allclose(log_q, exact, rtol=1e-7)
    encoded = log_likelihood(model, SCHEME, phi, T=T, steps=64, prior_spectrum=prior)
    np.testing.assert_allclose(encoded, exact, rtol=1e-7)
    # adaptive step sizes (PID controller) agree too
    _, log_q_adaptive = encode(model, SCHEME, phi, T=T, rtol=1e-9, prior_spectrum=prior)
    np.testing.assert_allclose(log_q_adaptive, exact, rtol=1e-7)
    # from the stationary prior G_inf = 1/w the exact flow map gives the Gaussian G_0 G_inf / G_T:
    # this checks that the prior's own log density enters with the right normalization
    phi, log_q = sample_ode(model, SCHEME, getkey(), 64, T=1.0, steps=64)
    pushed = free_field_spectrum(LAT, M2_UV) * SCHEME.prior_spectrum(LAT) / exact_marginal(1.0)
    np.testing.assert_allclose(log_q, gaussian_field_log_prob(phi, LAT, pushed), rtol=1e-7)


def test_encode_decode_round_trip(model, getkey):
    """(iii): encode is the exact flow map phi~_T = sqrt(G_T / G_0) phi~_0, and decode inverts it."""
    phi0 = sample_gaussian_field(getkey(), LAT, free_field_spectrum(LAT, M2_UV), (64,))
    phi_T, log_q0 = encode(model, SCHEME, phi0, T=T, steps=64)
    gain = jnp.sqrt(exact_marginal(T) / free_field_spectrum(LAT, M2_UV))
    expected = LAT.fourier_multiply(phi0, gain)
    np.testing.assert_allclose(phi_T, expected, rtol=1e-6, atol=1e-8)
    back, log_q_back = decode(model, SCHEME, phi_T, T=T, steps=64)
    np.testing.assert_allclose(back, phi0, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(log_q_back, log_q0, rtol=1e-7)
    # a single configuration (no batch axis) works too
    single, _ = encode(model, SCHEME, phi0[0], T=T, steps=64)
    assert single.shape == LAT.shape
    np.testing.assert_allclose(single, phi_T[0], rtol=1e-12, atol=1e-14)


# the reverse SDE -------------------------------------------------------------------------------


@pytest.mark.parametrize("t_end", [0.0, 0.05])
def test_reverse_sde_euler_maruyama(model, t_end, getkey):
    """(iv), (v): Euler-Maruyama, log grid of 512 steps (bias ~ du/2 ~ 0.5% per mode, < 1/4 of the error)."""
    phi = sample_reverse_sde(model, SCHEME, getkey(), N_SAMPLES, T=T, t_end=t_end, steps=512, solver="euler")
    assert phi.shape == (N_SAMPLES, *LAT.shape) and phi.dtype == jnp.float64
    z_max, z_pooled = spectrum_z(phi, flowed_full(t_end))
    print(f"z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)


@pytest.mark.parametrize("t_end", [0.0, 0.05])
def test_reverse_sde_exponential_integrator_is_exact_around_its_reference(model, t_end, getkey):
    """The default solver: with the exact score of a Gaussian whose spectrum is the reference, every
    step is the exact reverse transition, so 4 steps from T give the exact flowed spectrum."""
    reference = free_field_spectrum(LAT, M2_UV)
    phi = sample_reverse_sde(model, SCHEME, getkey(), N_SAMPLES, T=T, t_end=t_end, steps=4, reference_spectrum=reference)
    z_max, z_pooled = spectrum_z(phi, flowed_full(t_end))
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)


def test_reverse_sde_exponential_integrator_converges_around_another_reference(model, getkey):
    """Around the stationary law's spectrum (the default reference) only the model's departure from
    it is explicit: 4 steps are visibly off, 256 exact within errors, with no step-size cap."""
    coarse = sample_reverse_sde(model, SCHEME, getkey(), N_SAMPLES, T=T, steps=4)
    assert spectrum_z(coarse, flowed_full(0.0))[0] > 8
    phi = sample_reverse_sde(model, SCHEME, getkey(), N_SAMPLES, T=T, steps=256)
    z_max, z_pooled = spectrum_z(phi, flowed_full(0.0))
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)


class TwoVacua(AbstractScoreModel):
    """The exact score of p_0 = 1/2 [N(+mu 1, C) + N(-mu 1, C)] flowed by a linear scheme: two free
    fields (spectrum G_0) about the constant fields +-mu, the broken phase's shape in closed form.
    With var_M(t) = G_t(0) / L^d and mu_t = a_t(0) mu: s(phi) = s_C(phi - mu_t tanh(mu_t M / var_M) 1)."""

    inner: GaussianFlowScore
    mu: float
    lattice: Lattice = eqx.field(static=True)

    def __init__(self, lattice, scheme, spectrum, mu):
        self.inner = GaussianFlowScore(lattice, scheme, spectrum)
        self.mu = mu
        self.lattice = lattice

    def __call__(self, phi, t):
        a, v = self.inner.scheme.kernel(t, self.lattice, phi.dtype)
        zero = (0,) * self.lattice.dim
        var_m = (a[zero] ** 2 * self.inner.spectrum0[zero] + v[zero]) / self.lattice.volume
        mu_t = a[zero] * self.mu
        return self.inner(phi - mu_t * jnp.tanh(mu_t * jnp.mean(phi) / var_m), t)


def test_reverse_sde_exponential_integrator_with_one_reference_per_vacuum(getkey):
    """Broken phase in closed form (`TwoVacua`, peaks 8 sigma_M apart at t = 0): with the reference
    (G_0, vacuum = mu) every field ends in one vacuum, with <|M|> = mu and, about its vacuum, the
    free spectrum G_0 on every mode, the zero mode included."""
    spectrum, mu = free_field_spectrum(LAT, M2_UV), 1.0
    model = TwoVacua(LAT, SCHEME, spectrum, mu)
    phi = sample_reverse_sde(model, SCHEME, getkey(), N_SAMPLES, T=T, steps=64, reference_spectrum=spectrum,
                             reference_vacuum=mu)
    m = np.asarray(jnp.mean(phi, axis=(-2, -1)))
    sign = np.where(m >= 0, 1.0, -1.0)
    assert 0.4 < np.mean(sign > 0) < 0.6  # both vacua, equally
    z_max, z_pooled = spectrum_z(np.asarray(phi) - sign[:, None, None] * mu, flowed_full(0.0))
    print(f"z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)
    with pytest.raises(InvalidSamplerSettingsError, match="reference_vacuum"):
        sample_reverse_sde(model, SCHEME, getkey(), 2, T=T, reference_spectrum=spectrum, reference_vacuum=-1.0)


def test_reverse_sde_diffrax_shark(model, getkey):
    """(iv) with diffrax ShARK (additive noise, strong order 1.5) on a fixed-step Brownian path."""
    phi = sample_reverse_sde(model, SCHEME, getkey(), N_SAMPLES, T=T, steps=64, solver="shark", brownian="unsafe")
    z_max, z_pooled = spectrum_z(phi, flowed_full(0.0))
    print(f"z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)


def test_reverse_sde_diffrax_virtual_brownian_tree(model, getkey):
    """The VirtualBrownianTree path (slow on CPU: fewer samples and a shorter run from the exact p_T)."""
    phi = sample_reverse_sde(
        model, SCHEME, getkey(), 1024, T=1.0, steps=32, solver="heun", prior_spectrum=exact_marginal(1.0)
    )
    z_max, z_pooled = spectrum_z(phi, flowed_full(0.0))
    print(f"z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)


@pytest.mark.parametrize(
    "scheme, T_flow",
    [(Polchinski(1.0), 2.0), (Polchinski(1.0, "exponential"), 1.5)],
    ids=["polchinski-K-exp-wt", "polchinski-exponential"],
)
def test_reverse_sde_coloured_noise_polchinski(scheme, T_flow, getkey):
    """Polchinski's gamma_t(p) is coloured: the SDE handles it (exact marginal as prior). The
    exponential profile's rates grow like e^{2t}: the stability cap follows them."""
    model = GaussianFlowScore.free_field(LAT, scheme, M2_UV)
    prior = exact_marginal(T_flow, scheme)
    phi = sample_reverse_sde(model, scheme, getkey(), N_SAMPLES, T=T_flow, steps=256, prior_spectrum=prior)
    z_max, z_pooled = spectrum_z(phi, flowed_full(0.0, scheme))
    print(f"z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)
    # the exponential integrator, given a reference at t = 0 (here a wrong one: m2 = 1 instead of 4)
    phi = sample_reverse_sde(
        model, scheme, getkey(), N_SAMPLES, T=T_flow, steps=64, prior_spectrum=prior,
        reference_spectrum=free_field_spectrum(LAT, 1.0),
    )
    z_max, z_pooled = spectrum_z(phi, flowed_full(0.0, scheme))
    print(f"exp: z_max = {z_max:.2f}, z_pooled = {z_pooled:.2f}")
    assert z_max < 4 and abs(z_pooled) < 4, (z_max, z_pooled)
    # the ODE samples too, without a log density
    phi, log_q = sample_ode(model, scheme, getkey(), 8, T=T_flow, prior_spectrum=prior, log_prob=False)
    assert log_q is None and phi.shape == (8, *LAT.shape) and bool(jnp.all(jnp.isfinite(phi)))


# refusals --------------------------------------------------------------------------------------


def test_refuses_likelihood_with_coloured_noise(getkey):
    scheme = Polchinski(1.0)
    model = GaussianFlowScore.free_field(LAT, scheme, M2_UV)
    phi = jnp.zeros((2, *LAT.shape))
    prior = exact_marginal(2.0, scheme)
    with pytest.raises(InvalidSchemeError, match="p-independent noise such as Carosso"):
        log_likelihood(model, scheme, phi, T=2.0, prior_spectrum=prior)
    with pytest.raises(InvalidSchemeError, match="p-independent noise"):
        sample_ode(model, scheme, getkey(), 2, T=2.0, prior_spectrum=prior)
    with pytest.raises(InvalidSchemeError, match="no stationary law"):  # and no prior for Polchinski
        sample_reverse_sde(model, scheme, getkey(), 2, T=2.0)


def test_refuses_likelihood_without_exact_divergence(getkey):
    model = NoDivergence(LAT, SCHEME, free_field_spectrum(LAT, M2_UV))
    with pytest.raises(LikelihoodUnavailableError, match="no exact divergence"):
        log_likelihood(model, SCHEME, jnp.zeros(LAT.shape), T=T)
    with pytest.raises(RgdiffError):
        sample_ode(model, SCHEME, getkey(), 2, T=T)
    # sampling works for any model
    assert sample_reverse_sde(model, SCHEME, getkey(), 2, T=T, steps=8).shape == (2, *LAT.shape)
    assert sample_ode(model, SCHEME, getkey(), 2, T=T, steps=8, log_prob=False)[0].shape == (2, *LAT.shape)


def test_refuses_bad_settings(model, getkey):
    phi = jnp.zeros((2, *LAT.shape))
    with pytest.raises(InvalidSamplerSettingsError, match="ODE solver"):
        encode(model, SCHEME, phi, T=T, solver="rk45")
    with pytest.raises(InvalidSamplerSettingsError, match="SDE solver"):
        reverse_sde(model, SCHEME, getkey(), phi, T=T, solver="milstein")
    with pytest.raises(InvalidSamplerSettingsError, match="steps"):
        encode(model, SCHEME, phi, T=T, steps=0)
    with pytest.raises(InvalidSamplerSettingsError, match="n must be"):
        sample_ode(model, SCHEME, getkey(), 0, T=T)
    with pytest.raises(InvalidSchemeError, match="forward only"):
        decode(model, SCHEME, phi, T=1.0, t_end=2.0)
    with pytest.raises(InvalidSchemeError, match=">= 0"):
        decode(model, SCHEME, phi, T=-1.0)
    with pytest.raises(InvalidSchemeError, match="empty"):
        decode(model, SCHEME, phi, T=1.0, t_end=1.0)
    with pytest.raises(RgdiffError, match="shape"):
        encode(model, SCHEME, jnp.zeros((2, 3, 3)), T=T)
    with pytest.raises(InvalidSchemeError, match="prior_spectrum"):
        decode(model, SCHEME, phi, T=T, prior_spectrum=jnp.ones(3))
    with pytest.raises(InvalidSchemeError, match="no stationary law"):
        sample_ode(GaussianFlowScore.free_field(LAT, Carosso(0.0), M2_UV), Carosso(0.0), getkey(), 2, T=T)
