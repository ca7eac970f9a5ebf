"""Trained flow ansatz against exact answers (issues 7, 16). The long runs are marked slow (--runslow).

Every energy is measured with the transport's error under control (`measure_energy`) and must
pass `verify` (forms agree, not below E0 or the rigorous lower bound, the flow integrates back)."""

import jax
import pytest

from rgdiff.quantum.energy import measure_energy
from rgdiff.quantum.exact import best_gaussian, converged_ground_energy, free_ground_energy, harmonic_lower_bound
from rgdiff.quantum.hamiltonian import Hamiltonian
from rgdiff.quantum.train import GroundStateSettings, train
from rgdiff.quantum.verify import total_error, verify


def _trained(h, steps, init_mass_sq=None, batch=256, lr=0.02, samples=8192, exact=None):
    init = best_gaussian(h).mass_sq if init_mass_sq is None else init_mass_sq
    model, _ = train(h, GroundStateSettings(steps=steps, batch=batch, learning_rate=lr), init, jax.random.key(1))
    est = measure_energy(model, jax.random.key(2), samples)
    verdict = verify(est, exact=exact, exact_method="reference", exact_tolerance=1e-8, lower_bound=harmonic_lower_bound(h))
    assert verdict["valid"], verdict["failures"]
    local = est["local_form"]
    # the error bars below include the remaining integration error
    return (type(local)(local.value, total_error(est, "local_form"), 0.5),
            type(local)(est["score_form"].value, total_error(est, "score_form"), 0.5))


def _check_variational(est, exact):
    # a variational energy never lies below the exact ground energy (beyond its error)
    assert est.value > exact - 4 * est.error, (est, exact)


def test_anharmonic_oscillator_beats_gaussian_and_matches_ed():
    # one site, lattice units, m2 = 1, lam = 24: H = p^2/2 + x^2/2 + x^4, E0 = 0.803770651...
    h = Hamiltonian.make(1, 1, m2=1.0, lam=24.0)
    exact = converged_ground_energy(h).energy
    gauss = best_gaussian(h).energy  # 0.8125: 1.1% above
    est, score = _trained(h, 200, exact=exact)
    _check_variational(est, exact)
    assert abs(est.value - exact) < 2e-3 * exact, (est, exact)
    assert gauss - est.value > 3 * est.error, (est, gauss)
    assert abs(score.value - est.value) < 4 * (score.error**2 + est.error**2) ** 0.5


@pytest.mark.slow
def test_three_sites_within_one_percent_of_ed():
    h = Hamiltonian.make(1, 3, m2=1.0, lam=40.0)
    exact = converged_ground_energy(h).energy
    est, _ = _trained(h, 300, exact=exact)
    _check_variational(est, exact)
    assert abs(est.value - exact) < 1e-2 * exact, (est, exact)
    assert est.value < best_gaussian(h).energy + 3 * est.error


@pytest.mark.slow
def test_two_sites_physical_units_within_one_percent_of_ed():
    h = Hamiltonian.make(1, 2, m2=1.0, lam=20.0, units="physical", length=1.0)
    exact = converged_ground_energy(h).energy
    est, _ = _trained(h, 300, exact=exact)
    _check_variational(est, exact)
    assert abs(est.value - exact) < 1e-2 * abs(exact), (est, exact)
    assert best_gaussian(h).energy - est.value > 3 * est.error


@pytest.mark.slow
@pytest.mark.parametrize("dim,size", [(1, 8), (2, 4)])
def test_free_field_reaches_exact_energy_from_a_wrong_mass(dim, size):
    """Start from the Gaussian of mass^2 4 m2 (far from the answer) and train to within 0.1%."""
    h = Hamiltonian.make(dim, size, m2=1.0, lam=0.0)
    exact = free_ground_energy(h)
    assert best_gaussian(h).energy == pytest.approx(exact, rel=1e-12)
    est, _ = _trained(h, 300, init_mass_sq=4.0, exact=exact)
    _check_variational(est, exact)
    assert abs(est.value - exact) < 1e-3 * exact, (est, exact)


@pytest.mark.slow
def test_flow_beats_best_gaussian_at_strong_coupling():
    """d = 1, N = 8, lattice units, m2 = 1, lam = 24: the Gaussian and the true ground state differ."""
    h = Hamiltonian.make(1, 8, m2=1.0, lam=24.0)
    gauss = best_gaussian(h).energy
    est, score = _trained(h, 300)
    assert gauss - est.value > 3 * est.error, (est, gauss)
    assert abs(score.value - est.value) < 4 * (score.error**2 + est.error**2) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("dim,size,steps", [(1, 8, 1000), (2, 4, 1000)])
def test_free_field_long_training_stays_at_the_exact_energy(dim, size, steps):
    """Issue 16: trained on the bare RK4(16) energy, d = 1, N = 8 fell below E0 from about step
    400 on (6.71 -> 4.08 at 1000 steps, local form -2231). With the integration gap in the
    objective and the measured error, 1000 steps stay within 0.1% of E0 and never below it."""
    h = Hamiltonian.make(dim, size, m2=1.0, lam=0.0)
    exact = free_ground_energy(h)
    est, score = _trained(h, steps, exact=exact)
    _check_variational(est, exact)
    _check_variational(score, exact)
    assert abs(est.value - exact) < 1e-3 * exact, (est, exact)
