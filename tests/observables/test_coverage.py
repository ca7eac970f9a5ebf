"""Coverage of the error bars: many independent short runs must put the truth inside their 1-sigma
bars about 68% of the time and inside 2 sigma about 95% (the standard of a trustworthy error).

Slow (`--runslow`): a few hundred independent runs. The fractions are printed (`-s` shows them).
"""

import jax
import numpy as np
import pytest

from rgdiff.lattice.geometry import Lattice
from rgdiff.observables.estimators import free_field_expectations, measure
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.phi4 import Phi4, paper_theory

RUNS = 200
ONE_SIGMA, TWO_SIGMA = 0.6827, 0.9545


def coverage(runs: list[dict], truth: dict) -> dict:
    """Per observable: the fractions of runs with |value - truth| < 1 and < 2 errors."""
    out = {}
    for name, exact in truth.items():
        pulls = np.array([abs(r[name].value - exact) / r[name].error for r in runs if r[name].defined])
        out[name] = (float(np.mean(pulls < 1.0)), float(np.mean(pulls < 2.0)), pulls.size)
    return out


def independent_runs(theory, settings, runs, key):
    """`runs` independent ensembles of `settings.chains` chains: one vmapped sampling, split."""
    big = SamplerSettings(settings.algorithm, chains=settings.chains * runs, samples=settings.samples, warmup=settings.warmup)
    fields = sample(theory, big, key=key).fields.reshape(runs, settings.chains, settings.samples, *theory.lattice.shape)
    return [measure(f, theory.lattice).observables for f in fields]


def check(fractions: dict, n: int) -> None:
    # binomial spread of a fraction over n runs: sqrt(p (1 - p) / n) ~ 0.033 (1 sigma), 0.015 (2 sigma)
    for name, (one, two, used) in fractions.items():
        print(f"{name}: inside 1 sigma {one:.3f} (expect {ONE_SIGMA}), inside 2 sigma {two:.3f} (expect {TWO_SIGMA}), runs {used}")
        assert used >= 0.95 * n, name
        assert abs(one - ONE_SIGMA) < 0.12, (name, one)
        assert two > TWO_SIGMA - 0.06, (name, two)


@pytest.mark.slow
def test_coverage_on_the_free_field():
    """Free field: lambda_R = 0, m_R^2 = m2, Z = 1 exactly."""
    theory = Phi4(Lattice(2, 8, 8.0), 0.25, 0.0)
    runs = independent_runs(theory, SamplerSettings("fa-hmc", chains=4, samples=400, warmup=300), RUNS, jax.random.key(0))
    exact = free_field_expectations(theory.m2, theory.lattice)
    check(coverage(runs, {k: exact[k] for k in ("m_R", "Z", "lambda_R", "G2_0")}), RUNS)


@pytest.mark.slow
def test_coverage_of_lambda_R_at_the_paper_point():
    """m2 = -2 (broken phase, L = 1, N = 20): the truth of lambda_R, consistent with 0, is the mean
    of all runs (its error is 1/sqrt(RUNS) of one run's)."""
    theory = paper_theory(-2.0)
    runs = independent_runs(theory, SamplerSettings("fa-hmc", chains=4, samples=500, warmup=400), RUNS, jax.random.key(1))
    values = np.array([r["lambda_R"].value for r in runs])
    truth = float(values.mean())
    print(f"lambda_R over {RUNS} runs: {truth:.4f} +- {values.std(ddof=1) / np.sqrt(RUNS):.4f}")
    check(coverage(runs, {"lambda_R": truth}), RUNS)
