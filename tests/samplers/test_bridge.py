"""The adaptive bridge sampler: exact for the UV theory whatever the model's quality.

- Free UV theory (d = 2, N = 4, L = 2, m2 = 4) with its exact `GaussianFlowScore` under
  Carosso-M (M = 1, T = 6): the proposals are exact up to the ODE error, so the
  independence-Metropolis (IMH) step accepts almost always (> 0.95), including right after HMC
  moves (which checks that `encode` and generation agree on log q).
- A deliberately wrong model (G_0 doubled) with pure IMH (no HMC, so exactness rests on the
  Metropolis correction alone): G2(0) and G2(p1) agree with 1/(|phat|^2 + m2) within 4 sigma
  (Gamma-method errors), while the uncorrected proposals are far off.
- Interacting phi^4 (lattice units, N = 4, m2 = -1, lam = 6) with a free-field proposal model:
  <M^2> (as chi = V <M^2>) and <|M|> agree with a NUTS run within 4 combined sigma, with HMC
  moves after every IMH step and after blocks of 4 (one encode per block) with float32 ODE solves.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice, Phi4
from rgdiff.samplers.bridge import BridgeResult, BridgeSettings, run_bridge
from rgdiff.errors import InvalidSamplerSettingsError, InvalidSchemeError
from rgdiff.generate.diffusion import LikelihoodUnavailableError, sample_ode
from rgdiff.models.base import AbstractScoreModel
from rgdiff.models.gaussian_score import GaussianFlowScore
from rgdiff.observables.estimators import free_field_expectations, measure
from rgdiff.rg import Carosso, Polchinski
from rgdiff.samplers.uv import SamplerSettings, sample

LAT = Lattice(2, 4, 2.0)
M2 = 4.0
FREE = Phi4(LAT, M2, 0.0)
SCHEME = Carosso(1.0)
T = 6.0


def z_score(a, b):
    return (a.value - b.value) / np.hypot(a.error, b.error)


def test_exact_model_is_accepted(getkey):
    settings = BridgeSettings(chains=8, samples=200, hmc_steps_between=1, hmc_leapfrog=8, warmup=50, ode_steps=24)
    model = GaussianFlowScore.free_field(LAT, SCHEME, M2)
    progress = []
    result = run_bridge(model, SCHEME, FREE, settings, key=getkey(), T=T, callback=lambda *a: progress.append(a))
    d = result.diagnostics
    print({k: d[k] for k in ("imh_acceptance", "hmc_acceptance", "tau_int_abs_M", "ess_abs_M", "log_weight_std")})
    assert progress[0] == ("warmup", 0, 50) and progress[-1] == ("sampling", 200, 200)
    assert isinstance(result, BridgeResult)
    assert result.fields.shape == (8, 200, *LAT.shape) and result.fields.dtype == np.float64
    assert d["imh_acceptance"] > 0.95 and d["imh_mean_acceptance_probability"] > 0.95
    assert d["log_weight_std"] < 1e-3  # -S - log q is constant for an exact model
    assert 0.5 < d["hmc_acceptance"] <= 1.0
    # every sweep is a fresh independent draw: tau_int ~ 1/2, ESS ~ N
    assert d["tau_int_abs_M"] < 1.0 and d["ess_abs_M"] > 0.5 * 8 * 200


def test_wrong_model_is_corrected_by_metropolis(getkey):
    """Pure independence Metropolis with proposals from the Gaussian of twice the UV spectrum."""
    settings = BridgeSettings(chains=16, samples=4000, hmc_steps_between=0, warmup=100, ode_steps=24)
    model = GaussianFlowScore.free_field(LAT, SCHEME, M2, scale=2.0)
    result = run_bridge(model, SCHEME, FREE, settings, key=getkey(), T=T)
    d = result.diagnostics
    print({k: d[k] for k in ("imh_acceptance", "tau_int_abs_M", "ess_abs_M", "log_weight_std")})
    assert 0.05 < d["imh_acceptance"] < 0.5 and d["hmc_acceptance"] is None
    assert d["log_weight_std"] > 1.0  # the proposal is visibly wrong
    exact = free_field_expectations(M2, LAT)
    chain = measure(result.fields, LAT, vacuum="raw").observables
    for name in ("G2_0", "G2_p1"):
        z = (chain[name].value - exact[name]) / chain[name].error
        print(name, chain[name], exact[name], f"z = {z:.2f}")
        assert abs(z) < 4, (name, chain[name], exact[name])
    # the uncorrected proposals are far off (the test has power)
    proposals, _ = sample_ode(model, SCHEME, getkey(), 4000, T=T, steps=24, log_prob=False)
    raw = measure(np.asarray(proposals)[None], LAT, markov=False, vacuum="raw").observables["G2_0"]
    assert (raw.value - exact["G2_0"]) / raw.error > 10


@pytest.mark.parametrize("block, ode_dtype", [(1, "float64"), (4, "float32")])
def test_interacting_theory_agrees_with_nuts(getkey, block, ode_dtype):
    """Also with blocks of 4 IMH steps between HMC moves (one encode per block) and float32 ODE
    solves (chains and Metropolis tests in float64): exact too."""
    lattice = Lattice.lattice_units(2, 4)
    theory = Phi4(lattice, -1.0, 6.0)
    # free-field proposal with an effective mass near the measured one (chi ~ 5.4, G2(p1) ~ 0.43)
    model = GaussianFlowScore.free_field(lattice, SCHEME, 0.35)
    settings = BridgeSettings(chains=8, samples=500, hmc_steps_between=1, hmc_leapfrog=8, warmup=100, ode_steps=24,
                              imh_per_block=block, ode_dtype=ode_dtype)
    bridge = run_bridge(model, SCHEME, theory, settings, key=getkey(), T=T)
    reference = sample(theory, SamplerSettings(chains=8, samples=1000, warmup=300), key=getkey())
    d = bridge.diagnostics
    print({k: d[k] for k in ("imh_acceptance", "hmc_acceptance", "tau_int_abs_M", "ess_abs_M", "log_weight_std")})
    assert 0.2 < d["imh_acceptance"] < 0.9
    ours = measure(bridge.fields, lattice, vacuum="raw").observables
    theirs = measure(reference.fields, lattice, vacuum="raw").observables
    for name in ("chi", "abs_magnetization"):
        z = z_score(ours[name], theirs[name])
        print(name, ours[name], theirs[name], f"z = {z:.2f}")
        assert abs(z) < 4, (name, ours[name], theirs[name])


def test_refusals(getkey):
    settings = BridgeSettings(chains=2, samples=2, warmup=0)

    class NoDivergence(AbstractScoreModel):
        inner: GaussianFlowScore
        lattice: Lattice = eqx.field(static=True)

        def __call__(self, phi, t):
            return self.inner(phi, t)

    with pytest.raises(LikelihoodUnavailableError, match="no exact divergence"):
        run_bridge(NoDivergence(inner=GaussianFlowScore.free_field(LAT, SCHEME, M2), lattice=LAT), SCHEME, FREE, settings, key=getkey(), T=T)
    polchinski = Polchinski(1.0)
    with pytest.raises(InvalidSchemeError, match="p-independent noise"):
        run_bridge(GaussianFlowScore.free_field(LAT, polchinski, M2), polchinski, FREE, settings, key=getkey(), T=T)
    other = Phi4(Lattice.lattice_units(2, 4), M2, 0.0)
    with pytest.raises(InvalidSchemeError, match="lattice"):
        run_bridge(GaussianFlowScore.free_field(LAT, SCHEME, M2), SCHEME, other, settings, key=getkey(), T=T)
    for bad in ({"chains": 0}, {"samples": 1}, {"hmc_steps_between": -1}, {"imh_per_block": 0}, {"ode_dtype": "float16"}, {"algorithm": "mala"}, {"warmup": 1},
                {"ode_solver": "rk45"}, {"step_size": 0.0}, {"target_acceptance": 1.0}):
        with pytest.raises(InvalidSamplerSettingsError):
            BridgeSettings(**bad)
    with pytest.raises(InvalidSamplerSettingsError):
        run_bridge(GaussianFlowScore.free_field(LAT, SCHEME, M2), SCHEME, FREE, {"chains": 2}, key=getkey(), T=T)
    assert jnp.zeros(()).dtype == jnp.float64  # the bridge runs in float64 (conftest enables x64)


def test_flow_proposal_drives_the_bridge(getkey):
    """A CNF through the same sampler (`sample_bridge` with a `FlowProposal`): the identity flow
    is the scheme's prior, here exactly the free UV theory of mass M = 1, so every proposal and
    every re-encoded state after HMC has the same weight and IMH always accepts."""
    from rgdiff.generate.transport import FlowProposal
    from rgdiff.models.cnf import ContinuousFlow
    from rgdiff.samplers.bridge import sample_bridge

    theory = Phi4(LAT, 1.0, 0.0)
    proposal = FlowProposal(ContinuousFlow(LAT, 2.0), SCHEME, steps=2)
    settings = BridgeSettings(chains=2, samples=20, hmc_steps_between=1, warmup=0, chunk=10)
    result = sample_bridge(proposal, theory, settings, key=getkey())
    assert result.fields.shape == (2, 20, *LAT.shape)
    assert result.diagnostics["imh_acceptance"] == 1.0 and result.diagnostics["log_weight_std"] < 1e-8


def test_chains_start_where_asked(getkey):
    """`start` sets the chains' first configurations (e.g. an equilibrated local run's last states):
    with pure independence Metropolis and an exact model every proposal is accepted, so the first
    recorded sweep is already a fresh draw; a start of the wrong shape or not finite is refused."""
    from rgdiff.generate.diffusion import ode_proposal
    from rgdiff.samplers.bridge import sample_bridge

    model = GaussianFlowScore.free_field(LAT, SCHEME, M2)
    proposal = ode_proposal(model, SCHEME, T=T, steps=24)
    settings = BridgeSettings(chains=2, samples=20, hmc_steps_between=0, warmup=0)
    start = np.full((2, *LAT.shape), 0.3)
    result = sample_bridge(proposal, FREE, settings, key=getkey(), start=start)
    assert result.diagnostics["imh_acceptance"] > 0.95
    assert not np.any(np.all(result.fields == 0.3, axis=(2, 3)))  # the start itself is not a recorded sample
    for bad in (np.zeros((3, *LAT.shape)), np.full((2, *LAT.shape), np.nan)):
        with pytest.raises(InvalidSamplerSettingsError, match="start must hold 2 finite configurations"):
            sample_bridge(proposal, FREE, settings, key=getkey(), start=bad)
