"""The fidelity measure of a learned flow: it passes what is right, fails what is off or unresolved,
and the spectral and zero-mode diagnostics are exact where the model is."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats as sps

from rgdiff.lattice.geometry import Lattice
from rgdiff.models.gaussian_score import GaussianFlowScore
from rgdiff.objectives.score_matching import zero_mode_marginal_score
from rgdiff.observables.compare import learned_trajectories
from rgdiff.observables.fidelity import fidelity, observable_fidelity, spectral_fidelity, zero_mode_score
from rgdiff.rg import make_scheme
from rgdiff.theory.gaussian import free_field_spectrum, sample_gaussian_field

TIMES = [0.0, 0.1, 0.5, 1.0]


def flow(values: dict, errors: dict) -> dict:
    return {"t": TIMES, "observables": {k: {"value": list(values[k]), "error": list(errors[k])} for k in values}}


@pytest.fixture
def truth():
    rng = np.random.default_rng(0)
    values = {"m_R": [2.0, 1.6, 1.2, 1.0], "Z": [1.0, 1.04, 1.01, 1.0], "lambda_R": [0.1, -0.05, 0.02, 0.0]}
    errors = {"m_R": [0.01] * 4, "Z": [0.005] * 4, "lambda_R": [0.5, 0.3, 0.1, 0.05]}
    return values, errors, rng


def test_an_exactly_right_model_passes(truth):
    values, errors, rng = truth
    true = flow(values, errors)
    learned = flow({k: np.array(v) + rng.normal(0, 1, 4) * np.array(errors[k]) for k, v in values.items()}, errors)
    fid = fidelity(learned, true, ["m_R", "Z", "lambda_R"], judged=["m_R", "Z"])
    assert fid["verdict"] == "pass", fid
    assert fid["observables"]["m_R"]["max_relative_deviation"] < 0.05
    # lambda_R is consistent with 0: no relative deviation, judged by chi^2 only
    lam = fid["observables"]["lambda_R"]
    assert lam["verdict"] == "untestable" and lam["relative_deviation"][-1] is None and lam["p_value"] > 1e-3


def test_right_mean_with_ten_times_the_spread_fails(truth):
    """The former measure rewarded this: |l - u| / sqrt(e_l^2 + e_u^2) is small when e_l is huge."""
    values, errors, rng = truth
    true = flow(values, errors)
    wide = {k: 10 * np.array(errors[k]) * np.array([1, 5, 5, 5]) for k in values}  # learned errors of 10-50% of the value
    learned = flow({k: np.array(v) + rng.normal(0, 1, 4) * wide[k] for k, v in values.items()}, wide)
    rec = observable_fidelity(learned, true, "m_R")
    assert rec["verdict"] in ("unresolved", "fail") and rec["verdict"] != "pass"
    assert fidelity(learned, true, ["m_R", "Z"])["verdict"] != "pass"


def test_a_resolved_ten_percent_miss_fails(truth):
    values, errors, _ = truth
    true = flow(values, errors)
    learned = flow({k: 1.1 * np.array(v) for k, v in values.items()}, errors)
    rec = observable_fidelity(learned, true, "Z", tolerance=0.05)
    assert rec["verdict"] == "fail" and rec["max_relative_deviation"] == pytest.approx(0.1)
    assert rec["p_value"] < 1e-6
    # the excess over the tolerance in units of the combined relative error, at the worst t
    z = np.array(values["Z"])
    ez = np.array(errors["Z"])
    combined = np.hypot(ez, ez) / np.abs(z)  # the learned errors are the true ones here
    assert rec["excess_sigma"] == pytest.approx(np.max((0.1 - 0.05) / combined))
    assert observable_fidelity(true, true, "Z")["excess_sigma"] is None


LAT = Lattice(2, 6, 1.0)
SCHEME = make_scheme("carosso", M=1.0)


def test_spectral_fidelity_is_exact_for_the_exact_gaussian_score():
    """Free field flowed by Carosso: the exact score (GaussianFlowScore) sampled with the reverse SDE
    around its own spectrum reproduces a_t^2 P0 + v_t at every momentum orbit and every t (chi^2)."""
    p0 = free_field_spectrum(LAT, 2.0, jnp.float64, half=True)
    model = GaussianFlowScore(LAT, SCHEME, p0)
    uv = sample_gaussian_field(jax.random.key(1), LAT, p0, (20000,), jnp.float64)
    times = np.array([0.0, 0.05, 0.3, 1.0])
    traj = learned_trajectories(model, SCHEME, times, key=jax.random.key(2), n=2000, horizon=6.0, solver="sde",
                                steps=8, reference_spectrum=p0)
    spec = spectral_fidelity(SCHEME, LAT, np.asarray(uv), times, traj)
    ratio, error = np.array(spec["ratio"]), np.array(spec["error"])
    chi2 = float(np.sum(((ratio - 1) / error) ** 2))
    assert sps.chi2.sf(chi2, ratio.size) > 1e-3, (chi2, ratio.size)
    # and a wrong model (G0 scaled by 1.5) is caught at once: its zero mode near 1.5 at t = 0 and the
    # chi^2 over all orbits and times far beyond chance
    wrong = GaussianFlowScore(LAT, SCHEME, p0, scale=1.5)
    traj = learned_trajectories(wrong, SCHEME, times, key=jax.random.key(3), n=1000, horizon=6.0, solver="sde",
                                steps=8, reference_spectrum=p0)
    spec = spectral_fidelity(SCHEME, LAT, np.asarray(uv), times, traj)
    ratio, error = np.array(spec["ratio"]), np.array(spec["error"])
    assert abs(ratio[0, 0] - 1.5) < 0.2, ratio[0]
    assert sps.chi2.sf(float(np.sum(((ratio - 1) / error) ** 2)), ratio.size) < 1e-9


def test_zero_mode_marginal_score_closed_form():
    """For a Gaussian UV zero mode (a single UV value at 0 and unit weight), the mixture is one Gaussian."""
    m = jnp.linspace(-2.0, 2.0, 5)
    score = zero_mode_marginal_score(m, jnp.zeros(1), jnp.full(5, 0.5), jnp.full(5, 2.0))
    np.testing.assert_allclose(score, -m / 2.0, rtol=1e-12)
    # two symmetric peaks: the tanh form of a two-Gaussian mixture
    score = zero_mode_marginal_score(m, jnp.array([3.0, -3.0]), jnp.full(5, 1.0), jnp.full(5, 0.5))
    np.testing.assert_allclose(score, -(m - 3.0 * np.tanh(3.0 * m / 0.5)) / 0.5, rtol=1e-10)


def test_zero_mode_marginal_score_in_blocks_is_the_whole_softmax():
    """The running sum over blocks of UV values (bounded memory) is the softmax over all of them,
    for a block size that does not divide n, one block, and points far in a tail (where an
    unshifted sum of exp would underflow to 0 / 0)."""
    rng = np.random.default_rng(3)
    m0 = np.concatenate([rng.normal(1.5, 0.2, 6001), rng.normal(-1.5, 0.2, 4000)])
    m = np.array([-40.0, -1.4, -0.3, 0.0, 0.2, 1.6, 40.0])
    a, var = np.full(m.size, 0.7), np.full(m.size, 0.05)
    d = m[:, None] - a[:, None] * m0[None, :]
    w = special.softmax(-0.5 * d**2 / var[:, None], axis=1)
    expected = -np.sum(w * d, axis=1) / var
    for chunk in (128, 10001, 10**6):
        got = zero_mode_marginal_score(jnp.asarray(m), jnp.asarray(m0), jnp.asarray(a), jnp.asarray(var), chunk=chunk)
        np.testing.assert_allclose(got, expected, rtol=1e-11, err_msg=f"chunk {chunk}")


def test_zero_mode_score_of_the_exact_model_matches():
    """The exact Gaussian score's zero-mode component has the exact marginal score as its conditional mean."""
    p0 = free_field_spectrum(LAT, 2.0, jnp.float64, half=True)
    model = GaussianFlowScore(LAT, SCHEME, p0)
    uv = np.asarray(sample_gaussian_field(jax.random.key(4), LAT, p0, (2000,), jnp.float64))
    z = zero_mode_score(model, SCHEME, LAT, uv, [0.2, 1.0], key=jax.random.key(5), n=2000)
    for lv, le, ev in zip(z["learned"], z["learned_error"], z["exact"]):
        assert np.all(np.abs(np.array(lv) - np.array(ev)) < 4 * np.array(le) + 0.05 * np.abs(ev)), (lv, ev, le)
