"""The RG-time CNF: equivariance, exact divergence, identity at init, invertibility, closed-form Gaussian flow."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.generate.transport import decode, encode, sample
from rgdiff.theory.gaussian import gaussian_field_log_prob
from rgdiff.lattice.geometry import Lattice
from rgdiff.models import InvalidModelError, build_model
from rgdiff.lattice.symmetry import lattice_orbits
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.rg import make_scheme

SCHEME = make_scheme("carosso", M=1.0)


def perturbed(flow, key, scale=0.3):
    """The flow with random weights and frequencies (a generic, non-identity map)."""
    k1, k2 = jax.random.split(key)
    w = scale * jax.random.normal(k1, flow.weights.shape)
    f = flow.frequencies + 0.2 * jax.random.normal(k2, flow.frequencies.shape)
    return eqx.tree_at(lambda m: (m.weights, m.frequencies), flow, (w, f))


@pytest.mark.parametrize("dim,size", [(2, 4), (2, 5), (3, 3)])
def test_exact_divergence_equals_jacobian_trace(dim, size, getkey):
    lat = Lattice(dim, size, 1.0)
    flow = perturbed(ContinuousFlow(lat, 2.0, frequencies=3, time_bumps=3, field_scale=(1.0, 0.5)), getkey())
    phi = jax.random.normal(getkey(), lat.shape)
    for s in (0.0, 0.37, 1.0):
        jac = jax.jacfwd(lambda p: flow.velocity(p, s).reshape(-1))(phi).reshape(lat.sites, lat.sites)
        assert float(flow.divergence(phi, s)) == pytest.approx(float(jnp.trace(jac)), rel=1e-10, abs=1e-10)


def test_float32_flow_under_strict_promotion_matches_float64(getkey):
    """A float32 flow (the benchmark's CNF) computes in float32 throughout, strict promotion
    included, and agrees with the same flow in float64 to float32 precision."""
    from rgdiff.models.base import cast_model

    lat = Lattice(2, 6, 1.0)
    flow = perturbed(ContinuousFlow(lat, 2.0, frequencies=3, time_bumps=3, field_scale=(1.0, 0.5)), getkey())
    flow32 = cast_model(flow, "float32")
    phi = jax.random.normal(getkey(), lat.shape)
    with jax.numpy_dtype_promotion("strict"):
        v32 = flow32.velocity(phi.astype(jnp.float32), jnp.float32(0.37))
        d32 = flow32.divergence(phi.astype(jnp.float32), jnp.float32(0.37))
    assert v32.dtype == d32.dtype == jnp.float32
    np.testing.assert_allclose(v32, flow.velocity(phi, 0.37), rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(v32))))
    assert float(d32) == pytest.approx(float(flow.divergence(phi, 0.37)), rel=1e-5, abs=1e-5)


def test_equivariance_translation_reflection_z2(getkey):
    lat = Lattice(2, 5, 1.0)
    flow = perturbed(ContinuousFlow(lat, 1.0, frequencies=2, time_bumps=2), getkey())
    phi = jax.random.normal(getkey(), lat.shape)
    v = flow.velocity(phi, 0.4)
    np.testing.assert_allclose(flow.velocity(jnp.roll(phi, (1, 3), (0, 1)), 0.4), jnp.roll(v, (1, 3), (0, 1)), atol=1e-12)
    np.testing.assert_allclose(flow.velocity(phi.T, 0.4), v.T, atol=1e-12)
    np.testing.assert_allclose(flow.velocity(phi[::-1], 0.4), v[::-1], atol=1e-12)
    np.testing.assert_allclose(flow.velocity(-phi, 0.4), -v, atol=1e-12)


def test_displacement_classes_count():
    # d = 2, N = 4: distances in {0, 1, 2}, unordered pairs: 6 classes
    n, classes = lattice_orbits(2, 4)  # the CNF's displacement classes
    assert n == 6 and classes[0, 0] == 0
    assert classes[1, 3] == classes[3, 1] == classes[1, 1] != classes[0, 1] == classes[3, 0] == classes[0, 3]


def test_identity_at_initialization(getkey):
    lat = Lattice(2, 4, 1.0)
    flow = ContinuousFlow(lat, 3.0, key=getkey())
    phi_T = SCHEME.prior_sample(getkey(), lat, (5,))
    for t in (0.0, 0.5):
        phi, logq = decode(flow, SCHEME, phi_T, t, steps=4)
        np.testing.assert_array_equal(phi, phi_T)
        np.testing.assert_array_equal(logq, SCHEME.prior_log_prob(phi_T, lat))


@pytest.mark.parametrize("size,solver", [(4, "rk4"), (5, "rk4"), (4, "adaptive")])
def test_decode_then_encode_recovers_fields_and_log_probs(size, solver, getkey):
    lat = Lattice(2, size, 1.0)
    flow = perturbed(ContinuousFlow(lat, 2.0, frequencies=3, time_bumps=4), getkey(), scale=0.5)
    phi_T = SCHEME.prior_sample(getkey(), lat, (3,))
    t = jnp.array([0.0, 0.01, 0.5])
    phi_t, logq = decode(flow, SCHEME, phi_T, t, steps=64, solver=solver)
    assert float(jnp.max(jnp.abs(phi_t - phi_T))) > 1e-2  # the map is not trivial
    back, logq_back = encode(flow, SCHEME, phi_t, t, steps=64, solver=solver)
    tol = 1e-6 if solver == "rk4" else 1e-4  # rk4: 64 steps of O(h^5); adaptive: rtol 1e-5 per solve
    np.testing.assert_allclose(back, phi_T, atol=tol)
    np.testing.assert_allclose(logq_back, logq, rtol=tol)


def test_linear_flow_gives_the_closed_form_gaussian(getkey):
    """Weights on the linear feature only, one time bump: each Fourier mode is scaled by
    exp(-khat(p) (1 - s)) going down from s = 1, so p_t^theta is Gaussian with spectrum
    G_T(p) exp(-2 khat(p) (1 - s(t)))."""
    lat = Lattice(2, 4, 1.0)
    flow = ContinuousFlow(lat, 2.0, frequencies=2, time_bumps=1)
    w = jnp.zeros_like(flow.weights).at[0, 0, :].set(jax.random.normal(getkey(), flow.weights.shape[-1:]) * 1.5)
    flow = eqx.tree_at(lambda m: m.weights, flow, w)
    khat = jnp.fft.rfftn(flow.kernels(0.0)[0], axes=lat.axes).real
    phi, logq = sample(flow, SCHEME, getkey(), 6, 0.1, steps=64)
    s = flow.s_of_t(0.1)
    spectrum = SCHEME.prior_spectrum(lat) * jnp.exp(-2.0 * khat * (1.0 - s))
    np.testing.assert_allclose(logq, gaussian_field_log_prob(phi, lat, spectrum), atol=1e-7)


def test_build_model_round_trip_and_bad_arguments(getkey):
    lat = Lattice(2, 4, 1.0)
    flow = ContinuousFlow(lat, 2.5, frequencies=3, time_bumps=2, field_scale=(2.0, 1.0))
    rebuilt = build_model(flow.describe(), lat, key=getkey())
    assert isinstance(rebuilt, ContinuousFlow) and rebuilt.describe() == flow.describe()
    assert jax.tree.structure(rebuilt) == jax.tree.structure(flow)
    for bad in ({"horizon": -1.0}, {"horizon": 1.0, "frequencies": -1}, {"horizon": 1.0, "field_scale": (0.0,)}):
        with pytest.raises(InvalidModelError):
            ContinuousFlow(lat, **bad)


@pytest.mark.parametrize("dim,small,large", [(2, 8, 20), (2, 7, 12), (3, 4, 6)])
def test_on_lattice_keeps_the_kernel_and_the_zero_mode_rate(dim, small, large, getkey):
    """A flow moved to a larger lattice of the same spacing (`on_lattice`) acts on a field
    supported in a patch as it did on the small lattice wherever the displacements fit both,
    and on a constant field exactly as before, site for site (the kernel's sum is kept, the
    boundary displacements shared between +r and -r)."""
    a = 0.25
    flow = perturbed(ContinuousFlow(Lattice(dim, small, a * small), 2.0, frequencies=3, time_bumps=3,
                                    field_scale=(1.0, 0.5)), getkey())
    moved = flow.on_lattice(Lattice(dim, large, a * large))
    assert moved.lattice.size == large and moved.horizon == flow.horizon and moved.field_scale == flow.field_scale
    patch = (slice(0, 2),) * dim  # every displacement inside the patch has |r_i| <= 1 < small / 2
    bump = jax.random.normal(getkey(), (2,) * dim)
    phi_small = jnp.zeros((small,) * dim).at[patch].set(bump)
    phi_large = jnp.zeros((large,) * dim).at[patch].set(bump)
    for s in (0.1, 0.8):
        np.testing.assert_allclose(moved.velocity(phi_large, s)[patch], flow.velocity(phi_small, s)[patch], atol=1e-12)
        const = 0.7
        v_small = flow.velocity(jnp.full((small,) * dim, const), s)
        v_large = moved.velocity(jnp.full((large,) * dim, const), s)
        np.testing.assert_allclose(v_large, jnp.full_like(v_large, v_small.reshape(-1)[0]), rtol=1e-10)
        assert float(moved.divergence(jnp.full((large,) * dim, const), s)) / large**dim == pytest.approx(
            float(flow.divergence(jnp.full((small,) * dim, const), s)) / small**dim, rel=1e-10)


def test_on_lattice_refuses_another_spacing_dimension_or_a_smaller_lattice():
    flow = ContinuousFlow(Lattice(2, 8, 2.0), 1.0)
    for bad in (Lattice(2, 12, 12.0), Lattice(3, 12, 3.0), Lattice(2, 6, 1.5), "N = 12"):
        with pytest.raises(InvalidModelError, match="same dimension and spacing"):
            flow.on_lattice(bad)
