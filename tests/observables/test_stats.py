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
