"""Free field (lam = 0, m2 > 0): the sampled two-point function against its closed form."""

import dataclasses

import jax
import numpy as np
import pytest

from rgdiff.errors import InvalidSamplerSettingsError
from rgdiff.lattice.geometry import Lattice
from rgdiff.observables.estimators import free_field_expectations, measure
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.observables.stats import evaluate, primaries
from rgdiff.theory.phi4 import Phi4

Z_MAX = 4.0  # |sampled - exact| / error; P(|z| > 4) ~ 6e-5 per comparison

CASES = {
    "nuts-d2": (Phi4(Lattice(2, 8, 8.0), 0.5, 0.0), SamplerSettings("nuts", chains=4, samples=2000, warmup=400)),
    "hmc-d1": (Phi4(Lattice(1, 16, 4.0), 1.0, 0.0), SamplerSettings("hmc", chains=4, samples=3000, warmup=400, hmc_steps=8)),
}


@pytest.fixture(scope="module", params=list(CASES))
def free_run(request):
    theory, settings = CASES[request.param]
    result = sample(theory, settings, key=jax.random.key(11))
    return theory, result


def test_sampled_propagator_matches_closed_form(free_run):
    """G2(p) = 1/(|phat|^2 + m2) for a set of momenta, each within Z_MAX errors."""
    theory, result = free_run
    lat = theory.lattice
    phi_p = np.fft.fftn(result.fields, axes=lat.axes) / lat.sites
    exact = np.asarray(theory.free_propagator())
    momenta = [(0,) * lat.dim, (1,) + (0,) * (lat.dim - 1), (2,) * lat.dim, (lat.size // 2,) * lat.dim]
    for p in momenta:
        mode = phi_p[(slice(None), slice(None)) + p]
        obs = primaries({"re": mode.real, "im": mode.imag, "p2": np.abs(mode) ** 2}, markov=True)
        g2 = evaluate(lat.volume * (obs["p2"] - obs["re"] ** 2 - obs["im"] ** 2), markov=True)
        z = (g2.value - exact[p]) / g2.error
        assert abs(z) < Z_MAX, (p, g2, exact[p])


def test_free_field_renormalized_couplings(free_run):
    """m_R^2 = m2, Z = 1 and lambda_R = 0 within errors (conventions page, free-field identities)."""
    theory, result = free_run
    m = measure(result.fields, theory.lattice).observables
    exact = free_field_expectations(theory.m2, theory.lattice)
    for name in ("G2_0", "G2_p1", "m_R", "Z", "lambda_R", "chi"):
        est = m[name]
        assert abs(est.value - exact[name]) < Z_MAX * est.error, (name, est, exact[name])
    assert m["binder"].defined and m["max_abs_phi"].value > 0


def test_diagnostics(free_run):
    theory, result = free_run
    d = result.diagnostics
    assert len(d["acceptance_rate"]) == result.fields.shape[0]
    assert all(0.5 < a <= 1.0 for a in d["acceptance_rate"])
    assert sum(d["divergences"]) == 0
    assert result.fields.dtype == np.float64


def test_chunking_does_not_change_samples():
    """Keys are fold_in(chain, step): the chain is the same whatever the chunk size."""
    theory = Phi4(Lattice(1, 4, 4.0), 1.0, 0.5)
    s = SamplerSettings("nuts", chains=2, samples=12, warmup=0)
    a = sample(theory, s, key=jax.random.key(0), chunk=3).fields
    b = sample(theory, s, key=jax.random.key(0), chunk=12).fields
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algorithm", ["nuts", "fa-hmc"])
def test_chains_one_after_another_draw_what_lockstep_draws(algorithm):
    """lockstep=False (jax.lax.map over chains) only changes the cost: NUTS trees of different
    depths in different chains, adapted per chain, give the lockstep draws up to rounding."""
    theory = Phi4(Lattice(1, 4, 4.0), 1.0, 0.5)
    s = SamplerSettings(algorithm, chains=3, samples=20, warmup=20)
    a = sample(theory, dataclasses.replace(s, lockstep=True), key=jax.random.key(1))
    b = sample(theory, dataclasses.replace(s, lockstep=False), key=jax.random.key(1))
    if algorithm == "nuts":
        assert np.ptp(a.diagnostics["mean_integration_steps"]) > 0  # the chains' trees differ
    np.testing.assert_allclose(a.fields, b.fields, rtol=0, atol=1e-10)
    assert (a.diagnostics["lockstep"], b.diagnostics["lockstep"]) == (True, False)
    assert a.diagnostics["mean_integration_steps"] == pytest.approx(b.diagnostics["mean_integration_steps"])


def test_nuts_chains_run_one_after_another_on_large_cpu_lattices_only():
    nuts, fa_hmc = SamplerSettings("nuts"), SamplerSettings("fa-hmc")
    assert not nuts.in_lockstep(400, "cpu") and not SamplerSettings("fa-nuts").in_lockstep(400, "cpu")
    assert nuts.in_lockstep(64, "cpu") and nuts.in_lockstep(400, "gpu")  # vectorizing wins there
    assert fa_hmc.in_lockstep(400, "cpu") and fa_hmc.in_lockstep(64, "gpu")
    assert dataclasses.replace(nuts, lockstep=True).in_lockstep(400, "cpu")
    assert not dataclasses.replace(fa_hmc, lockstep=False).in_lockstep(64, "gpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"algorithm": "gibbs"}, "unknown sampler"),
        ({"chains": 0}, "chains"),
        ({"samples": 1}, "samples"),
        ({"warmup": -1}, "warmup"),
        ({"target_acceptance": 1.5}, "target_acceptance"),
        ({"lockstep": "no"}, "lockstep"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(InvalidSamplerSettingsError, match=message):
        SamplerSettings(**kwargs)


def test_enormous_ensemble_refused_before_allocating():
    theory = Phi4(Lattice(3, 64, 64.0), 1.0, 0.1)
    with pytest.raises(InvalidSamplerSettingsError, match="numbers"):
        sample(theory, SamplerSettings(chains=64, samples=10**6), key=jax.random.key(0))
