import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.errors import InvalidLatticeError
from rgdiff.lattice.geometry import Lattice

LATTICES = [Lattice(1, 7, 2.0), Lattice(2, 6, 1.0), Lattice(2, 5, 5.0), Lattice(3, 4, 3.0)]


@pytest.mark.parametrize("lat", LATTICES, ids=str)
def test_fourier_round_trip(lat, getkey):
    phi = jax.random.normal(getkey(), (3, *lat.shape))
    np.testing.assert_allclose(lat.inverse_fourier(lat.fourier(phi)), phi, atol=1e-12)
    np.testing.assert_allclose(lat.inverse_rfourier(lat.rfourier(phi)), phi, atol=1e-12)


@pytest.mark.parametrize("lat", LATTICES, ids=str)
def test_fourier_convention_is_the_explicit_sum(lat, getkey):
    """phi~(p) = N^-d sum_n exp(-2 pi i p.n/N) phi(n) [4.26], by brute force."""
    phi = np.asarray(jax.random.normal(getkey(), lat.shape))
    n = np.indices(lat.shape).reshape(lat.dim, -1).T  # sites
    for p in [(0,) * lat.dim, (1,) + (0,) * (lat.dim - 1), tuple(range(1, lat.dim + 1))]:
        phase = np.exp(-2j * np.pi * (n @ np.array(p)) / lat.size)
        expected = np.sum(phase * phi.reshape(-1)) / lat.sites
        np.testing.assert_allclose(lat.fourier(jnp.asarray(phi))[p], expected, atol=1e-12)


@pytest.mark.parametrize("lat", LATTICES, ids=str)
def test_laplacian_eigenvalues_are_minus_phat_squared(lat):
    """Plane waves are eigenvectors of the lattice Laplacian with eigenvalue -|phat|^2 [4.27]."""
    n = np.indices(lat.shape)
    p2 = np.asarray(lat.phat_sq())
    for p in [(1,) * lat.dim, (2,) + (0,) * (lat.dim - 1)]:
        wave = np.cos(2 * np.pi * np.tensordot(np.array(p), n, axes=1) / lat.size)
        lap = np.asarray(lat.laplacian(jnp.asarray(wave)))
        np.testing.assert_allclose(lap, -p2[p] * wave, atol=1e-9 * (1 + p2.max()))


def test_cutoff_and_unit_momentum():
    lat = Lattice(2, 20, 1.0)
    assert lat.spacing == pytest.approx(0.05)
    assert lat.cutoff == pytest.approx(np.sqrt(np.max(np.asarray(lat.phat_sq()))))
    assert lat.cutoff == pytest.approx(2 * np.sqrt(2) * 20)
    assert lat.phat1_sq == pytest.approx(float(lat.phat_sq()[1, 0]))


@pytest.mark.parametrize("lat", LATTICES, ids=str)
def test_half_grid_bookkeeping(lat):
    """Multiplicities of the rfft half grid count every full-grid mode once."""
    mult = lat.half_multiplicity()
    real = lat.real_mode_mask_half()
    assert mult.sum() == lat.sites
    # a real (self-conjugate) mode is its own partner
    assert np.all(mult[real] == 1)
    np.testing.assert_allclose(lat.phat_sq_half(), np.asarray(lat.phat_sq())[..., : lat.size // 2 + 1])


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 4, 1.0), "dimension"),
        ((4, 4, 1.0), "dimension"),
        ((2, 1, 1.0), "N must be >= 2"),
        ((2, 4, 0.0), "length"),
        ((2, 4, float("nan")), "finite"),
        ((2, 4, float("inf")), "finite"),
        ((2, 10**5, 1.0), "sites"),
        ((2.5, 4, 1.0), "integer"),
    ],
)
def test_invalid_lattices(args, message):
    with pytest.raises(InvalidLatticeError, match=message):
        Lattice(*args)


@pytest.mark.parametrize("dim,size", [(1, 1), (1, 7), (2, 1), (2, 4), (2, 5), (3, 4), (3, 3)])
def test_orbit_labels_are_in_order_of_first_appearance(dim, size):
    # saved CNF weights and the quantum ansatz index classes by these labels; the former
    # first-appearance labelling (row-major scan of the grid) must be reproduced exactly
    import itertools

    from rgdiff.lattice.symmetry import lattice_orbits

    fold = np.minimum(np.arange(size), (size - np.arange(size)) % size)
    keys, expected = {}, np.zeros((size,) * dim, dtype=np.int64)
    for idx in itertools.product(range(size), repeat=dim):
        expected[idx] = keys.setdefault(tuple(sorted(int(fold[i]) for i in idx)), len(keys))
    n, index = lattice_orbits(dim, size)
    assert n == len(keys)
    np.testing.assert_array_equal(index, expected)


def test_self_conjugate_planes_give_real_modes_and_multiplicity():
    for lat in (Lattice(1, 6, 1.0), Lattice(2, 5, 2.0), Lattice(3, 4, 1.0)):
        planes = lat.self_conjugate_planes()
        q = np.arange(lat.size // 2 + 1)
        np.testing.assert_array_equal(planes, (q == 0) | (2 * q == lat.size))
        np.testing.assert_array_equal(lat.half_multiplicity()[(0,) * (lat.dim - 1)], np.where(planes, 1, 2))
        assert lat.real_mode_mask_half().shape == lat.half_shape
        # every real mode lies on a self-conjugate plane; there are 2^d of them for N even, 1 for N odd
        assert np.all(planes[np.nonzero(lat.real_mode_mask_half())[-1]])
        assert lat.real_mode_mask_half().sum() == (2**lat.dim if lat.size % 2 == 0 else 1)


def test_phat_sq_host_and_device_agree_and_laplacian_stencil():
    lat = Lattice(2, 6, 3.0)
    np.testing.assert_array_equal(np.asarray(lat.phat_sq()), lat.phat_sq_np())
    phi = np.random.default_rng(1).normal(size=(2,) + lat.shape)
    host = lat.laplacian(phi)
    assert isinstance(host, np.ndarray)
    np.testing.assert_allclose(host, np.asarray(lat.laplacian(jnp.asarray(phi))), rtol=1e-14, atol=1e-12)
    np.testing.assert_allclose(lat.lattice_laplacian(phi), lat.spacing**2 * host, rtol=1e-13, atol=1e-12)
