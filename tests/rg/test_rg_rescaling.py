"""Field rescalings [5.48]-[5.50] and the scheme-comparison constant [5.54], [5.55], against
kernels and constants computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice
from rgdiff.errors import InvalidSchemeError
from rgdiff.theory.gaussian import free_field_spectrum
from rgdiff.rg import Carosso, ExponentialScale, FieldRenormalized, Polchinski, Rescaled, WegnerMorris, comparison_constant, comparison_constant_from_fields

LAT = Lattice(2, 6, 6.0)
KAPPA = 0.3  # d/dt log c_t; below M^2 = 1, so the field-renormalized Carosso flow still damps every mode
W = np.asarray(LAT.phat_sq_half()) + 1.0  # w = |phat|^2 + M^2 with M = 1


def test_rescaled_kernel_is_the_push_forward_by_c_t():
    """phi_t -> c_t phi_t with c_t = e^{kappa t}: (a, v) -> (c_t/c_s a_{t|s}, c_t^2 v_{t|s})."""
    scheme = Rescaled(Carosso(1.0), ExponentialScale(KAPPA))
    t, s = 0.7, 0.2
    a, v = scheme.kernel(t, LAT)
    np.testing.assert_allclose(a, np.exp(KAPPA * t - W * t), rtol=1e-13)
    np.testing.assert_allclose(v, np.exp(2 * KAPPA * t) * -np.expm1(-2 * W * t) / W, rtol=1e-13)
    a, v = scheme.transition(s, t, LAT)
    np.testing.assert_allclose(a, np.exp((KAPPA - W) * (t - s)), rtol=1e-13)
    np.testing.assert_allclose(v, np.exp(2 * KAPPA * t) * -np.expm1(-2 * W * (t - s)) / W, rtol=1e-13)


@pytest.mark.parametrize("base", [Carosso(1.0), Polchinski(1.0, "exponential")], ids=["carosso", "polchinski-exp"])
def test_rescaled_rates_integrate_to_its_kernel(base):
    """The SDE form of the rescaled flow, beta - d/dt log c and c^2 gamma, integrates (quadrature)
    to the push-forward kernel: the position-space SDE of `Rescaled` is the right one."""
    scheme = Rescaled(base, ExponentialScale(KAPPA))
    quadrature = WegnerMorris(
        lambda t, w, lat: scheme.mode_rates(t, w, lat)[0], lambda t, w, lat: scheme.mode_rates(t, w, lat)[1]
    )
    times = jnp.array([0.1, 0.9])
    for got, want in zip(quadrature.kernel(times, LAT), scheme.kernel(times, LAT), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9)


def test_field_renormalized_flow_by_hand():
    """[5.50] with c_t = e^{kappa t}: d phi = (Delta - M^2 + kappa) phi dt + eta (eta unchanged), i.e.
    Carosso with w -> w - kappa. Its mean is c_t a_t like the push-forward's, its variance is not
    c_t^2 v_t."""
    t = 0.8
    scheme = FieldRenormalized(Carosso(1.0), ExponentialScale(KAPPA))
    a, v = scheme.kernel(t, LAT)
    shifted = W - KAPPA
    np.testing.assert_allclose(a, np.exp(-shifted * t), rtol=1e-10)
    np.testing.assert_allclose(v, -np.expm1(-2 * shifted * t) / shifted, rtol=1e-10)
    a_push, v_push = Rescaled(Carosso(1.0), ExponentialScale(KAPPA)).kernel(t, LAT)
    np.testing.assert_allclose(a, a_push, rtol=1e-10)
    assert np.all(np.asarray(v) < np.asarray(v_push))


def test_comparison_constant_for_proportional_fixed_points():
    """Carosso-M with noise 1 and 0.5 have the stationary laws 1/w and 0.5/w: phi_b = phi_a / sqrt 2
    exactly, at every separation. Speed only reparametrizes time: c = 1."""
    spectrum0 = free_field_spectrum(LAT, 1.0)
    for separation in [None, (1, 0), (2, 3)]:
        c = comparison_constant(Carosso(1.0), Carosso(1.0, noise=0.5), LAT, spectrum0, 50.0, 50.0, separation)
        np.testing.assert_allclose(c, 1 / np.sqrt(2), rtol=1e-12)
    c = comparison_constant(Carosso(0.5), Carosso(0.5, speed=2.0), LAT, spectrum0, 0.6, 0.3)
    np.testing.assert_allclose(c, 1.0, rtol=1e-13)


def test_comparison_constant_two_site_lattice_by_hand():
    """d = 1, N = 2, L = 2: |phat|^2 = 0 and 4, w = 1 and 5 (M = 1). From the free field of mass 1,
    Carosso-M stays at G = (1, 1/5); Polchinski-M (slow) reaches G = K_t/w = (e^{-t}, e^{-5t}/5).
    C(r) = (G(0) + (-1)^r G(1)) / L."""
    lattice = Lattice(1, 2, 2.0)
    t = 0.3
    spectrum0 = free_field_spectrum(lattice, 1.0)
    c0 = comparison_constant(Carosso(1.0), Polchinski(1.0), lattice, spectrum0, t, t)
    c1 = comparison_constant(Carosso(1.0), Polchinski(1.0), lattice, spectrum0, t, t, separation=1)
    np.testing.assert_allclose(c0**2, (np.exp(-t) + np.exp(-5 * t) / 5) / (1 + 1 / 5), rtol=1e-13)
    np.testing.assert_allclose(c1**2, (np.exp(-t) - np.exp(-5 * t) / 5) / (1 - 1 / 5), rtol=1e-13)


def test_comparison_constant_from_samples(getkey):
    """The sample estimate of c for the noise-1 and noise-0.5 stationary laws is 1/sqrt 2 within
    |z| < 4, the standard error taken from 16 independent batches."""
    phi_a = Carosso(1.0).prior_sample(getkey(), LAT, (4096,)).reshape((16, 256) + LAT.shape)
    phi_b = Carosso(1.0, noise=0.5).prior_sample(getkey(), LAT, (4096,)).reshape((16, 256) + LAT.shape)
    estimates = np.array([comparison_constant_from_fields(phi_a[i], phi_b[i], LAT) for i in range(16)])
    z = (estimates.mean() - 1 / np.sqrt(2)) / (estimates.std(ddof=1) / 4)
    assert abs(z) < 4, (estimates.mean(), z)


def test_bad_rescalings_are_refused():
    with pytest.raises(InvalidSchemeError, match="c\\(0\\) = 1"):
        Rescaled(Carosso(1.0), lambda t: 2.0 + t)
    with pytest.raises(InvalidSchemeError, match="function"):
        FieldRenormalized(Carosso(1.0), 1.0)
    with pytest.raises(InvalidSchemeError, match="linear RG scheme"):
        Rescaled("carosso", ExponentialScale(KAPPA))
    with pytest.raises(InvalidSchemeError, match="separation"):
        comparison_constant(Carosso(1.0), Polchinski(1.0), LAT, free_field_spectrum(LAT, 1.0), 0.1, 0.1, (1,))
    with pytest.raises(InvalidSchemeError, match=">= 0"):
        comparison_constant(Carosso(1.0), Polchinski(1.0), LAT, free_field_spectrum(LAT, 1.0), -0.1, 0.1)
    # G_0 rising with |p|: C(1) < 0 at t = 0, but > 0 after Carosso relaxes to 1/w
    lattice = Lattice(1, 2, 2.0)
    with pytest.raises(InvalidSchemeError, match="opposite signs"):
        comparison_constant(Carosso(1.0), Carosso(1.0), lattice, jnp.array([0.1, 1.0]), 0.0, 50.0, separation=1)


def test_wrappers_describe_their_base():
    d = Rescaled(Polchinski(1.0), ExponentialScale(KAPPA)).describe()
    assert d == {
        "name": "rescaled",
        "base": Polchinski(1.0).describe(),
        "scale": {"scale": "exponential", "rate": KAPPA},
    }
    assert FieldRenormalized(Carosso(1.0), ExponentialScale(KAPPA)).describe()["name"] == "field-renormalized"
    assert Rescaled(Carosso(1.0), ExponentialScale(KAPPA)).r(0.2, LAT) == Carosso(1.0).r(0.2, LAT)
    with pytest.raises(InvalidSchemeError):
        Rescaled(Carosso(1.0), ExponentialScale(KAPPA)).prior_spectrum(LAT)
    jax.jit(lambda t: Rescaled(Carosso(1.0), ExponentialScale(KAPPA)).kernel(t, LAT))(0.3)
