import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.errors import InvalidTheoryError
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4, benchmark_theory, field_scale, make_phi4

THEORIES = [
    Phi4(Lattice(1, 9, 3.0), 0.7, 0.5),
    Phi4(Lattice(2, 6, 1.0), -2.0, 0.0017),
    Phi4(Lattice(3, 4, 4.0), 1.5, 2.0),
]


@pytest.mark.parametrize("theory", THEORIES, ids=str)
def test_force_equals_autodiff(theory, getkey):
    phi = 3.0 * jax.random.normal(getkey(), (2, *theory.lattice.shape))
    auto = jax.vmap(jax.grad(theory.action))(phi)
    np.testing.assert_allclose(theory.grad_action(phi), auto, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("theory", THEORIES, ids=str)
def test_action_equals_momentum_space_form(theory, getkey):
    """S = L^d sum_p 1/2 (|phat|^2 + m2) |phi~(p)|^2 + eps^d sum_n lam/4! phi^4  [7.2]."""
    phi = jax.random.normal(getkey(), (3, *theory.lattice.shape))
    lat = theory.lattice
    quartic = lat.spacing**lat.dim * lat.sum_sites(theory.lam / 24 * phi**4)
    np.testing.assert_allclose(theory.action(phi), theory.momentum_action_free(phi) + quartic, rtol=1e-12)


def test_action_by_explicit_site_sum(getkey):
    """The position-space action [4.6] written out with explicit loops over sites."""
    th = Phi4(Lattice(2, 4, 2.0), 0.3, 1.2)
    phi = np.asarray(jax.random.normal(getkey(), th.lattice.shape))
    eps, n = th.lattice.spacing, 4
    s = 0.0
    for x in range(n):
        for y in range(n):
            kin = (phi[(x + 1) % n, y] - phi[x, y]) ** 2 + (phi[x, (y + 1) % n] - phi[x, y]) ** 2
            s += eps**2 * (0.5 * kin / eps**2 + 0.5 * 0.3 * phi[x, y] ** 2 + 1.2 / 24 * phi[x, y] ** 4)
    assert float(th.action(jnp.asarray(phi))) == pytest.approx(s, rel=1e-12)


def test_albergo_converter(getkey):
    """S_A[phi_A] = S[sqrt(2) phi_A] with lam = 6 lam_A (lattice units)."""
    m2, lam_a = -4.0, 6.008
    th = make_phi4(2, 8, units="albergo", m2=m2, lam=lam_a)
    assert th.lattice.length == 8.0 and th.lam == pytest.approx(6 * lam_a)
    phi_a = jax.random.normal(getkey(), (8, 8))
    kin = sum((jnp.roll(phi_a, -1, ax) - phi_a) ** 2 for ax in (0, 1))
    s_a = jnp.sum(kin + m2 * phi_a**2 + lam_a * phi_a**4)
    assert float(th.action(field_scale("albergo") * phi_a)) == pytest.approx(float(s_a), rel=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_hopping_converter(dim, getkey):
    """S_h[phi_h] = S[sqrt(2 kappa) phi_h] + lambda_h V (lattice units)."""
    kappa, lam_h = 0.18, 0.02
    th = make_phi4(dim, 4, units="hopping", kappa=kappa, lambda_h=lam_h)
    phi_h = jax.random.normal(getkey(), th.lattice.shape)
    axes = tuple(range(dim))
    hop = sum(phi_h * jnp.roll(phi_h, -1, ax) for ax in axes)
    s_h = jnp.sum(-2 * kappa * hop + phi_h**2 + lam_h * (phi_h**2 - 1) ** 2)
    ours = th.action(field_scale("hopping", kappa=kappa) * phi_h)
    assert float(ours) + lam_h * th.lattice.sites == pytest.approx(float(s_h), rel=1e-12)


def test_benchmark_line():
    th = benchmark_theory(8)
    assert (th.m2, th.lam, th.lattice.length) == (-4.0, pytest.approx(36.048), 8.0)
    with pytest.raises(InvalidTheoryError, match="N = 10"):
        benchmark_theory(10)


@pytest.mark.parametrize(
    "m2, lam, message",
    [
        (1.0, -0.1, "lam .* < 0"),
        (-1.0, 0.0, "not normalizable"),
        (0.0, 0.0, "not normalizable"),
        (float("nan"), 1.0, "m2 must be finite"),
        (1.0, float("inf"), "lam must be finite"),
    ],
)
def test_non_normalizable_theories_are_refused(m2, lam, message):
    with pytest.raises(InvalidTheoryError, match=message):
        Phi4(Lattice(2, 4, 1.0), m2, lam)


def test_units_combinations_are_checked():
    with pytest.raises(InvalidTheoryError, match="kappa and lambda_h"):
        make_phi4(2, 4, units="hopping", m2=1.0, lam=1.0)
    with pytest.raises(InvalidTheoryError, match="unknown units"):
        make_phi4(2, 4, units="furlongs", m2=1.0, lam=1.0)
    with pytest.raises(InvalidTheoryError, match="fix L = N"):
        make_phi4(2, 4, units="lattice", m2=1.0, lam=1.0, length=2.0)
    with pytest.raises(InvalidTheoryError, match="kappa must be > 0"):
        make_phi4(2, 4, units="hopping", kappa=-1.0, lambda_h=0.1)
