"""Fourier-accelerated HMC and NUTS: the coordinates are an exact linear change of variables, the
adapted metric respects the lattice symmetry, and the chains reproduce closed forms (free field)
and long plain-NUTS runs (benchmark line)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from rgdiff.lattice.geometry import Lattice
from rgdiff.lattice.symmetry import lattice_orbits, orbit_average
from rgdiff.observables.estimators import measure
from rgdiff.observables.stats import tau_int
from rgdiff.samplers.fourier import FourierCoordinates, reference_variance
from rgdiff.samplers.hmc import UVMove
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.phi4 import Phi4, benchmark_theory


@pytest.mark.parametrize("lattice", [Lattice(2, 6, 1.5), Lattice(1, 7, 7.0), Lattice(3, 4, 2.0)])
def test_hartley_is_orthogonal_involutive_and_diagonalizes_the_propagator(lattice):
    """H H = 1, H orthogonal, and H C H = diag(G2(p)/eps^d) for the free covariance C = (eps^d (-Delta + m2))^-1
    (exactly, on the dense V x V matrices): the basis in which Fourier acceleration is diagonal."""
    V = lattice.sites
    basis = np.eye(V).reshape(V, *lattice.shape)
    H = np.asarray(lattice.hartley(jnp.asarray(basis))).reshape(V, V)
    np.testing.assert_allclose(H @ H, np.eye(V), atol=1e-12)
    np.testing.assert_allclose(H @ H.T, np.eye(V), atol=1e-12)
    m2 = 0.7
    laplacian = np.asarray(lattice.laplacian(basis)).reshape(V, V)
    C = np.linalg.inv(lattice.spacing**lattice.dim * (-laplacian + m2 * np.eye(V)))
    exact = 1.0 / (lattice.spacing**lattice.dim * (lattice.phat_sq_np() + m2))
    np.testing.assert_allclose(H @ C @ H, np.diag(exact.reshape(-1)), atol=1e-10 * exact.max())


def test_fourier_coordinates_are_a_linear_map_with_constant_jacobian():
    theory = Phi4(Lattice(2, 4, 1.0), -2.0, 0.5)
    coords = FourierCoordinates.for_theory(theory)
    u = jax.random.normal(jax.random.key(0), theory.lattice.shape)
    np.testing.assert_allclose(coords.from_field(coords.to_field(u)), u, atol=1e-12)
    # log p(u) = -S(phi(u)): the target's density up to the constant log-Jacobian
    assert float(coords.logdensity_fn(theory)(u)) == pytest.approx(-float(theory.action(coords.to_field(u))))
    jac = jax.jacfwd(lambda x: coords.to_field(x.reshape(4, 4)).reshape(-1))
    dets = [np.linalg.slogdet(np.asarray(jac(x.reshape(-1))))[1] for x in (u, 3.0 * u + 1.0)]
    expected = 0.5 * np.sum(np.log(reference_variance(theory)))
    np.testing.assert_allclose(dets, [expected, expected], rtol=1e-10)


def test_orbit_average():
    lat = Lattice(2, 6, 1.0)
    count, index = lattice_orbits(2, 6)
    np.testing.assert_allclose(orbit_average(lat.phat_sq_np(), 2, 6), lat.phat_sq_np())  # |phat|^2: one value per orbit
    x = np.random.default_rng(0).normal(size=(3, 6, 6))
    avg = orbit_average(x, 2, 6)
    for o in range(count):
        members = index == o
        np.testing.assert_allclose(avg[:, members], x[:, members].mean(axis=1, keepdims=True).repeat(members.sum(), 1))
    np.testing.assert_allclose(np.asarray(orbit_average(jnp.asarray(x), 2, 6)), avg, atol=1e-14)


def test_adapted_metric_is_constant_on_momentum_orbits():
    theory = Phi4(Lattice(2, 6, 1.0), 1.0, 0.5)
    move = UVMove("fa-hmc")
    coords = move.coordinates(theory)
    positions = coords.from_field(jnp.zeros((2, 6, 6)))
    _, params = move.warmup(theory, jax.random.split(jax.random.key(0), 2), positions, 200)
    imm = np.asarray(params["inverse_mass_matrix"]).reshape(2, 6, 6)
    np.testing.assert_allclose(orbit_average(imm, 2, 6), imm, rtol=1e-12)
    assert not np.allclose(imm, 1.0)  # it did adapt away from the closed-form start


def orbit_power_spectrum_chi2(fields, theory):
    """chi^2 of the sampled G2(p) = L^d <|phi~(p)|^2>, averaged over each momentum orbit, against the
    free propagator 1/(|phat|^2 + m2), with Gamma-method errors; orbits are independent modes."""
    lat = theory.lattice
    spectrum = lat.volume * np.abs(np.fft.fftn(fields, axes=lat.axes) / lat.sites) ** 2  # (chains, samples, *lattice)
    count, index = lattice_orbits(lat.dim, lat.size)
    exact = 1.0 / (lat.phat_sq_np() + theory.m2)
    chi2 = 0.0
    for o in range(count):
        members = index == o
        est = tau_int(spectrum[..., members].mean(axis=-1))
        chi2 += ((est.value - exact[members][0]) / est.error) ** 2
    return chi2, count


@pytest.mark.parametrize("algorithm", ["fa-hmc", "fa-nuts"])
@pytest.mark.parametrize("lattice, m2", [(Lattice(2, 6, 1.0), 2.0), (Lattice(2, 5, 5.0), 0.5)])
def test_free_field_spectrum_every_momentum(algorithm, lattice, m2):
    """Exactness: G2(p) of the Fourier-accelerated chains equals the closed form at every momentum
    orbit together (chi^2 over all orbits, p-value > 1e-3), on an even and an odd lattice."""
    theory = Phi4(lattice, m2, 0.0)
    result = sample(theory, SamplerSettings(algorithm, chains=4, samples=1500, warmup=300), key=jax.random.key(5))
    chi2, dof = orbit_power_spectrum_chi2(result.fields, theory)
    assert sps.chi2.sf(chi2, dof) > 1e-3, (chi2, dof)


def test_fourier_acceleration_agrees_with_long_plain_nuts_on_the_benchmark_line():
    """N = 8 benchmark line: FA-HMC and FA-NUTS against a long plain-NUTS run, within 4 combined errors."""
    theory = benchmark_theory(8)
    runs = {
        alg: measure(sample(theory, SamplerSettings(alg, chains=4, samples=n, warmup=400), key=jax.random.key(k)).fields,
                     theory.lattice).observables
        for alg, n, k in (("nuts", 3000, 1), ("fa-hmc", 3000, 2), ("fa-nuts", 1000, 3))
    }
    for alg in ("fa-hmc", "fa-nuts"):
        for name in ("abs_magnetization", "chi", "G2_0", "G2_p1", "m_R", "Z", "max_abs_phi"):
            a, b = runs[alg][name], runs["nuts"][name]
            z = (a.value - b.value) / math.hypot(a.error, b.error)
            assert abs(z) < 4.0, (alg, name, a, b)


def test_fa_hmc_mixes_at_the_paper_point():
    """m2 = 0.01 (near-massless, L = 1, N = 20), where plain NUTS has tau_int(|M|) ~ 360: FA-HMC
    gives tau_int(|M|) of order one and an error bar the diagnostics call reliable."""
    from rgdiff.theory.phi4 import paper_theory

    theory = paper_theory(0.01)
    result = sample(theory, SamplerSettings("fa-hmc", chains=4, samples=1500, warmup=500), key=jax.random.key(0))
    m = measure(result.fields, theory.lattice).observables
    assert m["abs_magnetization"].tau_int < 3.0
    assert m["abs_magnetization"].reliable and m["m_R"].reliable, (m["abs_magnetization"], m["m_R"])
    assert max(result.diagnostics["mode_variance_ratio"]) < 2.0  # the adapted metric stays near the free one ...
    assert result.diagnostics["mode_variance_ratio"][0] < 0.6  # ... except the interacting zero mode
