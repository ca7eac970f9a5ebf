"""Lattice Hamiltonian [6.9], free-field E0, Gaussian states and exact diagonalization (issue 7)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.errors import RgdiffError
from rgdiff.lattice.geometry import Lattice
from rgdiff.quantum.exact import best_gaussian, converged_ground_energy, exact_diagonalization, free_ground_energy, gaussian_mode_energy, gaussian_state, harmonic_lower_bound
from rgdiff.quantum.hamiltonian import Hamiltonian
from rgdiff.theory.phi4 import Phi4


@pytest.mark.parametrize("dim,size,length", [(1, 8, 8.0), (2, 4, 1.0), (1, 5, 2.5), (3, 2, 2.0)])
def test_geometry_matches_lattice(dim, size, length):
    h = Hamiltonian(dim, size, length, 0.7, 3.0)
    lat = Lattice(dim, size, length)
    np.testing.assert_allclose(h.phat_sq(), np.asarray(lat.phat_sq()), rtol=1e-13, atol=1e-12)
    phi = np.random.default_rng(0).normal(size=(3,) + lat.shape)
    # V has the form of the Euclidean action in d dimensions
    np.testing.assert_allclose(h.potential(jnp.asarray(phi)), Phi4(lat, 0.7, 3.0).action(jnp.asarray(phi)), rtol=1e-12)
    # the stiffness matrix is -Delta + m2: its spectrum is |phat|^2 + m2
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(h.stiffness_matrix())), np.sort(h.phat_sq().ravel() + 0.7), atol=1e-10)


def test_single_site_has_no_gradient_term():
    h = Hamiltonian(1, 1, 0.5, 1.0, 2.0)
    assert h.phat_sq().shape == (1,) and h.phat_sq()[0] == 0.0
    phi = jnp.array([[0.3], [-1.2]])
    np.testing.assert_allclose(h.potential(phi), 0.5 * (0.5 * phi[:, 0] ** 2 + 2.0 / 24 * phi[:, 0] ** 4), rtol=1e-14)


@pytest.mark.parametrize("dim,size,length,m2", [(1, 8, 8.0, 1.0), (2, 4, 4.0, 0.5), (2, 4, 1.0, 3.0), (1, 1, 0.5, 2.0)])
def test_free_ground_energy_is_half_sum_of_normal_mode_frequencies(dim, size, length, m2):
    h = Hamiltonian(dim, size, length, m2, 0.0)
    # independent route: in q = eps^(d/2) phi, H = sum -1/2 d^2/dq^2 + 1/2 q.K q, so E0 = 1/2 tr sqrt(K)
    expected = 0.5 * np.sum(np.sqrt(np.linalg.eigvalsh(h.stiffness_matrix())))
    assert free_ground_energy(h) == pytest.approx(expected, rel=1e-12)
    # the free ground state is the Gaussian of mass sqrt(m2), and it is the best Gaussian
    assert gaussian_state(h, m2).energy == pytest.approx(expected, rel=1e-12)
    assert best_gaussian(h).mass_sq == pytest.approx(m2, rel=1e-12)
    # its two-point function is 1/(2 omega_p)
    np.testing.assert_allclose(gaussian_state(h, m2).g2, 1 / (2 * np.sqrt(h.phat_sq() + m2)), rtol=1e-12)


def test_gaussian_energy_single_site_closed_form():
    # one site, |Psi|^2 = N(0, s2): E = eps^-1/(8 s2) + eps (m2/2 s2 + lam/24 * 3 s2^2), s2 = 1/(2 eps M)
    eps, m2, lam, M2 = 0.5, 1.3, 7.0, 2.2
    h = Hamiltonian(1, 1, eps, m2, lam)
    s2 = 1 / (2 * eps * math.sqrt(M2))
    expected = 1 / (8 * eps * s2) + eps * (0.5 * m2 * s2 + lam / 8 * s2**2)
    assert gaussian_state(h, M2).energy == pytest.approx(expected, rel=1e-13)
    assert gaussian_state(h, M2).phi_sq == pytest.approx(s2, rel=1e-13)


def test_best_gaussian_solves_gap_equation_and_is_minimal():
    h = Hamiltonian.make(1, 8, m2=-0.3, lam=12.0)
    g = best_gaussian(h)
    assert g.mass_sq == pytest.approx(h.m2 + 0.5 * h.lam * g.phi_sq, rel=1e-10)
    for f in (0.8, 0.95, 1.05, 1.25):
        assert gaussian_state(h, f * g.mass_sq).energy > g.energy
    # optimal over all translation-invariant covariances: random mode perturbations cost energy
    rng = np.random.default_rng(1)
    c = 1 / (2 * h.cell * np.sqrt(h.phat_sq() + g.mass_sq))
    assert gaussian_mode_energy(h, c) == pytest.approx(g.energy, rel=1e-12)
    for _ in range(5):
        pert = np.exp(0.05 * rng.normal(size=h.shape))
        pert = 0.5 * (pert + np.roll(pert[::-1], 1))  # keep c_p = c_-p
        assert gaussian_mode_energy(h, c * pert) > g.energy


# exact diagonalization -------------------------------------------------------------------
@pytest.mark.parametrize("g,expected", [(1.0, 0.803770651), (0.1, 0.559146327)])
def test_ed_quartic_anharmonic_oscillator_known_values(g, expected):
    # H = p^2/2 + x^2/2 + g x^4 is one site in lattice units with m2 = 1, lam = 24 g
    res = converged_ground_energy(Hamiltonian(1, 1, 1.0, 1.0, 24 * g))
    assert res.energy == pytest.approx(expected, abs=2e-9)


def test_ed_carries_the_eps_factors():
    # one site of spacing eps: in q = eps^(1/2) phi, H = p^2/2 + m2 q^2/2 + lam/(24 eps) q^4
    res = converged_ground_energy(Hamiltonian(1, 1, 0.5, 1.0, 12.0))  # g = 12/(24 * 0.5) = 1
    assert res.energy == pytest.approx(0.803770651, abs=2e-9)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_ed_harmonic_limit_is_exact(size):
    h = Hamiltonian.make(1, size, m2=0.6, lam=0.0)
    # the basis frequency is the on-site one, not the normal modes': exact only as the basis grows
    assert exact_diagonalization(h, 16).energy == pytest.approx(free_ground_energy(h), rel=1e-10)


@pytest.mark.parametrize("dim,size", [(1, 4), (2, 2)])
def test_ed_on_four_sites_harmonic_limit(dim, size):
    # four sites: 12^4 states; the on-site oscillator basis reaches the normal-mode answer
    h = Hamiltonian.make(dim, size, m2=0.6, lam=0.0)
    assert exact_diagonalization(h, 12).energy == pytest.approx(free_ground_energy(h), rel=1e-8)


@pytest.mark.parametrize("size,lam", [(2, 10.0), (3, 10.0), (3, 40.0)])
def test_ed_converges_in_basis_size_and_frequency(size, lam):
    h = Hamiltonian.make(1, size, m2=1.0, lam=lam)
    energies = [exact_diagonalization(h, n).energy for n in (12, 16, 20)]
    # truncation error falls with the basis (variational in the basis: monotonically from above)
    assert energies[0] >= energies[1] >= energies[2] - 1e-12
    assert abs(energies[2] - energies[1]) < 1e-7 * energies[2]
    # and the answer does not depend on the basis frequency
    other = exact_diagonalization(h, 20, frequency=1.5 * exact_diagonalization(h, 4).frequency).energy
    assert other == pytest.approx(energies[2], rel=1e-7)
    # the exact ground energy lies below the best Gaussian (a variational state)
    assert energies[2] < best_gaussian(h).energy


# the harmonic lower bound -----------------------------------------------------------------
def _bound_at(h, a):
    """H >= H_free(m2 + lam a/6) - eps^d N^d lam a^2/24, the free ground energy by normal modes."""
    free = Hamiltonian(h.dim, h.size, h.length, h.m2 + h.lam * a / 6.0, 0.0)
    return 0.5 * np.sum(np.sqrt(np.linalg.eigvalsh(free.stiffness_matrix()))) - h.cell * h.sites * h.lam * a**2 / 24.0


@pytest.mark.parametrize("dim,size,length,m2,lam", [(1, 1, 1.0, 1.0, 24.0), (1, 2, 2.0, 1.0, 10.0), (1, 3, 3.0, 1.0, 40.0),
                                                    (1, 3, 1.5, -0.5, 20.0)])
def test_harmonic_lower_bound_lies_below_ed_and_is_the_best_a(dim, size, length, m2, lam):
    h = Hamiltonian(dim, size, length, m2, lam)
    bound = harmonic_lower_bound(h)
    assert bound < converged_ground_energy(h).energy  # rigorous: never above the exact E0
    # it is the maximum over a of the family of bounds (each one valid)
    a_min = max(0.0, -6.0 * m2 / lam) + 1e-9
    grid = np.linspace(a_min, a_min + 3.0, 301)
    best = max(_bound_at(h, a) for a in grid)
    assert bound >= best - 1e-9 * abs(best)
    assert bound == pytest.approx(best, rel=1e-3)  # and the grid's best is close to it


def test_harmonic_lower_bound_single_site_closed_form_and_free_limit():
    # one site, eps = 1, m2 = 1, lam = 24 (H = p^2/2 + x^2/2 + x^4): f(a) = sqrt(1 + 4a)/2 - a^2,
    # stationary where a = 1/(2 sqrt(1 + 4a))
    h = Hamiltonian(1, 1, 1.0, 1.0, 24.0)
    a = 0.25
    for _ in range(200):
        a = 1.0 / (2.0 * math.sqrt(1.0 + 4.0 * a))
    assert harmonic_lower_bound(h) == pytest.approx(math.sqrt(1 + 4 * a) / 2 - a**2, rel=1e-12)
    free = Hamiltonian.make(2, 4, m2=0.7, lam=0.0)
    assert harmonic_lower_bound(free) == free_ground_energy(free)


@pytest.mark.parametrize(
    "args",
    [dict(dim=1, size=4, length=4.0, m2=1.0, lam=-1.0), dict(dim=1, size=4, length=4.0, m2=0.0, lam=0.0),
     dict(dim=4, size=2, length=2.0, m2=1.0, lam=1.0), dict(dim=1, size=0, length=1.0, m2=1.0, lam=1.0),
     dict(dim=1, size=4, length=-1.0, m2=1.0, lam=1.0), dict(dim=1, size=4, length=4.0, m2=float("nan"), lam=1.0)],
)
def test_bad_hamiltonians_are_refused(args):
    with pytest.raises(RgdiffError):
        Hamiltonian(**args)


def test_ed_refuses_large_lattices():
    with pytest.raises(RgdiffError):
        exact_diagonalization(Hamiltonian.make(1, 5, m2=1.0, lam=1.0), 8)
