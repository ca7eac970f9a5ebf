"""RG parallel tempering: exact for the UV theory whatever the model, with a test that can fail.

- The exchange rule on closed forms: two 1-d Gaussian levels (the log-ratio by hand, and the swap
  leaves the product invariant, while always swapping does not), and the compiled exchange of
  the sampler on a Gaussian model, whose log-density at every t is known in closed form
  (`GaussianFlowScore.spectrum`): acceptance probabilities, swapped fields, cached log-densities,
  latents and replica labels.
- Round trips counted on hand-made replica histories; `choose_levels` on synthetic rejection
  profiles (equal barrier per pair, exactly for a piecewise-linear barrier).
- Exactness: interacting phi^4 (lattice units, N = 4, m2 = -1, lam = 6) with a wrong model (the
  free field of m2 = 0.35, whose <|M|> is ~40% low) and NO HMC at level 0, so level 0 moves by
  exchanges only and exactness rests on them: <|M|> and <M^2> agree with a Fourier-accelerated
  HMC chain (|pull| < 4, Gamma-method errors). The same comparison with a broken exchange
  (every swap accepted) fails it by far: the test has power.
- Settings: each bad value raises `InvalidSamplerSettingsError` with one message naming it.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice, Phi4
from rgdiff.errors import InvalidSamplerSettingsError, InvalidSchemeError
from rgdiff.generate.diffusion import characteristic_time, ode_proposal
from rgdiff.models.gaussian_score import GaussianFlowScore
from rgdiff.observables.estimators import magnetization
from rgdiff.observables.stats import tau_int
from rgdiff.rg import Carosso
from rgdiff.samplers import tempering
from rgdiff.samplers.tempering import (
    TemperingResult,
    TemperingSettings,
    choose_levels,
    exchange_acceptance,
    exchange_log_ratio,
    round_trips,
    run_tempering,
)
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.gaussian import gaussian_field_log_prob

LAT = Lattice.lattice_units(2, 4)
THEORY = Phi4(LAT, -1.0, 6.0)
SCHEME = Carosso(1.0)
T = 6.0


# the exchange rule ------------------------------------------------------------------------------


def test_exchange_rule_on_two_gaussian_levels(getkey):
    """pi_a = N(0, a), pi_b = N(0, b): log ratio = (x^2 - y^2)(1/a - 1/b)/2 for x at a, y at b;
    one exchange of exact draws keeps the law of the lower level (variance a), always swapping
    gives it variance b."""
    a, b, n = 1.0, 3.0, 200_000

    def log_pi(x, v):
        return -0.5 * x**2 / v

    x = jnp.sqrt(a) * jax.random.normal(getkey(), (n,))
    y = jnp.sqrt(b) * jax.random.normal(getkey(), (n,))
    log_ratio = exchange_log_ratio(log_pi(x, a), log_pi(y, b), log_pi(y, a), log_pi(x, b))
    np.testing.assert_allclose(log_ratio, 0.5 * (x**2 - y**2) * (1 / a - 1 / b), rtol=1e-12, atol=1e-12)
    prob = exchange_acceptance(log_ratio)
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0
    assert float(exchange_acceptance(jnp.asarray(jnp.nan))) == 0.0
    accept = jax.random.uniform(getkey(), (n,)) < prob
    lower = jnp.where(accept, y, x)
    var, err = float(jnp.var(lower)), a * math.sqrt(2 / n)
    assert abs(var - a) < 4 * err, (var, a)
    assert abs(float(jnp.var(y)) - a) > 50 * err  # always swapping would put pi_b at the lower level


def test_compiled_exchange_matches_closed_form(getkey):
    """The sampler's exchange step (both parities of a 3-level ladder) against the closed-form
    Gaussian log-densities of an exact model and -S at level 0."""
    model = GaussianFlowScore.free_field(LAT, SCHEME, 0.35)
    levels = (0.1, 1.0)
    base = ode_proposal(model, SCHEME, T=T, steps=16)
    grids = jnp.stack([ode_proposal(model, SCHEME, T=T, t_end=t, steps=16).grid for t in levels])
    chains = 6
    logdensity = THEORY.logdensity_fn()

    def gauss(x, t):
        return gaussian_field_log_prob(x, LAT, model.spectrum(jnp.asarray(t)))

    x0 = 0.6 * jax.random.normal(getkey(), (chains, *LAT.shape))
    latents = base.sample_prior(getkey(), (chains, 2))
    fields, log_pi = tempering._decode_levels(base, grids, latents)
    for k, t in enumerate(levels):  # the decode's log-density is the closed form
        np.testing.assert_allclose(log_pi[:, k], gauss(fields[:, k], t), rtol=0, atol=1e-4)  # 16 Tsit5 steps
    replicas = jnp.tile(jnp.arange(3, dtype=jnp.int32), (chains, 1))
    exact = {  # log pi_level(field at level f)
        (lev, f): (jax.vmap(logdensity)(x) if lev == 0 else gauss(x, levels[lev - 1]))
        for lev in range(3) for f, x in enumerate([x0, fields[:, 0], fields[:, 1]])
    }
    exchange = tempering._exchange  # eager: faster here than compiling both parities
    for parity, k in ((0, 0), (1, 1)):
        expected = exact[(k, k + 1)] + exact[(k + 1, k)] - exact[(k, k)] - exact[(k + 1, k + 1)]
        # uniforms ~ 0: every swap with a ratio above e^-690 is accepted
        operand = (x0, fields, latents, log_pi, replicas, jnp.full((chains, 2), 1e-300))
        (new_x0, new_fields, new_latents, new_log_pi, new_replicas), probs, accepted = exchange(
            parity, exchange_log_ratio, base, grids, logdensity, operand
        )
        np.testing.assert_allclose(probs[:, k], np.minimum(1.0, np.exp(expected)), rtol=1e-4, atol=1e-8)
        assert np.all(np.isnan(probs[:, 1 - k])) and not np.any(accepted[:, 1 - k])
        assert np.all(accepted[:, k])
        everything = jnp.concatenate([x0[:, None], fields], axis=1)
        after = jnp.concatenate([new_x0[:, None], new_fields], axis=1)
        np.testing.assert_array_equal(after[:, k], everything[:, k + 1])
        np.testing.assert_array_equal(after[:, k + 1], everything[:, k])
        np.testing.assert_array_equal(new_replicas[:, k], replicas[:, k + 1])
        for lev in (k, k + 1):  # cached log-densities and latents of the swapped-in fields
            if lev >= 1:
                np.testing.assert_allclose(new_log_pi[:, lev - 1], gauss(after[:, lev], levels[lev - 1]), atol=1e-4)
                decoded, _ = base.regridded(grids[lev - 1]).decode(new_latents[:, lev - 1])
                np.testing.assert_allclose(decoded, after[:, lev], atol=1e-6)


# round trips and level choice --------------------------------------------------------------------


def test_round_trips_on_a_hand_made_history():
    # levels 0, 1, 2, one adjacent swap per sweep (row: the level of replicas 0, 1, 2). Replica 2
    # starts at the top: its first arrival at 0 (sweep 3) is a half trip. Trips end at sweep 5
    # (replica 0: 0, top at 2, 0), 7 (replica 1: 0 at 1, top at 4), 9 (replica 2: 0 at 3, top
    # at 6) and 11 (replica 0 again: 0 at 5, top at 8).
    level_of = np.array([
        [0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1],
        [0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1],
    ])
    replicas = np.argsort(level_of, axis=1)[None]  # which replica at each level
    assert round_trips(replicas).tolist() == [4]
    assert round_trips(replicas[:, :11]).tolist() == [3]
    # two chains: one never moves, one is the history above
    both = np.concatenate([np.tile(np.arange(3), (1, len(level_of), 1)), replicas])
    assert round_trips(both).tolist() == [0, 4]
    with pytest.raises(ValueError):
        round_trips(np.zeros((2, 3)))


def test_choose_levels_equalizes_the_barrier():
    # piecewise-linear barrier Lambda = [0, .4, .5, .6, .8] at t = 0..4: inverse at 0.2 j
    new = choose_levels([0.0, 1.0, 2.0, 3.0, 4.0], [0.4, 0.1, 0.1, 0.2])
    np.testing.assert_allclose(new, [0.0, 0.5, 1.0, 3.0, 4.0], atol=1e-12)
    np.testing.assert_allclose(choose_levels([0.0, 1.0, 2.0], [0.3, 0.1], n_levels=4), [0, 1 / 3, 2 / 3, 1.0, 2.0])
    # a smooth barrier density lambda(u) = 2u in u = log(1 + t / t_c) on a fine ladder: Lambda = u^2,
    # so equal barriers put u_j = u_K sqrt(j / K)
    t_c = 0.01
    fine = t_c * np.expm1(np.linspace(0.0, 3.0, 301))
    u = np.log1p(fine / t_c)
    new = choose_levels(fine, np.diff(u**2) / 10, n_levels=5, floor=t_c)
    np.testing.assert_allclose(np.log1p(new / t_c), 3.0 * np.sqrt(np.arange(6) / 5), atol=1e-3)
    barrier = np.log1p(new / t_c) ** 2
    np.testing.assert_allclose(np.diff(barrier), barrier[-1] / 5, rtol=1e-3)
    # no rejection: uniform in u; zero-rejection pairs do not break the inverse
    np.testing.assert_allclose(choose_levels([0.0, 1.0, 3.0], [0.0, 0.0]), [0.0, 1.5, 3.0])
    assert np.all(np.diff(choose_levels([0.0, 1.0, 2.0, 3.0], [0.0, 0.5, 0.0])) > 0)
    # keep_first: t_1 stays, the pairs above it are equalized (the first pair's jump is ignored)
    np.testing.assert_allclose(choose_levels([0.0, 1.0, 2.0, 3.0, 4.0], [0.9, 0.1, 0.1, 0.4], keep_first=True),
                               [0.0, 1.0, 3.0, 3.5, 4.0])
    assert choose_levels([0.0, 2.0], [0.7], keep_first=True).tolist() == [0.0, 2.0]  # K = 1: nothing to place
    with pytest.raises(InvalidSamplerSettingsError, match="keep_first"):
        choose_levels([0.0, 2.0], [0.7], n_levels=3, keep_first=True)
    for bad in (([0.0, 1.0], [np.nan]), ([0.0, 1.0], [1.5]), ([0.1, 1.0], [0.5]), ([0.0, 1.0], [0.5, 0.5])):
        with pytest.raises(InvalidSamplerSettingsError):
            choose_levels(*bad)


# settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, name",
    [
        ({"chains": 0}, "chains"), ({"samples": 1}, "samples"), ({"n_levels": 0}, "n_levels"),
        ({"levels": (0.5, 0.2)}, "levels"), ({"levels": (0.0, 1.0)}, "levels"), ({"levels": 1.0}, "levels"),
        ({"t_min": -1.0}, "t_min"), ({"t_min": 1.0, "t_max": 0.5}, "t_max"), ({"rho": 1.5}, "rho"),
        ({"rho": (0.5,), "n_levels": 4}, "rho"), ({"rho_top": -0.1}, "rho_top"), ({"warmup": 1}, "warmup"),
        ({"adapt_levels": -1}, "adapt_levels"), ({"keep_first_level": 1}, "keep_first_level"), ({"pilot_sweeps": 1}, "pilot_sweeps"), ({"burn_in": 0.5}, "burn_in"),
        ({"algorithm": "mala"}, "mala"), ({"ode_solver": "rk45"}, "rk45"), ({"ode_grid": "cubic"}, "cubic"),
        ({"step_size": 0.0}, "step_size"), ({"target_acceptance": 1.0}, "target_acceptance"),
    ],
)
def test_bad_settings_are_refused(bad, name):
    with pytest.raises(InvalidSamplerSettingsError, match=name) as info:
        TemperingSettings(**bad)
    assert "\n" not in str(info.value)


def test_run_refusals(getkey):
    model = GaussianFlowScore.free_field(LAT, SCHEME, 0.35)
    with pytest.raises(InvalidSamplerSettingsError, match="below T"):
        run_tempering(model, SCHEME, THEORY, TemperingSettings(levels=(0.1, 6.0)), key=getkey(), T=T)
    with pytest.raises(InvalidSamplerSettingsError, match="TemperingSettings"):
        run_tempering(model, SCHEME, THEORY, {"chains": 2}, key=getkey(), T=T)
    other = Phi4(Lattice.lattice_units(2, 6), -1.0, 6.0)
    with pytest.raises(InvalidSchemeError, match="lattice"):
        run_tempering(model, SCHEME, other, TemperingSettings(), key=getkey(), T=T)
    with pytest.raises(InvalidSamplerSettingsError, match="start must hold 2 finite configurations"):
        run_tempering(model, SCHEME, THEORY, TemperingSettings(chains=2), key=getkey(), T=T,
                      start=np.zeros((3, *LAT.shape)))
    assert TemperingSettings(n_levels=3, t_min=0.1, t_max=1.0).ladder(T).tolist() == pytest.approx([0.1, math.sqrt(0.1), 1.0])
    assert TemperingSettings(n_levels=3, rho=(0.3, 0.6)).rhos().tolist() == [0.3, 0.6, 0.0]


# exactness ------------------------------------------------------------------------------------------


def _pulls(result, reference):
    out = {}
    for name, fn in (("abs_M", np.abs), ("M2", np.square)):
        ours = tau_int(fn(magnetization(result.fields, LAT)))
        theirs = tau_int(fn(magnetization(reference.fields, LAT)))
        out[name] = (ours.value - theirs.value) / math.hypot(ours.error, theirs.error)
        print(name, ours, theirs, f"pull = {out[name]:.2f}")
    return out


@pytest.fixture(scope="module")
def reference():
    return sample(THEORY, SamplerSettings(chains=8, samples=2000, warmup=300), key=jax.random.key(99))


# one compiled sweep serves both runs below and the adaptation test (same chains, ladder size,
# chunk, ODE steps and level-0 move): only the broken rule compiles again
EXCHANGES_ONLY = TemperingSettings(
    chains=8, samples=1000, levels=(0.05, 0.3, 2.0), rho=0.7, hmc_steps_between=0, warmup=0,
    burn_in=100, ode_steps=16, chunk=100,
)
WRONG = GaussianFlowScore.free_field(LAT, SCHEME, 0.35)  # <|M|> ~ 0.32 against ~ 0.51


def test_wrong_model_exchanges_only_is_exact_and_the_test_has_power(reference, monkeypatch):
    """Level 0 without HMC: its only moves are swaps with level 1, so exactness rests on the
    exchange rule. A broken rule (every swap accepted) must fail the same comparison."""
    settings = EXCHANGES_ONLY
    progress = []
    result = run_tempering(WRONG, SCHEME, THEORY, settings, key=jax.random.key(7), T=T,
                           callback=lambda *a: progress.append(a))
    d = result.diagnostics
    print({k: d[k] for k in ("exchange_acceptance", "round_trips_per_1000_sweeps",
                             "predicted_round_trips_per_1000_sweeps", "tau_int_abs_M", "mean_abs_M_per_level",
                             "sampling_seconds", "first_chunk_seconds_incl_compile")})
    assert isinstance(result, TemperingResult)
    assert result.fields.shape == (8, 1000, *LAT.shape) and result.fields.dtype == np.float64
    assert progress[0] == ("warmup", 0, 0) and progress[-1] == ("sampling", 1000, 1000)
    assert d["levels"] == [0.0, 0.05, 0.3, 2.0] and d["hmc_acceptance"] is None
    assert all(0.05 < a <= 1.0 for a in d["exchange_acceptance"])
    assert sum(d["round_trips_per_chain"]) > 0
    pulls = _pulls(result, reference)
    assert all(abs(p) < 4 for p in pulls.values()), pulls
    # the model is visibly wrong: the levels above 0 sit far below the UV <|M|>
    assert d["mean_abs_M_per_level"][1] < 0.8 * d["mean_abs_M_per_level"][0]

    # power: always swapping makes level 0 a copy of level 1 every other sweep
    monkeypatch.setattr(tempering, "exchange_log_ratio", lambda *a: jnp.full_like(a[0], jnp.inf))
    broken = run_tempering(WRONG, SCHEME, THEORY, dataclasses.replace(settings, samples=300), key=jax.random.key(7), T=T)
    assert broken.diagnostics["exchange_acceptance"] == [1.0, 1.0, 1.0]
    assert max(abs(p) for p in _pulls(broken, reference).values()) > 8


def test_level_adaptation(getkey):
    """One pilot round re-places the levels above t_1 from the measured rates (`choose_levels`
    with the ODE grid's warp); diagnostics in range."""
    settings = dataclasses.replace(EXCHANGES_ONLY, samples=100, levels=(), n_levels=3, t_min=0.05,
                                   adapt_levels=1, pilot_sweeps=200, burn_in=0)
    d = run_tempering(WRONG, SCHEME, THEORY, settings, key=getkey(), T=T).diagnostics
    print({k: d[k] for k in ("levels", "exchange_acceptance", "round_trips_per_1000_sweeps", "level_adaptation")})
    (pilot,) = d["level_adaptation"]
    assert pilot["levels"] == pytest.approx([0.0, 0.05, math.sqrt(0.05 * 3.0), 3.0])
    assert d["levels"][:2] == [0.0, 0.05] and d["levels"][-1] == 3.0 and np.all(np.diff(d["levels"]) > 0)
    expected = choose_levels(pilot["levels"], 1 - np.asarray(pilot["exchange_acceptance"]),
                             floor=characteristic_time(SCHEME, LAT), keep_first=True)
    np.testing.assert_allclose(d["levels"], expected, rtol=1e-12)
    assert all(0.0 <= a <= 1.0 for a in d["exchange_acceptance"]) and "impossible" not in d
    assert len(d["round_trips_per_chain"]) == 8


@pytest.mark.slow
def test_hmc_tempering_with_adapted_levels_is_exact(reference):
    """The default shape of a run: FA-HMC at level 0 (window-adapted), pCN levels, one pilot round."""
    settings = TemperingSettings(
        chains=8, samples=1500, n_levels=4, t_min=0.02, hmc_steps_between=1, warmup=200, adapt_levels=1,
        pilot_sweeps=300, burn_in=100, ode_steps=16, chunk=100,
    )
    result = run_tempering(WRONG, SCHEME, THEORY, settings, key=jax.random.key(8), T=T)
    d = result.diagnostics
    print({k: d[k] for k in ("levels", "exchange_acceptance", "round_trips_per_1000_sweeps",
                             "predicted_round_trips_per_1000_sweeps", "hmc_acceptance", "tau_int_abs_M")})
    assert 0.5 < d["hmc_acceptance"] <= 1.0
    pulls = _pulls(result, reference)
    assert all(abs(p) < 4 for p in pulls.values()), pulls
