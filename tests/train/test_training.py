"""Score matching on the exact RG kernel: the loss against its closed form, and a free field learned."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.theory.gaussian import free_field_spectrum, sample_gaussian_field
from rgdiff.train.initial import initial_model, prior_couplings
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.gaussian_score import GaussianFlowScore
from rgdiff.objectives.score_matching import anchor_loss, dsm_loss_at, fisher_scale
from rgdiff.rg import make_scheme
from rgdiff.models.base import cast_model
from rgdiff.train.score import TrainSettings, default_horizon, train

LAT = Lattice.lattice_units(2, 8)
M2 = 0.5
SCHEME = make_scheme("carosso", M=1.0)


@pytest.fixture(scope="module")
def free_data():
    return np.asarray(sample_gaussian_field(jax.random.key(3), LAT, free_field_spectrum(LAT, M2), (20000,)))


@pytest.mark.parametrize("t", [0.01, 0.3, 2.0])
def test_dsm_loss_of_exact_score_has_closed_form(free_data, t):
    """E[loss] at the exact score = mean_p a_t^2 G_0 / G_t (the unexplained part of the target)."""
    exact = GaussianFlowScore.free_field(LAT, SCHEME, M2)
    phi0 = jnp.asarray(free_data[:4000])
    times = jnp.full((phi0.shape[0],), t)
    per_batch = [float(dsm_loss_at(exact, SCHEME, LAT, phi0[i::8], times[i::8], jax.random.key(i))) for i in range(8)]
    a, v = (np.asarray(x) for x in SCHEME.kernel(t, LAT, half=False))
    g0 = 1.0 / (np.asarray(LAT.phat_sq()) + M2)
    expected = np.mean(a**2 * g0 / (a**2 * g0 + v))
    mean, err = np.mean(per_batch), np.std(per_batch, ddof=1) / np.sqrt(len(per_batch))
    assert abs(mean - expected) < 4 * err + 1e-9, (mean, err, expected)
    if t > 1.0:
        return  # p_t has forgotten G_0 there; a wrong G_0 is invisible
    # and any other score does worse (paired: same fields, same noise)
    wrong = GaussianFlowScore.free_field(LAT, SCHEME, M2, scale=1.3)
    diff = [float(dsm_loss_at(wrong, SCHEME, LAT, phi0[i::8], times[i::8], jax.random.key(i))) - per_batch[i] for i in range(8)]
    assert np.mean(diff) > 4 * np.std(diff, ddof=1) / np.sqrt(len(diff))


def test_horizon_forgets_the_uv(free_data):
    T = default_horizon(SCHEME, free_data, LAT)
    a, v = (np.asarray(x) for x in SCHEME.kernel(T, LAT, half=False))
    g0 = 1.0 / (np.asarray(LAT.phat_sq()) + M2)
    assert np.all(a**2 * g0 <= 1.0001e-4 * v)
    a, v = (np.asarray(x) for x in SCHEME.kernel(0.9 * T, LAT, half=False))
    assert not np.all(a**2 * g0 <= 1e-4 * v)


def _trained(free_data, steps, batch):
    T = default_horizon(SCHEME, free_data, LAT)
    model = initial_model("eft-score", LAT, SCHEME, free_data, T, key=jax.random.key(0))
    settings = TrainSettings(steps=steps, batch=batch, decay_steps=steps, horizon=T, log_every=steps)
    return cast_model(train(model, SCHEME, LAT, free_data, settings, key=jax.random.key(1)), jnp.float64)


def _score_errors(model, n=512):
    exact = GaussianFlowScore.free_field(LAT, SCHEME, M2)
    phi0 = sample_gaussian_field(jax.random.key(99), LAT, free_field_spectrum(LAT, M2), (n,))  # held out
    errors = {}
    for t in (0.0, 0.05, 0.5, 2.0):
        phi_t = SCHEME.push_forward(jax.random.key(7), phi0, t, LAT) if t > 0 else phi0
        tt = jnp.full((n,), t)
        s_m, s_e = jax.vmap(model)(phi_t, tt), jax.vmap(exact)(phi_t, tt)
        errors[t] = float(jnp.sqrt(jnp.sum((s_m - s_e) ** 2) / jnp.sum(s_e**2)))
    f1, f2, _ = (float(x) for x in model.couplings(jnp.asarray(0.0)))
    return errors, -f2 / f1


def test_free_field_score_is_learned(free_data):
    """Relative L2 error of the learned score < 5% at every t on held-out fields; m2 from f_i(0)
    within 5% (the t = 0 anchor's own statistical error on these 20000 fields is ~1.7%)."""
    model = _trained(free_data, steps=3000, batch=64)
    errors, m2 = _score_errors(model)
    assert all(e < 0.05 for e in errors.values()), errors
    assert abs(m2 - M2) / M2 < 0.05, m2
    # the model started at the stationary law's score, which knows nothing of m2
    assert prior_couplings(SCHEME, LAT)[1] == -1.0


def test_anchor_loss_is_score_matching_at_t0(free_data):
    """Hyvarinen's identity: E[|s|^2 + 2 div s] = E|s - grad log p_0|^2 - E|grad log p_0|^2, here
    for a wrong linear score on free-field data, with E|grad log p_0|^2 = sum_p (phat^2 + m2)."""
    exact = GaussianFlowScore.free_field(LAT, SCHEME, M2)
    wrong = GaussianFlowScore.free_field(LAT, SCHEME, M2, scale=1.3)
    phi = jnp.asarray(free_data[:8000])
    fisher = float(np.sum(np.asarray(LAT.phat_sq()) + M2))
    scale = fisher_scale(LAT)
    for model in (exact, wrong):
        t0 = jnp.zeros(phi.shape[0])
        gap = jnp.sum((jax.vmap(model)(phi, t0) - jax.vmap(exact)(phi, t0)) ** 2, axis=LAT.axes)
        per_config = (jnp.sum(jax.vmap(model)(phi, t0) ** 2, axis=LAT.axes) + 2 * jax.vmap(model.divergence)(phi, t0)) / scale
        expected = (gap - fisher) / scale
        diff = np.asarray(per_config - expected)
        assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(diff.size) + 1e-12
        assert abs(float(anchor_loss(model, LAT, phi)) - float(per_config.mean())) < 1e-9



def test_parameter_average_is_the_bias_corrected_ema():
    """With decay b, after k steps the average is sum_j b^(k-j) (1 - b) theta_j / (1 - b^k),
    theta_j the parameters after step j (here a scalar walked by fixed updates)."""
    from rgdiff.train.loop import averaged_parameters, parameter_average

    b, steps = 0.9, 7
    transform = parameter_average(b)
    theta = jnp.asarray(1.0)
    state = (transform.init(theta),)
    history = []
    for j in range(steps):
        update = jnp.asarray(0.5 * (j + 1))
        _, inner = transform.update(update, state[-1], theta)
        state = (inner,)
        theta = theta + update
        history.append(float(theta))
    weights = np.array([b ** (steps - 1 - j) * (1 - b) for j in range(steps)])
    expected = np.sum(weights * np.array(history)) / (1 - b**steps)
    assert float(averaged_parameters(theta, state, b)) == pytest.approx(expected, rel=1e-12)


def test_hyvarinen_couplings_recover_the_free_field(free_data):
    """The closed-form score-matching estimate on free-field data: (f_1, f_2, f_3) = (1, -m2, 0)
    in lattice units, within ~5 standard errors of 20000 fields (about 0.002, 0.008, 0.008)."""
    from rgdiff.objectives.score_matching import hyvarinen_couplings

    f1, f2, f3 = hyvarinen_couplings(free_data, LAT)
    assert abs(f1 - 1.0) < 0.01 and abs(f2 + M2) < 0.04 and abs(f3) < 0.04, (f1, f2, f3)
