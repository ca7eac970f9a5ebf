import numpy as np
import pytest

from rgdiff.observables.stats import evaluate, format_value_error, primaries, tau_int


def ar1_chains(rng, rho, chains, n, burn=1000):
    """AR(1): x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, unit variance; tau_int = (1+rho) / (2 (1-rho))."""
    x = np.zeros((chains, n + burn))
    e = rng.normal(size=x.shape) * np.sqrt(1 - rho**2)
    for t in range(1, n + burn):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x[:, burn:]


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_gamma_method_recovers_ar1_tau_int(rho):
    rng = np.random.default_rng(7)
    chains = ar1_chains(rng, rho, chains=4, n=20000)
    est = tau_int(chains)
    exact = 0.5 * (1 + rho) / (1 - rho)
    # The Gamma method's own error on tau_int is ~ tau * sqrt(4 W / N); allow 4 such errors.
    assert abs(est.tau_int - exact) < 4 * exact * np.sqrt(4 * 6 * exact / chains.size) + 0.02
    # and the error of the mean matches the exact sqrt(2 tau_int var / N)
    exact_err = np.sqrt(2 * exact / chains.size)
    assert est.error == pytest.approx(exact_err, rel=0.25)
    assert abs(est.value) < 5 * exact_err


def test_independent_samples_use_standard_error():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 5000))
    est = evaluate(primaries({"x": x}, markov=False)["x"], markov=False)
    assert est.error == pytest.approx(x.std(ddof=1) / np.sqrt(x.size), rel=1e-6)
    assert est.tau_int == 0.5


def test_formatting():
    assert format_value_error(84.0012, 0.054) == "84.001 ± 0.054"
    assert format_value_error(1.0, None) == "1"


# diagnostics and the reliability verdict ------------------------------------------------------

from rgdiff.observables.stats import (  # noqa: E402
    MIN_EFFECTIVE_SAMPLES,
    assess,
    blocked_jackknife,
    chain_diagnostics,
)


def test_jackknife_closed_forms():
    """Blocks of one sample: the jackknife of the mean is the mean with the standard error, and the
    bias-corrected jackknife of mean^2 is exactly mean^2 - s^2/n (s^2 the unbiased variance)."""
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(1, 400))
    out, n = blocked_jackknife(lambda m: {"mean": m["x"], "square": m["x"] ** 2}, {"x": x}, blocks_per_chain=400)
    assert n == 400
    mean, s2 = x.mean(), x.var(ddof=1)
    value, error, bias = out["mean"]
    assert value == pytest.approx(mean, rel=1e-12) and error == pytest.approx(np.sqrt(s2 / 400), rel=1e-10)
    assert abs(bias) < 1e-12
    value, _, bias = out["square"]
    assert value == pytest.approx(mean**2 - s2 / 400, rel=1e-10)
    assert bias == pytest.approx(s2 / 400, rel=1e-10)


def test_rhat_and_ess_against_independent_chains():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 2000, 1))
    d = chain_diagnostics(x)
    assert abs(d["rhat"][0] - 1.0) < 0.01
    assert 0.8 * 8000 < d["ess_bulk"][0] < 1.2 * 8000
    shifted = x.copy()
    shifted[0] += 1.0  # one chain elsewhere: the chains disagree
    assert chain_diagnostics(shifted)["rhat"][0] > 1.05  # (rank-normalized: about 1.08 here)


def test_verdicts_name_their_reason():
    rng = np.random.default_rng(4)
    good = ar1_chains(rng, 0.0, chains=4, n=2000)
    est = tau_int(good)
    diag = {k: v[0] for k, v in chain_diagnostics(good[..., None]).items()}
    ok = assess(est, n_total=good.size, markov=True, diagnostics=diag)
    assert ok.reliable is True and ok.reason is None
    # few effective samples: a strongly autocorrelated short run
    slow = ar1_chains(rng, 0.99, chains=2, n=400)
    est = tau_int(slow)
    verdict = assess(est, n_total=slow.size, markov=True)
    assert verdict.reliable is False and "effective samples" in verdict.reason
    assert slow.size / (2 * est.tau_int) < MIN_EFFECTIVE_SAMPLES
    # a jackknife that disagrees with the Gamma error, and one whose bias matters
    flagged = assess(est, n_total=10**6, markov=False, jackknife=(est.value, 10 * est.error, 0.0), blocks=64)
    assert flagged.reliable is False and "differ by a factor" in flagged.reason
    corrected = assess(est, n_total=10**6, markov=False, jackknife=(est.value + 1.0, est.error, 2 * est.error), blocks=64)
    assert corrected.value == pytest.approx(est.value + 1.0) and corrected.method.startswith("jackknife")
    # warnings become reasons, never silence
    warned = assess(est, n_total=10**6, markov=False, warnings_seen=["invalid value encountered in sqrt"])
    assert warned.reliable is False and "undefined on the mean of at least one chain" in warned.reason


def test_vacuum_changes_count_tunnelling_not_jitter():
    from rgdiff.observables.estimators import vacuum_changes

    t = np.arange(1000)
    jitter = 0.1 * np.sin(t)  # about one vacuum: never a change
    tunnel = np.where((t // 250) % 2 == 0, 1.0, -1.0) + 0.05 * np.cos(t)  # three changes
    assert vacuum_changes(np.stack([5.0 + jitter, tunnel + 0 * t])) == [0, 3]
