"""Score models: exact divergence, symmetries, the EFT projection, initialization, serialization.

Run time is dominated by XLA compilation, so the model runs inside a few module-level jitted
functions that many tests share (same hyperparameters and shapes hit the cache; times are
passed as float64 arrays so they are traced, not static), and everything around the model --
inputs, weight perturbations, reference formulas, comparisons -- is NumPy: eager JAX
operations compile one kernel per shape.
"""

import io
import itertools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.lattice.geometry import Lattice
from rgdiff.models import MODEL_CLASSES, MODEL_NAMES, AbstractExactScoreModel, AbstractScoreModel, AbstractVelocityField, ContinuousFlow, ConvScore, GaussianFlowScore, eft_basis, eft_basis_divergence, EFTScore, InvalidModelError, TimeEmbedding, build_model, make_model, phi4_couplings, phi4_field_scale
from rgdiff.lattice.symmetry import lattice_orbits, stencil_orbits
from rgdiff.theory.phi4 import Phi4, paper_theory

KEY = jax.random.key(0)
LATTICES = [Lattice(1, 5, 2.0), Lattice(2, 4, 1.0), Lattice(3, 3, 3.0)]  # eps != 1, odd and even N
LAT2 = LATTICES[1]


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


def normal(rng, shape, scale=1.0, dtype=np.float64):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def times(t, dtype=np.float64):
    return np.asarray(t, dtype)


def perturb(model, rng, scale=0.3):
    """`model` with every floating-point array shifted by scale * N(0, 1) noise."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    leaves = [jnp.asarray((np.asarray(x) + scale * rng.standard_normal(x.shape)).astype(x.dtype)) for x in leaves]
    return eqx.combine(jax.tree.unflatten(treedef, leaves), static)


def cast(model, dtype):
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x).astype(dtype)) if eqx.is_inexact_array(x) else x, model)


def eft(lattice, **kwargs):
    kwargs.setdefault("coupling_init", (0.7, -0.4, -0.05))
    kwargs.setdefault("field_scale", 1.5)
    return EFTScore(lattice, time_scale=0.5, num_sin=3, num_tanh=2, num_time_basis=6, key=KEY, **kwargs)


def conv(lattice, **kwargs):
    return ConvScore(lattice, time_scale=0.5, channels=6, num_layers=2, num_time_basis=6, mlp_width=8, key=KEY, **kwargs)


def random_model(kind, lattice, rng, **kwargs):
    return perturb((eft if kind == "eft" else conv)(lattice, **kwargs), rng)


def laplacian(lattice, phi):
    """Delta phi = eps^-2 sum_i (phi(n+e_i) - 2 phi(n) + phi(n-e_i)), in NumPy."""
    out = -2.0 * lattice.dim * phi
    for ax in range(-lattice.dim, 0):
        out = out + np.roll(phi, 1, ax) + np.roll(phi, -1, ax)
    return out / lattice.spacing**2


def eft_terms(lattice, phi, f):
    return f[0] * laplacian(lattice, phi) + f[1] * phi + f[2] * phi**3


def eft_divergence(lattice, phi, f):
    """The divergence of f_1 Delta phi + f_2 phi + f_3 phi^3."""
    v = lattice.sites
    return f[0] * (-2.0 * lattice.dim * v / lattice.spacing**2) + f[1] * v + f[2] * 3.0 * np.sum(phi**2)


def numpy_jit(fn):
    """`eqx.filter_jit(fn)` with NumPy outputs."""
    jitted = eqx.filter_jit(fn)
    return lambda *args: jax.tree.map(np.asarray, jitted(*args))


def _trace(f, phi):
    return jnp.trace(jax.jacfwd(f)(phi).reshape(phi.size, phi.size))


score_fn = numpy_jit(lambda model, phi, t: model(phi, t))
batched_score = numpy_jit(lambda model, phi, t: jax.vmap(model)(phi, t))
batched_score_and_divergence = numpy_jit(lambda model, phi, t: jax.vmap(model.score_and_divergence)(phi, t))


@numpy_jit
def divergence_check(model, phi, t):
    """(model(phi, t), score_and_divergence(phi, t), trace of the Jacobian, couplings, residual)."""
    return (
        model(phi, t),
        model.score_and_divergence(phi, t),
        _trace(lambda p: model(p, t), phi),
        jnp.stack(model.couplings(t)),
        model.residual(phi, t),
    )


@numpy_jit
@eqx.filter_grad
def regression_grads(model, phi, ts, target):
    return jnp.mean((jax.vmap(model)(phi, ts) - target) ** 2)


# --- exact divergence -------------------------------------------------------------------------


@pytest.mark.parametrize("lattice", LATTICES, ids=str)
def test_eft_divergence_equals_jacobian_trace(lattice, rng):
    model = random_model("eft", lattice, rng)
    for t in (0.0, 0.07, 0.5):
        phi = normal(rng, lattice.shape, 1.3)
        score, (score2, div), trace, f, _ = divergence_check(model, phi, times(t))
        np.testing.assert_allclose(score2, score, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(div, trace, rtol=1e-10)
        # the residual's share is a sizeable part, so the test sees the projection terms
        assert abs(trace - eft_divergence(lattice, phi, f)) > 1e-3 * abs(trace)


def test_eft_degenerate_span_is_finite_and_exact(rng):
    """phi = 0 (no span) and a constant phi (Delta phi = 0, phi^3 || phi): no NaN anywhere."""
    model = random_model("eft", LAT2, rng)
    fields = [np.zeros(LAT2.shape), np.full(LAT2.shape, 0.8), np.full(LAT2.shape, 1e-9)]
    for phi in fields:
        score, (_, div), trace, _, residual = divergence_check(model, phi, times(0.1))
        assert np.all(np.isfinite(score)) and np.isfinite(div)
        np.testing.assert_allclose(div, trace, rtol=1e-9)
        assert np.linalg.norm(residual) < 10.0  # bounded
    np.testing.assert_array_equal(divergence_check(model, fields[0], times(0.1))[0], 0.0)
    batch = np.stack(fields + [normal(rng, LAT2.shape) for _ in range(5)])
    grads = regression_grads(model, batch, np.linspace(0.0, 0.5, 8), np.ones_like(batch))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# --- symmetries -------------------------------------------------------------------------------


def symmetry_maps(lattice):
    """Translations, reflections and axis permutations of a single configuration."""
    axes = list(range(lattice.dim))
    maps = []
    for ax in axes:
        maps.append((f"roll{ax}", lambda x, ax=ax: np.roll(x, 2, axis=ax)))
        maps.append((f"flip{ax}", lambda x, ax=ax: np.flip(x, axis=ax)))
    for perm in itertools.permutations(axes):
        if list(perm) != axes:
            maps.append((f"perm{perm}", lambda x, perm=perm: np.transpose(x, perm)))
    return maps


@pytest.mark.parametrize("kind", ["eft", "conv"])
@pytest.mark.parametrize("lattice", LATTICES, ids=str)
def test_equivariance(kind, lattice, rng):
    """Translations, reflections and axis permutations commute with the model; the EFT
    divergence is invariant."""
    model = random_model(kind, lattice, rng)
    phi = normal(rng, lattice.shape)
    t = times(0.2)
    if kind == "eft":
        score, (_, div), *_ = divergence_check(model, phi, t)
    else:
        score = score_fn(model, phi, t)
    assert np.linalg.norm(score) > 0
    for name, g in symmetry_maps(lattice):
        moved_phi = np.ascontiguousarray(g(phi))
        if kind == "eft":
            moved, (_, moved_div), *_ = divergence_check(model, moved_phi, t)
            np.testing.assert_allclose(moved_div, div, rtol=1e-10, err_msg=name)
        else:
            moved = score_fn(model, moved_phi, t)
        np.testing.assert_allclose(moved, g(score), rtol=1e-10, atol=1e-11, err_msg=name)


def test_z2_oddness(rng):
    phi, t = normal(rng, LAT2.shape), times(0.3)
    model = random_model("eft", LAT2, rng)
    np.testing.assert_allclose(divergence_check(model, -phi, t)[0], -divergence_check(model, phi, t)[0], rtol=1e-12, atol=1e-13)
    model = random_model("conv", LAT2, rng, z2_odd=True)
    np.testing.assert_allclose(score_fn(model, -phi, t), -score_fn(model, phi, t), rtol=1e-12, atol=1e-13)
    generic = random_model("conv", LAT2, rng)
    assert not np.allclose(score_fn(generic, -phi, t), -score_fn(generic, phi, t))


# --- the EFT structure [5.26] -----------------------------------------------------------------


@pytest.mark.parametrize(
    "lattice, mean, field_scale",
    [(LAT2, 0.0, 1.5), (LAT2, 84.0, 1.5)],
    ids=["symmetric", "broken-phase-like"],
)
def test_residual_orthogonal_to_eft_terms(lattice, mean, field_scale, rng):
    """`residual` is the score minus its EFT part and is orthogonal to Delta phi, phi and phi^3,
    also where phi ~ const makes phi and phi^3 nearly parallel (the broken phase at the paper's
    scale, phi = 84 +- 3; the Gram solve is normalized per column, so the field scale does not
    change its conditioning)."""
    model = random_model("eft", lattice, rng, field_scale=field_scale)
    for t in (0.0, 0.3):
        phi = mean + normal(rng, lattice.shape, 3.0)
        score, (_, div), trace, f, residual = divergence_check(model, phi, times(t))
        np.testing.assert_allclose(div, trace, rtol=1e-9)
        scale = np.max(np.abs(score))
        np.testing.assert_allclose(score - eft_terms(lattice, phi, f), residual, rtol=0, atol=1e-12 * scale)
        r = residual.reshape(-1)
        assert np.linalg.norm(r) > 1e-3
        for g in (laplacian(lattice, phi), phi, phi**3):
            g = g.reshape(-1)
            assert abs(np.dot(g, r)) < 1e-9 * np.linalg.norm(g) * np.linalg.norm(r)


@numpy_jit
def uv_check(model, theory, phi, ts):
    scores, divs = jax.vmap(model.score_and_divergence, in_axes=(None, 0))(phi, ts)
    return scores, divs, theory.score(phi), _trace(theory.score, phi)


@pytest.mark.parametrize("theory", [paper_theory(-2.0), Phi4(Lattice(1, 6, 6.0), 0.5, 1.2)], ids=["paper", "d1"])
def test_eft_initial_model_is_the_uv_score(theory, rng):
    """At initialization the model is exactly sum_i f_init_i g_i, here the UV score (f_init from
    `phi4_couplings`), at every t, and couplings(t) == f_init."""
    model = make_model("eft-score", theory, time_scale=0.5, key=KEY)
    assert isinstance(model, EFTScore) and model.coupling_init == phi4_couplings(theory)
    phi = model.field_scale + normal(rng, theory.lattice.shape)
    ts = np.array([0.0, 0.01, 0.5, 0.7])
    scores, divs, uv_score, div_exact = uv_check(model, theory, phi, ts)
    prior = eft_terms(theory.lattice, phi, model.coupling_init)
    for i in range(len(ts)):
        np.testing.assert_allclose(scores[i], prior, rtol=1e-14, atol=1e-14 * np.max(np.abs(prior)))
        np.testing.assert_allclose(divs[i], div_exact, rtol=1e-12)
    np.testing.assert_allclose(prior, uv_score, rtol=1e-12, atol=1e-12 * np.max(np.abs(uv_score)))
    # couplings(t) is vectorized over any shape of t; eagerly, as users call it
    for f, value in zip(model.couplings(ts.reshape(2, 2)), model.coupling_init):
        assert f.shape == (2, 2)
        np.testing.assert_array_equal(f, value)
    for f, value in zip(model.couplings(0.25), model.coupling_init):
        assert f.shape == ()
        np.testing.assert_array_equal(f, value)
    f = jax.vmap(model.couplings)(ts)  # as `rgdiff.modeldir.couplings_table` calls it
    np.testing.assert_array_equal(np.stack(f, axis=-1), np.broadcast_to(model.coupling_init, (4, 3)))
    params = model.effective_parameters(ts)
    np.testing.assert_allclose(params["z"], 1.0, rtol=1e-13)
    np.testing.assert_allclose(params["m2"], theory.m2, rtol=1e-13)
    np.testing.assert_allclose(params["lam"], theory.lam, rtol=1e-13)


def test_scale_helpers():
    theory = paper_theory(-2.0)
    assert abs(phi4_field_scale(theory) / np.sqrt(6 * 2.0 / 0.0017) - 1) < 1e-3  # the vacuum, ~84
    free = Phi4(Lattice(2, 8, 8.0), 1.0, 0.0)
    p = np.arange(8)
    phat_sq = (2 * np.sin(np.pi * p / 8)) ** 2  # lattice units
    variance = np.sum(1.0 / (phat_sq[:, None] + phat_sq[None, :] + 1.0)) / free.lattice.volume
    np.testing.assert_allclose(phi4_field_scale(free), np.sqrt(variance), rtol=1e-12)
    np.testing.assert_allclose(phi4_couplings(theory), (0.0025, 0.005, -0.0025 * 0.0017 / 6), rtol=1e-12)


@numpy_jit
def prior_check(model, theory, phi, t):
    return model(phi, t), theory.score(phi)


def test_conv_initial_model_is_the_prior(rng):
    theory = Phi4(LAT2, -2.0, 0.5)
    model = make_model("score", theory, time_scale=0.5, uv_prior=True, channels=6, num_layers=2, num_time_basis=6, mlp_width=8, key=KEY)
    assert isinstance(model, ConvScore) and model.prior == phi4_couplings(theory)
    phi = normal(rng, LAT2.shape)
    score, uv_score = prior_check(model, theory, phi, times(0.3))
    np.testing.assert_allclose(score, uv_score, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(score_fn(conv(LAT2), phi, times(0.3)), 0.0)


def test_zero_initialized_parts_get_gradients(rng):
    """Residual weights and the last coupling layer start at zero but do train."""
    phi = normal(rng, (8, *LAT2.shape))
    target = normal(rng, (8, *LAT2.shape))
    ts = np.linspace(0.0, 0.5, 8)
    grads = regression_grads(eft(LAT2), phi, ts, target)
    assert np.linalg.norm(grads.kernel_weights) > 0
    assert np.linalg.norm(grads.coupling_mlp.weights[-1]) > 0
    grads_c = regression_grads(conv(LAT2), phi, ts, target)
    assert np.linalg.norm(grads_c.conv_weights[-1]) > 0


# --- batching, dtypes, serialization ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["eft", "conv"])
def test_vmap_and_float32(kind, rng):
    """vmap with per-sample times equals one-by-one calls; the model cast to float32 (and one
    built in float32) agrees in float32 under strict dtype promotion and rank promotion errors."""
    model = random_model(kind, LAT2, rng)
    phi = normal(rng, (5, *LAT2.shape))
    phi[4] = 0.0
    ts = np.array([0.0, 0.01, 0.1, 0.3, 0.5])
    if kind == "eft":
        batched, divs = batched_score_and_divergence(model, phi, ts)
        for i in range(5):
            score, (_, div), *_ = divergence_check(model, phi[i], ts[i])
            np.testing.assert_allclose(batched[i], score, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(divs[i], div, rtol=1e-12)
    else:
        batched = batched_score(model, phi, ts)
        for i in range(5):
            np.testing.assert_allclose(batched[i], score_fn(model, phi[i], ts[i]), rtol=1e-12, atol=1e-12)

    fresh = (eft if kind == "eft" else conv)(LAT2, dtype="float32")
    leaves = jax.tree.leaves(eqx.filter(fresh, eqx.is_inexact_array))
    assert {x.dtype for x in leaves} == {np.dtype("float32")} and fresh.describe()["dtype"] == "float32"
    model32 = cast(model, np.float32)
    assert jax.tree.structure(fresh) == jax.tree.structure(model32)
    phi32, ts32 = phi.astype(np.float32), ts.astype(np.float32)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        if kind == "eft":
            fn = numpy_jit(lambda m, p, t: (*jax.vmap(m.score_and_divergence)(p, t), m.couplings(t)))
            s32, d32, f32 = fn(model32, phi32, ts32)
            assert d32.dtype == f32[0].dtype == np.float32 and np.all(np.isfinite(d32))
            np.testing.assert_allclose(d32, divs, rtol=1e-4)
        else:
            s32 = numpy_jit(lambda m, p, t: jax.vmap(m)(p, t))(model32, phi32, ts32)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, batched, rtol=0, atol=1e-4 * np.max(np.abs(batched)))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_describe_build_round_trip(name, rng, tmp_path):
    kind, kwargs = ("eft", {}) if name == "eft-score" else ("conv", {"z2_odd": True})
    model = random_model(kind, LAT2, rng, **kwargs)
    assert isinstance(model, MODEL_CLASSES[name]) and isinstance(model, AbstractScoreModel)
    desc = json.loads(json.dumps(model.describe()))
    assert desc["model"] == name
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    buffer.seek(0)
    skeleton = build_model(desc, LAT2, key=jax.random.key(1))
    assert skeleton.describe() == model.describe()
    loaded = eqx.tree_deserialise_leaves(buffer, skeleton)
    path = tmp_path / "params.eqx"
    eqx.tree_serialise_leaves(path, model)
    loaded_file = eqx.tree_deserialise_leaves(path, build_model(desc, LAT2, key=jax.random.key(2)))
    phi, t = normal(rng, LAT2.shape), times(0.2)
    fn = divergence_check if isinstance(model, AbstractExactScoreModel) else score_fn
    expected = fn(model, phi, t)
    for m in (loaded, loaded_file):
        for x, y in zip(jax.tree.leaves(fn(m, phi, t)), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(x, y)


def test_build_model_rejects_bad_descriptions():
    desc = conv(LAT2).describe()
    with pytest.raises(InvalidModelError, match="unknown score model"):
        build_model({**desc, "model": "unet"}, LAT2, key=KEY)
    with pytest.raises(InvalidModelError, match="lattice"):
        build_model(desc, Lattice(2, 6, 1.0), key=KEY)
    with pytest.raises(InvalidModelError, match="bad description"):
        build_model({**desc, "depth": 3}, LAT2, key=KEY)
    with pytest.raises(InvalidModelError):
        build_model({"channels": 3}, LAT2, key=KEY)
    with pytest.raises(InvalidModelError, match="unknown score model"):
        make_model("unet", Phi4(LAT2, 1.0, 0.0), time_scale=1.0, key=KEY)


def test_flags_and_bad_arguments():
    assert EFTScore.has_exact_divergence and not ConvScore.has_exact_divergence
    assert issubclass(EFTScore, AbstractExactScoreModel) and issubclass(GaussianFlowScore, AbstractExactScoreModel)
    assert issubclass(ConvScore, AbstractScoreModel) and not issubclass(ConvScore, AbstractExactScoreModel)
    assert issubclass(ContinuousFlow, AbstractVelocityField) and not issubclass(ContinuousFlow, AbstractScoreModel)
    model = conv(LAT2)
    with pytest.raises(NotImplementedError, match="no exact divergence"):
        model.divergence(np.zeros(LAT2.shape), 0.1)
    with pytest.raises(InvalidModelError, match="vmap"):
        model(np.zeros((2, *LAT2.shape)), 0.1)
    with pytest.raises(InvalidModelError, match="vmap"):
        eft(LAT2)(np.zeros(LAT2.shape), np.zeros(2))
    bad = [
        (EFTScore, {"time_scale": 0.0}),
        (EFTScore, {"time_scale": 1.0, "field_scale": -1.0}),
        (EFTScore, {"time_scale": 1.0, "coupling_scale": (1.0, 0.0, 1.0)}),
        (EFTScore, {"time_scale": 1.0, "coupling_init": (1.0, 2.0)}),
        (EFTScore, {"time_scale": 1.0, "ridge": 0.0}),
        (EFTScore, {"time_scale": 1.0, "dtype": "int32"}),
        (EFTScore, {"time_scale": 1.0, "num_sin": 2.5}),
        (ConvScore, {"time_scale": 1.0, "kernel_size": 2}),
        (ConvScore, {"time_scale": 1.0, "num_layers": 0}),
        (ConvScore, {"time_scale": float("nan")}),
    ]
    for cls, kwargs in bad:
        with pytest.raises(InvalidModelError):
            cls(LAT2, key=KEY, **kwargs)


# --- pieces -----------------------------------------------------------------------------------


def test_orbits_are_hypercubic_invariant():
    for dim, size in [(1, 5), (2, 4), (2, 5), (3, 4)]:
        num, index = lattice_orbits(dim, size)
        assert index.shape == (size,) * dim and index.flat[0] == 0 and (index == 0).sum() == 1
        assert set(np.unique(index)) == set(range(num))
        for ax in range(dim):
            np.testing.assert_array_equal(index, np.roll(np.flip(index, ax), 1, ax))  # n -> -n
        np.testing.assert_array_equal(index, np.transpose(index, tuple(reversed(range(dim)))))
    assert lattice_orbits(2, 20)[0] == 66
    num, index = stencil_orbits(2, 3)
    assert num == 3 and index[1, 1] == 0 and index[0, 1] == index[1, 0] and index[0, 0] == index[2, 2]


def test_time_embedding():
    emb = TimeEmbedding(2.0, num_basis=5, warp=100.0)
    assert emb.size == 6
    h, u, dh = numpy_jit(lambda e, t: (jax.vmap(e)(t), e.warped_time(t), jax.jacfwd(e)(t[0])))(emb, np.array([0.0, 2.0]))
    assert h.shape == (2, 6)
    np.testing.assert_allclose(h[0, :2], [1.0, 1.0])  # the constant, then the first centre at u = 0
    np.testing.assert_allclose(h[1, -1], 1.0)
    np.testing.assert_allclose(u, [0.0, 1.0], atol=1e-15)
    assert np.all(np.isfinite(dh))  # smooth at t = 0
    assert TimeEmbedding(1.0, 3).warped_time(0.25) == 0.25
    with pytest.raises(InvalidModelError):
        TimeEmbedding(1.0, 1)


# --- a field scale that follows the RG flow -------------------------------------------------------

FLOW = [[2.0, 1.5], [-0.3, 7.0], [0.1, 0.0]]  # sigma(t)^2 = 1.5^2 + 2 (e^{-3t} - 1) - 0.3 (e^{-14t} - 1)


def sigma_reference(t, field_scale=1.5, flow=FLOW):
    return np.sqrt(field_scale**2 + sum(c * np.expm1(-2.0 * r * t) for c, r in flow))


@numpy_jit
def sigma_values(model, ts):
    return jax.vmap(model.sigma)(ts)


@pytest.mark.parametrize("lattice", LATTICES, ids=str)
def test_eft_flowing_field_scale_divergence_equals_jacobian_trace(lattice, rng):
    """With sigma(t) the residual sees phi / sigma(t); the divergence stays exact and the
    couplings' scales follow (sigma(0) / sigma(t))^k."""
    model = random_model("eft", lattice, rng, field_scale_flow=FLOW)
    ts = np.array([0.0, 0.07, 0.5])
    np.testing.assert_allclose(sigma_values(model, ts), sigma_reference(ts), rtol=1e-13)
    np.testing.assert_allclose(model.field_scale_ir, np.sqrt(1.5**2 - 2.0 + 0.3), rtol=1e-13)
    for t in ts:
        phi = normal(rng, lattice.shape, 1.3)
        score, (score2, div), trace, f, residual = divergence_check(model, phi, times(t))
        np.testing.assert_allclose(score2, score, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(div, trace, rtol=1e-10)
        assert abs(trace - eft_divergence(lattice, phi, f)) > 1e-3 * abs(trace)


def test_flowing_field_scale_residual_and_couplings(rng):
    """r_perp is evaluated at x = phi / sigma(t) (compare a constant-scale twin with the same
    weights), and f_i(t) - f_init_i scales as (sigma(0) / sigma(t))^k_i."""
    base = random_model("eft", LAT2, rng)

    def with_weights_of_base(**changes):
        desc = {k: v for k, v in base.describe().items() if k not in ("model", "lattice")}
        skeleton = EFTScore(LAT2, **{**desc, **changes}, key=KEY)
        return jax.tree.unflatten(jax.tree.structure(skeleton), jax.tree.leaves(base))

    flowing = with_weights_of_base(field_scale_flow=FLOW)
    phi = normal(rng, LAT2.shape, 1.3)
    for t in (0.0, 0.2, 0.6):
        twin = with_weights_of_base(field_scale=float(sigma_reference(t)))
        res = divergence_check(flowing, phi, times(t))[4]
        np.testing.assert_allclose(res, divergence_check(twin, phi, times(t))[4], rtol=1e-11, atol=1e-12)
        f_flow = divergence_check(flowing, phi, times(t))[3]
        f_base = divergence_check(base, phi, times(t))[3]
        init = np.asarray(base.coupling_init)
        ratio = (1.5 / sigma_reference(t)) ** np.array([0.0, 0.0, 2.0])
        np.testing.assert_allclose(f_flow - init, (f_base - init) * ratio, rtol=1e-11, atol=1e-15)


def test_flowing_field_scale_keeps_symmetries_init_and_float32(rng):
    lattice = LAT2
    fresh = eft(lattice, field_scale_flow=FLOW)
    phi, t = normal(rng, lattice.shape), times(0.3)
    score, (_, div), trace, f, residual = divergence_check(fresh, phi, t)
    np.testing.assert_array_equal(residual, 0.0)  # exact initialization: zero residual
    np.testing.assert_allclose(score, eft_terms(lattice, phi, fresh.coupling_init), rtol=1e-13, atol=1e-13)
    model = perturb(fresh, rng)
    score = divergence_check(model, phi, t)[0]
    np.testing.assert_allclose(divergence_check(model, -phi, t)[0], -score, rtol=1e-12, atol=1e-13)
    for name, g in symmetry_maps(lattice):
        moved = divergence_check(model, np.ascontiguousarray(g(phi)), t)[0]
        np.testing.assert_allclose(moved, g(score), rtol=1e-10, atol=1e-11, err_msg=name)
    model32 = cast(model, np.float32)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        s32, d32 = numpy_jit(lambda m, p, t: m.score_and_divergence(p, t))(model32, phi.astype(np.float32), t.astype(np.float32))
    assert s32.dtype == d32.dtype == np.float32
    _, (s64, d64), *_ = divergence_check(model, phi, t)
    np.testing.assert_allclose(d32, d64, rtol=1e-4)
    np.testing.assert_allclose(s32, s64, rtol=0, atol=1e-4 * np.max(np.abs(s64)))
    conv_model = random_model("conv", lattice, rng, field_scale=1.5, field_scale_flow=FLOW, z2_odd=True)
    np.testing.assert_allclose(sigma_values(conv_model, np.array([0.0, 0.4])), sigma_reference(np.array([0.0, 0.4])), rtol=1e-13)
    c = score_fn(conv_model, phi, t)
    np.testing.assert_allclose(score_fn(conv_model, -phi, t), -c, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_flowing_field_scale_describe_build_round_trip(name, rng):
    kind = "eft" if name == "eft-score" else "conv"
    extra = {"coupling_scale_powers": (0.0, 1.0, 2.0)} if kind == "eft" else {"field_scale": 1.5}
    model = random_model(kind, LAT2, rng, field_scale_flow=FLOW, **extra)
    desc = json.loads(json.dumps(model.describe()))
    assert desc["field_scale_flow"] == FLOW
    skeleton = build_model(desc, LAT2, key=jax.random.key(1))
    assert skeleton.describe() == model.describe()
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    buffer.seek(0)
    loaded = eqx.tree_deserialise_leaves(buffer, skeleton)
    phi, t = normal(rng, LAT2.shape), times(0.2)
    fn = divergence_check if isinstance(model, AbstractExactScoreModel) else score_fn
    for x, y in zip(jax.tree.leaves(fn(loaded, phi, t)), jax.tree.leaves(fn(model, phi, t))):
        np.testing.assert_array_equal(x, y)
    # descriptions written before field_scale_flow existed still build (constant scale)
    old = {k: v for k, v in desc.items() if k not in ("field_scale_flow", "coupling_scale_powers")}
    assert build_model(old, LAT2, key=KEY).field_scale_flow == ()


def test_flowing_field_scale_rejects_bad_terms():
    for flow in ([[1.0, -1.0]], [[float("nan"), 1.0]], [[3.0, 1.0]], [[1.0]], "abc", [[-5.0, 0.01], [4.0, 0.5]]):
        with pytest.raises(InvalidModelError):
            eft(LAT2, field_scale=1.5, field_scale_flow=flow)
    with pytest.raises(InvalidModelError):
        conv(LAT2, field_scale=1.0, field_scale_flow=[[2.0, 1.0]])  # sigma(inf)^2 = -1


def test_field_scale_flow_terms_is_the_exact_variance_of_p_t(rng):
    """For Carosso-M, sigma(t)^2 from `field_scale_flow_terms` equals L^-d sum_p (a_t^2 P0 + v_t)."""
    from rgdiff.models.scales import field_scale_flow_terms
    from rgdiff.rg.schemes import Carosso

    lattice = Lattice(2, 4, 1.0)
    scheme = Carosso(M=1.0, noise=0.7, speed=1.3)
    power = np.abs(normal(rng, lattice.shape, 0.05)) + 0.01
    power[0, 0] = 40.0  # a large zero mode, as in the broken phase
    prior = np.asarray(scheme.prior_spectrum(lattice, half=False))
    rates = scheme.speed * (np.asarray(lattice.phat_sq()) + scheme.M**2)
    sigma0, terms = field_scale_flow_terms(lattice, power, prior, rates, max_terms=100)
    model = eft(lattice, field_scale=sigma0, field_scale_flow=terms)
    ts = np.array([0.0, 1e-3, 0.05, 0.4, 2.0, 9.0])
    exact = []
    for t in ts:
        a, v = (np.asarray(x) for x in scheme.kernel(float(t), lattice, half=False))
        exact.append(np.sqrt(np.sum(a**2 * power + v) / lattice.volume))
    np.testing.assert_allclose(sigma_values(model, ts), exact, rtol=1e-12)
    sigma0_few, few = field_scale_flow_terms(lattice, power, prior, rates, max_terms=3)
    assert len(few) <= 3 and sigma0_few == sigma0
    approx = eft(lattice, field_scale=sigma0, field_scale_flow=few)
    np.testing.assert_allclose(sigma_values(approx, ts), exact, rtol=0.05)


def test_eft_basis_and_its_divergence():
    # g = (Delta phi, phi, phi^3) [5.26]: the UV score is phi4_couplings . g, and div g is the
    # trace of the Jacobian (checked against autodiff); NumPy input stays NumPy (host estimators)
    lat = Lattice(2, 4, 2.0)
    theory = Phi4(lat, 0.7, 3.0)
    phi = jnp.asarray(np.random.default_rng(5).normal(size=lat.shape))
    g = eft_basis(phi, lat)
    f = phi4_couplings(theory)
    np.testing.assert_allclose(sum(fi * gi for fi, gi in zip(f, g)), theory.score(phi), rtol=1e-12, atol=1e-12)
    for lattice_units in (False, True):
        div = eft_basis_divergence(phi, lat, lattice_units=lattice_units)
        for i in range(3):
            jac = jax.jacfwd(lambda x: eft_basis(x, lat, lattice_units=lattice_units)[i])(phi)
            trace = np.trace(np.asarray(jac).reshape(lat.sites, lat.sites))
            np.testing.assert_allclose(div[i], trace, rtol=1e-12)
    host = eft_basis(np.asarray(phi), lat)
    assert all(isinstance(x, np.ndarray) for x in host)
    np.testing.assert_allclose(host[0], g[0], rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("lattice", LATTICES, ids=str)
def test_eft_zero_mode_term_divergence_and_action(lattice, rng):
    """The zero-mode (constraint potential) term adds g(M, t)/V on every site; the divergence stays
    exact, the term is odd in phi, and its sum over sites is g, the derivative along the uniform
    direction: at initialization (zero weights) the model is unchanged."""
    base = eft(lattice)
    with_term = eft(lattice, zero_mode_features=3, zero_mode_scale=2.0, zero_mode_scale_flow=[[3.5, 1.0]])
    phi = normal(rng, lattice.shape, 1.3) + 0.8
    np.testing.assert_allclose(with_term(phi, 0.1), base(phi, 0.1), rtol=1e-13)  # zero at initialization
    model = perturb(with_term, rng)
    for t in (0.0, 0.07, 0.5):
        score, (score2, div), trace, _, _ = divergence_check(model, phi, times(t))
        np.testing.assert_allclose(score2, score, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(div, trace, rtol=1e-10)
        np.testing.assert_allclose(model(-phi, t), -np.asarray(model(phi, t)), rtol=1e-12, atol=1e-12)
    g, _ = model._zero_mode_term(jnp.asarray(phi), jnp.asarray(0.3))
    no_term = eqx.tree_at(lambda m: m.zero_mode_weights, model, jnp.zeros_like(model.zero_mode_weights))
    np.testing.assert_allclose(np.sum(np.asarray(model(phi, 0.3)) - np.asarray(no_term(phi, 0.3))), float(g), rtol=1e-10)
    # and the description rebuilds the same model
    desc = {k: v for k, v in model.describe().items() if k not in ("model", "lattice")}
    assert EFTScore(lattice, **desc, key=KEY).zero_mode_scale_flow == ((3.5, 1.0),)


def test_float32_sincos_matches_float64_and_its_derivative():
    """The float32 sin and cos of the sine features (`_layers.sincos`, not XLA's) agree with
    float64 to float32 precision over the range the features see and beyond, are odd and even,
    and the cos is the derivative of the sin (what makes the CNF's and EFT's divergences exact)."""
    from rgdiff.models._layers import sincos

    x = jnp.concatenate([jnp.linspace(-200.0, 200.0, 400_001, dtype=jnp.float32),
                         jnp.array([0.0, np.pi / 4, np.pi / 2, np.pi, 1e3], dtype=jnp.float32)])
    s, c = sincos(x)
    assert s.dtype == c.dtype == jnp.float32
    x64 = np.asarray(x, dtype=np.float64)
    np.testing.assert_allclose(s, np.sin(x64), rtol=0, atol=1.5e-7)
    np.testing.assert_allclose(c, np.cos(x64), rtol=0, atol=1.5e-7)
    np.testing.assert_array_equal(sincos(-x)[0], -s)
    np.testing.assert_array_equal(sincos(-x)[1], c)
    grid = jnp.linspace(-30.0, 30.0, 20_001, dtype=jnp.float32)
    derivative = jax.vmap(jax.grad(lambda v: sincos(v)[0]))(grid)
    np.testing.assert_allclose(derivative, sincos(grid)[1], rtol=0, atol=3e-7)
    s64, c64 = sincos(jnp.asarray(x64))  # float64 goes to jnp.sin / jnp.cos
    np.testing.assert_allclose(s64, np.sin(x64), rtol=0, atol=1e-15)
