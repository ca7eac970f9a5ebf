"""Impossible results are caught and reported as such (issue 16, `rgdiff.observables.sanity`): a
non-finite estimate or a negative variance, an acceptance rate outside [0, 1], an importance-
sampling ESS above the sample count, an unresolved learned estimate counted as agreement."""

import dataclasses
import json
import math
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rgdiff.errors import RgdiffWarning
from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
from rgdiff.observables import sanity
from rgdiff.observables.compare import discrepancy
from rgdiff.observables.stats import Estimate
from rgdiff.theory.phi4 import make_phi4
from cli_errors import run_cli

THEORY = make_phi4(2, 4, units="lattice", m2=1.0, lam=2.0)


cli = run_cli


numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))


@settings(max_examples=200, deadline=None, database=None)
@given(value=numbers, error=numbers)
def test_an_estimate_is_flagged_exactly_when_impossible(value, error):
    est = {"x": Estimate(value, error, None)}
    flagged = sanity.flag_estimates(est)
    possible = (value is None or math.isfinite(value)) and (error is None or (math.isfinite(error) and error >= 0))
    assert bool(flagged) == (not possible)
    if flagged:
        assert est["x"].value is None and est["x"].error is None and est["x"].reliable is False
        assert est["x"].reason.startswith("impossible result:")
    else:
        assert est["x"].value == value and est["x"].error == error


def test_an_mcmc_ess_above_the_sample_count_is_not_flagged():
    """Antithetic chains legitimately have ESS > N: only value and error are judged."""
    est = {"x": Estimate(1.0, 0.1, 0.3, ess_bulk=5000.0, ess_tail=4000.0)}
    assert sanity.flag_estimates(est) == {} and est["x"].ess_bulk == 5000.0


@pytest.fixture()
def ensemble(tmp_path):
    fields = np.random.default_rng(0).normal(size=(2, 40, 4, 4))
    save_ensemble(tmp_path / "e.h5", Ensemble(THEORY, fields, markov=True, seed=1))
    return tmp_path / "e.h5"


def test_measure_exits_1_naming_a_negative_variance(ensemble):
    import rgdiff.observables.estimators as est

    real = est.assess

    def negative_chi(result, **kw):
        out = real(result, **kw)
        return dataclasses.replace(out, error=-0.25) if out.value is not None and abs(out.value - chi) < 1e-12 else out

    chi = None
    code, out, err = cli(["measure", ensemble, "--json"])
    assert code == 0, err
    chi = json.loads(out)["observables"]["chi"]["value"]
    with mock.patch.object(est, "assess", negative_chi):
        code, out, err = cli(["measure", ensemble, "--json"])
    assert code == 1 and err.count("\n") == 1 and err.startswith("rgdiff: error:"), err
    assert "chi (error -0.25 (a negative variance))" in err
    data = json.loads(out)  # printed, flagged: never the impossible number
    assert data["observables"]["chi"]["value"] is None and data["observables"]["chi"]["reliable"] is False
    assert data["meta"]["impossible"] == {"chi": "error -0.25 (a negative variance)"}


def test_fields_too_large_to_measure_are_one_line_exit_1(tmp_path):
    fields = np.random.default_rng(0).normal(size=(2, 40, 4, 4)) * 1e160  # finite, but phi^4 overflows
    save_ensemble(tmp_path / "huge.h5", Ensemble(THEORY, fields, markov=True, seed=1))
    code, _, err = cli(["measure", tmp_path / "huge.h5"])
    assert code == 1 and err.count("\n") == 1 and "cannot be measured in float64" in err, err


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.5, [0.4, float("inf")], [0.2, 1.0000001]])
def test_an_acceptance_rate_outside_0_1_is_flagged(value):
    d = {"acceptance_rate": value}
    with pytest.warns(RgdiffWarning, match="outside \\[0, 1\\]"):
        sanity.check_rate(d, "acceptance_rate", where="sampling")
    assert d["acceptance_rate"] is None and "acceptance_rate" in d["impossible"]
    json.dumps(d, allow_nan=False)  # valid JSON: the value found is kept as text


@pytest.mark.parametrize("value", [0.0, 1.0, 0.37, [0.0, 1.0]])
def test_possible_rates_pass(value):
    d = {"r": value}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sanity.check_rate(d, "r")
    assert d == {"r": value}


@pytest.mark.parametrize("ess, flagged", [(1.0, False), (1e-3, False), (1.3, True), (0.0, True), (float("nan"), True)])
def test_importance_ess_above_the_sample_count_is_flagged(ess, flagged):
    d = {"ess": ess}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sanity.check_importance_ess(d, n=64)
    assert (d["ess"] is None) == flagged and bool(caught) == flagged
    if ess == 1.3:
        assert "ESS above the sample count" in d["impossible"]["ess"]["reason"]


def test_sample_keeps_the_ensemble_and_flags_an_impossible_acceptance(tmp_path):
    """A sampler reporting NaN acceptance: the (finite) samples are written, the diagnostic is
    None with the value found under "impossible", and a warning line says so."""
    from rgdiff.samplers.uv import SampleResult

    def fake_sample(theory, settings, *, key, callback=None, checkpoint=None, **kw):
        fields = np.random.default_rng(0).normal(size=(settings.chains, settings.samples, *theory.lattice.shape))
        return SampleResult(fields, {"acceptance_rate": [float("nan"), 0.8], "divergences": [0, 0]})

    out = tmp_path / "s.h5"
    with mock.patch("rgdiff.cli.jobs.sample", fake_sample):
        code, _, err = cli(["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--chains", "2",
                            "--samples", "8", "--out", out])
    assert code == 0, err
    assert "rgdiff: warning: sampling: acceptance_rate nan is outside [0, 1]" in err and "acceptance n/a" in err
    d = load_ensemble(out).diagnostics
    assert d["acceptance_rate"] is None and d["impossible"]["acceptance_rate"]["found"] == ["nan", 0.8]


def flow(values, errors):
    return {"observables": {"m_R": {"value": values, "error": errors}}}


def test_an_unresolved_learned_estimate_is_never_agreement():
    true = flow([3.0, 3.0, 3.0], [0.1, 0.1, 0.1])
    unresolved = {}
    # t0: resolved and 1 sigma off; t1: 0.1 +- 5 (error > value): would read as "agreement" (x = 0.58)
    x = discrepancy(flow([3.1414, 0.1, None], [0.1, 5.0, None]), true, names=("m_R",), unresolved=unresolved)
    assert x["m_R"] == pytest.approx(0.1414 / math.hypot(0.1, 0.1)) and unresolved == {"m_R": 1}
    unresolved = {}
    x = discrepancy(flow([0.1, -0.2, 0.0], [5.0, 0.3, 0.0]), true, names=("m_R",), unresolved=unresolved)
    assert x["m_R"] is None and unresolved == {"m_R": 3}  # nothing resolved: n/a, not "agrees"
