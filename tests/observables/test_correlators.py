"""Position-space correlators and the effective mass (conventions page, "Estimators").

On a free field sampled by the UV sampler, G(x), C(t) and m_eff(t) equal their closed forms from
the free propagator (inverse FFT) within the Gamma-method errors; on hand-made configurations the
estimators are exact algebra.
"""

import math

import jax
import numpy as np
import pytest

from rgdiff.lattice.geometry import Lattice
from rgdiff.observables.estimators import (
    correlator_estimates,
    correlator_series,
    cosh_effective_mass,
    effective_mass_separation,
    measure,
    slice_products,
)
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.gaussian import free_field_spectrum
from rgdiff.theory.phi4 import Phi4

Z_MAX = 4.0
LAT = Lattice(2, 8, 6.0)  # eps = 0.75
M2 = 0.4  # correlation length 1/sqrt(0.4) = 2.1 sites: C(t) falls by ~e^-2 over half the box


def closed_forms(lattice: Lattice, m2: float):
    """G(x e_1) and C(t) for x, t = n eps, n = 0..N//2, from the free propagator 1/(|phat|^2 + m2):
    G(x) = eps^-d F^-1[G2](x) and C(t) = eps^(d-1) sum over the transverse sites of G."""
    g2 = np.asarray(free_field_spectrum(lattice, m2, half=False))
    g = np.real(np.fft.ifftn(g2)) / lattice.spacing**lattice.dim
    k = lattice.size // 2 + 1
    line = g[(slice(0, k),) + (0,) * (lattice.dim - 1)]
    c = lattice.spacing ** (lattice.dim - 1) * g.sum(axis=tuple(range(1, lattice.dim)))[:k]
    return line, c


@pytest.fixture(scope="module")
def free_ensemble():
    """The free theory (lam = 0) sampled with the default sampler (Fourier-accelerated HMC)."""
    theory = Phi4(LAT, M2, 0.0)
    res = sample(theory, SamplerSettings("fa-hmc", chains=4, samples=1500, warmup=300), key=jax.random.key(11))
    return res.fields


def test_free_field_correlators_equal_their_closed_forms(free_ensemble):
    m = measure(free_ensemble, LAT, markov=True)
    corr = m.correlators
    g_exact, c_exact = closed_forms(LAT, M2)
    np.testing.assert_allclose(corr["separation"], LAT.spacing * np.arange(LAT.size // 2 + 1))
    for name, exact in (("G_x", g_exact), ("C_t", c_exact)):
        value, error = np.asarray(corr[name]["value"]), np.asarray(corr[name]["error"])
        assert np.all(error > 0)
        z = np.abs(value - exact) / error
        assert np.all(z < Z_MAX), (name, value, exact, error)
    # the cosh effective mass of a free field is the lattice pole mass (2/eps) asinh(eps m / 2), at every t
    pole = 2.0 / LAT.spacing * math.asinh(LAT.spacing * math.sqrt(M2) / 2.0)
    for v, e in zip(corr["m_eff"]["value"], corr["m_eff"]["error"]):
        assert v is not None and abs(v - pole) < Z_MAX * e, (v, e, pole)
    eff = m.observables["effective_mass"]
    assert eff.reliable and abs(eff.value - pole) < Z_MAX * eff.error
    assert m.meta["effective_mass_separation"] == corr["effective_mass_separation"] == 2 * LAT.spacing
    # beside it, the second-moment mass is sqrt(m2) exactly for a free field
    assert abs(m.observables["m_R"].value - math.sqrt(M2)) < Z_MAX * m.observables["m_R"].error


def test_closed_forms_are_cosh():
    """The reference itself: C(t) of a free field on a periodic lattice is A cosh(E (t - L/2)),
    4 sinh^2(E eps/2) = m2 eps^2, so the cosh effective mass is E at every separation."""
    _, c = closed_forms(LAT, M2)
    pole = 2.0 / LAT.spacing * math.asinh(LAT.spacing * math.sqrt(M2) / 2.0)
    full = np.concatenate([c, c[1:-1][::-1]])  # C(N - n) = C(n)
    for n in range(1, LAT.size // 2 + 1):
        meff = cosh_effective_mass(full[n - 1], full[n], full[(n + 1) % LAT.size], LAT.spacing)
        assert meff == pytest.approx(pole, rel=1e-10)


def test_correlator_series_is_exact_algebra():
    """A plane wave phi = a + b cos(2 pi k x_1 / N): g(n) = a^2 + b^2/4 cos(2 pi k n / N) on axis 1,
    a^2 on the transverse axis; averaged over the d = 2 axes."""
    lat = Lattice(2, 6, 3.0)
    a, b, k = 0.7, 1.3, 1
    x = np.arange(lat.size)
    phi = a + b * np.cos(2 * np.pi * k * x / lat.size)[:, None] * np.ones((1, lat.size))
    g, t = correlator_series(phi[None, None], lat)
    n = np.arange(lat.size // 2 + 1)
    along = a**2 + b**2 / 2 * np.cos(2 * np.pi * k * n / lat.size)
    np.testing.assert_allclose(g[0, 0], (along + a**2 + b**2 / 2) / 2, atol=1e-12)
    # the slices of axis 1 carry the wave, those of axis 2 are constant a
    np.testing.assert_allclose(t[0, 0], (along + a**2) / 2, atol=1e-12)
    np.testing.assert_allclose(slice_products(phi[None, None], lat, n)[0, 0], t[0, 0], atol=1e-12)


def test_sum_of_the_slice_correlator_is_G2_0(free_ensemble):
    """eps sum_t C(t) over the whole period = L^d (<M^2> - <M>^2) = G2(0): an identity of the estimators."""
    fields = free_ensemble[:, :200]
    m = measure(fields, LAT, markov=True)
    c = np.asarray(m.correlators["C_t"]["value"])
    total = LAT.spacing * (c[0] + 2 * c[1:-1].sum() + c[-1])  # N even: t = 0, +-1..N/2-1, N/2
    assert total == pytest.approx(m.observables["G2_0"].value, rel=1e-9)


def test_effective_mass_separation_and_small_lattices():
    assert [effective_mass_separation(Lattice(2, n, 1.0)) for n in (2, 3, 4, 8, 20)] == [1, 1, 1, 2, 5]
    rng = np.random.default_rng(0)
    lat = Lattice(1, 3, 3.0)
    fields = rng.normal(size=(2, 50, 3))
    corr = correlator_estimates(fields, lat)
    assert len(corr["G_x"]["value"]) == 2 and len(corr["m_eff"]["value"]) == 1


def test_independent_samples_and_vacuum_mapping():
    """Two vacua +-v: mapped, the connected correlators are those of the fluctuations; raw, the
    zero mode's v^2 dominates G(x) at every x."""
    rng = np.random.default_rng(1)
    lat = Lattice(2, 4, 4.0)
    fluct = 0.1 * rng.normal(size=(1, 4000, 4, 4))
    signs = np.where(rng.random((1, 4000)) < 0.5, -1.0, 1.0)
    fields = signs[..., None, None] * (3.0 + fluct)
    mapped = correlator_estimates(fields, lat, markov=False, signs=signs)
    raw = correlator_estimates(fields, lat, markov=False)
    assert abs(mapped["G_x"]["value"][0] - 0.01) < 0.002 and abs(mapped["G_x"]["value"][1]) < 0.002
    assert raw["G_x"]["value"][1] == pytest.approx(9.0, rel=0.01)
