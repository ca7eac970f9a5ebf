"""The flow ansatz and its energy estimators [6.13] (issue 7): exact divergence, propagated score and
Laplacian, score form vs local-energy form, and the variational gradient against closed forms."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.quantum.ansatz import FlowAnsatz, feature_derivatives
from rgdiff.quantum.energy import energy_loss, estimate_energy, noise, sample_with_laplacian
from rgdiff.quantum.exact import gaussian_mode_energy, gaussian_state
from rgdiff.quantum.hamiltonian import Hamiltonian

H = Hamiltonian.make(1, 8, m2=1.0, lam=6.0)
M2 = 2.0  # prior mass^2 of every model here (the static feature scale then matches: one compilation)


@pytest.fixture(scope="module")
def gaussian_model():
    return FlowAnsatz(H, M2, steps=16)


@pytest.fixture(scope="module")
def random_model(gaussian_model):
    keys = iter(jax.random.split(jax.random.key(7), 3))
    return eqx.tree_at(
        lambda m: (m.rates, m.kernels),
        gaussian_model,
        (0.3 * jax.random.normal(next(keys), gaussian_model.rates.shape),
         0.3 * jax.random.normal(next(keys), gaussian_model.kernels.shape)),
    )


def test_feature_derivatives_match_autodiff():
    u = jnp.linspace(-4, 4, 41)
    one = jnp.ones_like(u)
    f, d1, d2, d3 = feature_derivatives(u)
    # elementwise features: a JVP with unit tangent is the derivative, for all features at once
    for k, higher in enumerate((d1, d2, d3)):
        np.testing.assert_allclose(jax.jvp(lambda x: feature_derivatives(x)[k], (u,), (one,))[1], higher, atol=1e-11)
    np.testing.assert_allclose(f, -feature_derivatives(-u)[0], atol=1e-15)  # odd: the Z2 of the ground state


def test_prior_is_the_free_ground_state_of_mass_M():
    # |Psi_M|^2 ∝ exp(-eps^d phi.sqrt(K_M) phi): covariance eps^-d (2 sqrt(K_M))^-1, K_M = -Delta + M^2
    h = Hamiltonian(2, 4, 1.0, 1.0, 0.0)
    model = FlowAnsatz(h, 3.0)
    kM = h.stiffness_matrix() - h.m2 * np.eye(h.sites) + 3.0 * np.eye(h.sites)
    w, u = np.linalg.eigh(kM)
    cov = u @ np.diag(1 / (2 * h.cell * np.sqrt(w))) @ u.T
    x = np.random.default_rng(0).normal(size=h.shape)
    y = x.reshape(-1)
    expected = -0.5 * y @ np.linalg.solve(cov, y) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    assert float(model.prior_log_prob(jnp.asarray(x))) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(model.prior_score(jnp.asarray(x)).reshape(-1), -np.linalg.solve(cov, y), rtol=1e-10)
    # C^(1/2) C^(1/2) = C
    root = np.stack([np.asarray(model.prior_sample(jnp.asarray(e.reshape(h.shape)))).reshape(-1) for e in np.eye(h.sites)], 1)
    np.testing.assert_allclose(root @ root.T, cov, rtol=1e-10, atol=1e-14)


def test_divergence_is_exact(random_model):
    x = jnp.asarray(np.random.default_rng(1).normal(size=H.shape))

    @eqx.filter_jit
    def both(model, x, s):
        jac = jax.jacfwd(lambda y: model.velocity(y, s))(x).reshape(H.sites, H.sites)
        div, grad_div = model.divergence(x, s)
        return jnp.trace(jac), div, jax.grad(lambda y: model.divergence(y, s)[0])(x), grad_div

    for s in (0.0, 0.37, 1.0):
        tr, div, gd_auto, gd = both(random_model, x, jnp.asarray(s))
        assert float(div) == pytest.approx(float(tr), rel=1e-12)
        np.testing.assert_allclose(gd, gd_auto, rtol=1e-10, atol=1e-12)


def _batch(model, rows):
    """Run rows of white noise through the jitted flow at the estimator's chunk shape (one compilation)."""
    xi = noise(jax.random.key(99), H, 512).at[: len(rows)].set(jnp.stack(rows))
    return sample_with_laplacian(model, xi)


def test_flow_is_odd_and_translation_invariant(random_model):
    xi = jax.random.normal(jax.random.key(3), H.shape)
    x = _batch(random_model, [xi, -xi, jnp.roll(xi, 3)])[0]
    np.testing.assert_allclose(x[1], -x[0], atol=1e-12)
    np.testing.assert_allclose(x[2], jnp.roll(x[0], 3), atol=1e-12)


def test_propagated_log_prob_score_laplacian_match_autodiff(random_model):
    """Forward RK4 of (phi, log p, score, Hessian) vs autodiff of the backward-integrated log p
    (two discretisations of one ODE: they agree to the RK4 error)."""
    x, logp, score, lap = (a[0] for a in _batch(random_model, [jax.random.normal(jax.random.key(2), H.shape)]))

    @eqx.filter_jit
    def backward(model, xs):
        return jax.vmap(model.log_prob)(xs), jax.vmap(jax.grad(model.log_prob))(xs)

    # Lap log p by central differences of the autodiff score (error O(h^2))
    h = 1e-4
    shifts = h * jnp.eye(H.sites).reshape((H.sites,) + H.shape)
    b_logp, b_score = backward(random_model, jnp.concatenate([x[None], x + shifts, x - shifts]))
    assert float(b_logp[0]) == pytest.approx(float(logp), abs=5e-4)
    np.testing.assert_allclose(b_score[0], score, rtol=1e-3, atol=1e-3)
    plus, minus = b_score[1 : 1 + H.sites], b_score[1 + H.sites :]
    fd_lap = sum(float(plus[i].reshape(-1)[i] - minus[i].reshape(-1)[i]) for i in range(H.sites)) / (2 * h)
    assert fd_lap == pytest.approx(float(lap), rel=1e-3)


@pytest.fixture(scope="module")
def gaussian_estimate(gaussian_model):
    return estimate_energy(gaussian_model, jax.random.key(11), 4096)


def test_gaussian_limit_energy_matches_closed_form(gaussian_estimate):
    """Zero flow: the ansatz is the Gaussian of mass M, whose energy is known in closed form."""
    exact = gaussian_state(H, M2).energy
    for form in ("score_form", "local_form"):
        est = gaussian_estimate[form]
        assert abs(est.value - exact) < 4 * est.error, (form, est, exact)


def test_linear_flow_energy_matches_closed_form(gaussian_model):
    """A constant rate alpha on one momentum orbit multiplies its variances by exp(2 alpha)."""
    orbit, alpha = 1, 0.4
    model = eqx.tree_at(lambda m: m.rates, gaussian_model, gaussian_model.rates.at[0, orbit].set(alpha))
    c = 1 / (2 * H.cell * np.sqrt(H.phat_sq() + M2))
    c = np.where(H.momentum_classes() == orbit, c * math.exp(2 * alpha), c)
    exact = gaussian_mode_energy(H, c)
    est = estimate_energy(model, jax.random.key(12), 4096)
    for form in ("score_form", "local_form"):
        assert abs(est[form].value - exact) < 4 * est[form].error, (form, est[form], exact)


def test_score_and_local_forms_agree_on_the_same_samples(random_model):
    est = estimate_energy(random_model, jax.random.key(13), 4096)
    s, loc = est["score_form"], est["local_form"]
    assert abs(s.value - loc.value) < 4 * math.hypot(s.error, loc.error), (s, loc)
    # a genuinely non-Gaussian state: the test is not the trivial Gaussian case
    assert abs(loc.value - gaussian_state(H, M2).energy) > 10 * loc.error


def test_variational_gradient_matches_closed_form_at_gaussian_limit(gaussian_model):
    """Pathwise gradient of the score-form energy vs d/dtheta of the closed-form Gaussian energy."""
    grad_fn = eqx.filter_jit(eqx.filter_grad(energy_loss))
    grads = [grad_fn(gaussian_model, noise(jax.random.key(100 + i), H, 256)) for i in range(16)]
    g_mass = np.array([float(g.log_mass_sq) for g in grads])
    orbit = 2
    g_rate = np.array([float(g.rates[0, orbit]) for g in grads])

    h = 1e-5
    fd_mass = (gaussian_state(H, M2 * math.exp(h)).energy - gaussian_state(H, M2 * math.exp(-h)).energy) / (2 * h)
    c = 1 / (2 * H.cell * np.sqrt(H.phat_sq() + M2))
    in_orbit = H.momentum_classes() == orbit

    def e_rate(a):
        return gaussian_mode_energy(H, np.where(in_orbit, c * math.exp(2 * a), c))

    fd_rate = (e_rate(h) - e_rate(-h)) / (2 * h)
    for est, exact in ((g_mass, fd_mass), (g_rate, fd_rate)):
        err = est.std(ddof=1) / math.sqrt(est.size)
        assert abs(est.mean() - exact) < 4 * err + 1e-9, (est.mean(), err, exact)
        assert abs(exact) > 4 * err  # the check has power: the gradient is resolved
