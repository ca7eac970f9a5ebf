"""`rgdiff bench`: the command runs and writes valid JSON (no timing assertions anywhere), the
analysis formulas are right on closed forms, and a training step compiles once."""

import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.bench import REQUIRED_RATIOS
from rgdiff.bench.samplers import ChunkClock, break_even, choose_objective, dynamic_exponent
from rgdiff.bench.training import power_law_exponent
from rgdiff.cli.app import main
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg import make_scheme
from rgdiff.theory.phi4 import Phi4


def test_bench_quick_kernel_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--tiny", "--only", "kernel", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert set(REQUIRED_RATIOS) <= set(data["ratios"])
    assert data["only"] == "kernel" and set(data["benchmarks"]) == {"kernel"}
    assert data["machine"]["cpu_cores"] >= 1 and data["machine"]["jax_backend"] == jax.default_backend()
    row = data["benchmarks"]["kernel"]["rows"][0]
    for name in ("bare_fft", "push_forward", "noise_only", "multiply_only"):
        fig = row["configs_per_s"][name]
        assert fig["median"] > 0 and fig["spread"] >= 0 and fig["repeats"] >= 1
    assert data["ratios"]["kernel_vs_bare_fft"]["median"] > 0
    assert data["ratios"]["bridge_vs_nuts_ess_per_s_amortized"] is None  # samplers not run
    assert "ratios (same run)" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*part"))  # atomic write left no temporary file


def test_kernel_timing_repeats_calls_until_the_minimum_time():
    """A repeat of the kernel benchmark is back-to-back calls lasting at least `min_seconds`
    (one call of a few milliseconds is as short as the scheduler's jitter)."""
    import time

    from rgdiff.bench._timing import seconds_per_call_over

    calls = []

    def call():
        calls.append(1)
        time.sleep(0.004)
        return np.zeros(())

    assert seconds_per_call_over(call, min_seconds=0.0) >= 0.004 and len(calls) == 1
    calls.clear()
    per_call = seconds_per_call_over(call, min_seconds=0.03)
    assert per_call >= 0.004 and per_call * len(calls) >= 0.03


def test_bench_refuses_unknown_benchmark(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--only", "nope", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rgdiff: error: unknown benchmark 'nope'; choose one of kernel, training, samplers"]
    assert not out.exists()


def test_dynamic_exponent_and_power_law_on_exact_power_laws():
    sizes = [8, 12, 20]
    z = dynamic_exponent(sizes, [2.0 * n**1.7 for n in sizes], [0.1 * n**1.7 for n in sizes])
    assert z["z"] == pytest.approx(1.7, abs=1e-12)
    # weighted fit with relative errors 5% each: var(z) = 1 / sum w (x - xbar)^2, w = 1 / 0.05^2
    x = np.log(sizes)
    assert z["error"] == pytest.approx(0.05 / math.sqrt(np.sum((x - x.mean()) ** 2)), rel=1e-12)
    fit = power_law_exponent([256, 1024, 4096], [3.0 * v for v in (256, 1024, 4096)])
    assert fit["exponent"] == pytest.approx(1.0, abs=1e-12) and fit["error"] == pytest.approx(0.0, abs=1e-12)


def test_break_even_counts_effective_samples():
    # learned: 100 s setup, 2 tau s = 2 x 1 x 0.01 s per effective sample; NUTS: 0 s, 2 x 10 x 0.001
    assert break_even(100.0, 0.005, 1.0, 0.0, 0.001, 10.0) == pytest.approx(100.0 / (0.02 - 0.01))
    assert break_even(100.0, 0.02, 1.0, 0.0, 0.001, 10.0) is None  # never cheaper per effective sample


def test_chunk_clock_separates_the_first_chunk():
    clock = ChunkClock()
    clock.marks["sampling"] = [(0.0, 0), (5.0, 10), (6.0, 20), (7.0, 30), (8.0, 40)]
    per_item, compile_s = clock.per_item_seconds("sampling")
    assert per_item == [0.1, 0.1, 0.1]
    assert compile_s == pytest.approx(4.0)


def test_training_step_compiles_once():
    """The jitted DSM step is compiled at the first step and never again (jax.log_compiles)."""
    from rgdiff.models import ConvScore
    from rgdiff.train.score import TrainSettings, train

    messages, marks = [], []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    lattice = Lattice.lattice_units(2, 4)
    model = ConvScore(lattice, time_scale=1.0, channels=4, num_layers=1, mlp_width=4, num_time_basis=4, key=jax.random.key(0))
    fields = np.random.default_rng(0).normal(size=(16, 4, 4))
    try:
        with jax.log_compiles():
            train(model, make_scheme("carosso", M=1.0), lattice, fields, TrainSettings(steps=5, batch=4, log_every=1),
                  key=jax.random.key(1), on_log=lambda record, _: marks.append(len(messages)))
    finally:
        logger.removeHandler(handler)
    assert sum("Compiling jit(step)" in m for m in messages) == 1
    assert len(marks) == 5 and marks[-1] == marks[0]  # nothing at all compiled after the first step


def test_bench_samplers_tiny_runs_every_local_sampler(tmp_path):
    """The samplers benchmark at one tiny point: NUTS, HMC, FA-HMC and FA-NUTS side by side, every
    figure finite, the ratios named; `--sizes` and `--points` choose the points (no timing asserted)."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--tiny", "--only", "samplers", "--sizes", "8", "--points", "none", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    (row,) = data["benchmarks"]["samplers"]["rows"]
    assert row["point"] == "benchmark_N8" and set(row["samplers"]) == {"nuts", "hmc", "fa-hmc", "fa-nuts"}
    for s in row["samplers"].values():
        for obs in ("abs_M", "chi", "max_abs_phi"):
            assert s["observables"][obs]["tau_int"] >= 0.5 and s["observables"][obs]["ess_per_s"]["value"] > 0
    assert data["ratios"]["fa_hmc_vs_nuts_ess_per_s"]["N"] == 8
    assert data["ratios"]["fa_hmc_vs_nuts_ess_per_s_paper_broken"] is None  # not run: --points none


@pytest.mark.parametrize("args, message", [(["--sizes", "7"], "--sizes '7'"), (["--sizes", "8,x"], "--sizes '8,x'"),
                                           (["--points", "nowhere"], "--points 'nowhere'")])
def test_bench_refuses_unknown_sizes_and_points(tmp_path, capsys, args, message):
    assert main(["bench", "--only", "samplers", *args, "--json", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.slow  # ~8 min on 2 loaded cores: six samplers' compilations
def test_bench_learned_samplers_tiny(tmp_path):
    """Every learned sampler (bridge, RG parallel tempering, CNF, CNF-driven bridge) runs through
    the benchmark at one tiny point with a few training steps, and the best-learned ratios name
    the sampler they took (no timing or quality asserted: too short to mean anything)."""
    from rgdiff.bench import samplers
    from rgdiff.bench.samplers import SamplerBenchSettings

    settings = SamplerBenchSettings(
        sizes=(8,), learned_sizes=(8,), paper_points=(), learned_points=(), chains=2, samples=40, warmup=20,
        hmc_steps=4, train_steps=20, bridge_samples=16, bridge_chains=2, bridge_warmup=10, ode_steps=4,
        imh_per_block=2, tempering_levels=2, flow_objectives=("reverse-kl", "rg"), flow_train_steps=3,
        flow_pilot_steps=2, flow_ode_steps=2, flow_pilot_size=4, flow_chains=2, flow_samples=32, flow_bridge_samples=16,
        chunks=4,
    )
    result = samplers.run(settings)
    (row,) = result["rows"]
    # 40-sample chains and a flow trained 3 steps; nothing failed
    assert all(": UNRELIABLE: tau_int" in note or ": HEAVY-TAILED weights" in note for note in result["notes"])
    assert set(samplers.LEARNED) <= set(row["samplers"])
    for name in samplers.LEARNED:
        s = row["samplers"][name]
        assert s["setup_seconds"] > 0 and s["seconds_per_sample"]["median"] > 0
        assert s["observables"]["abs_M"]["tau_int"] >= 0.5
    objectives = row["samplers"]["flow"]["objectives"]
    assert set(objectives) == {"reverse-kl", "rg"}  # both piloted for 2 steps, the better one trained on to 3
    chosen = row["samplers"]["flow"]["objective"]
    assert {o: c["steps"] for o, c in objectives.items()} == {o: 3 if o == chosen else 2 for o in objectives}
    keys = ("mean_log_weight", "mean_log_weight_error", "train_seconds")
    pilots = {o: {k: c[f"pilot_{k}" if o == chosen else k] for k in keys} for o, c in objectives.items()}
    assert samplers.choose_objective({o: {**p, "steps": 2} for o, p in pilots.items()}) == chosen  # the pilot's choice
    assert all(c["mean_log_weight_error"] > 0 for c in objectives.values())
    assert row["samplers"]["flow"]["pilot_lattice_size"] == 4  # the pilots trained on 4^2, judged on 8^2
    flow = row["samplers"]["flow"]
    steps = flow["ode_steps"]
    # each pilot is judged where its own log q is converged, the final flow where it samples
    assert objectives[chosen]["judged_at_ode_steps"] == steps
    for prefix, c in [("", c) for c in objectives.values()] + [("pilot_", objectives[chosen])]:
        judged = {int(k): v for k, v in c[f"{prefix}log_q_roundtrip_rms_by_steps"].items()}
        converged = [k for k, v in judged.items() if v <= samplers.LOG_Q_TOLERANCE]
        assert min(judged) == samplers.SAMPLING_STEPS[0]
        assert c[f"{prefix}judged_at_ode_steps"] in (min(converged, default=max(judged)), max(judged))
        assert set(c[f"{prefix}expected_imh_acceptance_by_steps"]) == set(c[f"{prefix}log_q_roundtrip_rms_by_steps"])
    assert row["samplers"]["flow-bridge"]["ode_steps"] == steps
    assert flow["log_q_roundtrip_rms"] == objectives[chosen]["log_q_roundtrip_rms_by_steps"][steps]
    # the trained flow's weight tail, from TAIL_PROPOSALS proposals, is both CNF samplers' own
    assert isinstance(flow["weight_pareto_k"], float) and flow["weight_pareto_k"] == row["samplers"]["flow-bridge"]["weight_pareto_k"]
    retraining = flow.get("other_training", {}).get("training_seconds", 0.0)  # a stiff flow trained twice (`_flows`)
    assert flow["training_ode_steps"] in (2, 4) and ("other_training" in flow) == (flow["training_ode_steps"] == 4 or
                                                                                  flow["ode_steps"] > 2 * 2)
    assert flow["setup_parts"]["training"] == pytest.approx(sum(c["train_seconds"] for c in objectives.values()) + retraining)
    assert row["samplers"]["flow"]["warmup_sweeps"] == 4  # a quarter of its 16 IMH steps per chain, discarded
    assert row["samplers"]["flow"]["setup_parts"]["warmup"] > 0
    ratios = samplers.ratios(result)
    for base in ("nuts", "fa_hmc"):
        r = ratios[f"best_learned_vs_{base}_ess_per_s_amortized"]
        assert r["N"] == 8 and r["sampler"] in samplers.LEARNED and r["value"] > 0


def test_tunnelling_counts_vacuum_changes_and_honest_errors():
    """Two stuck chains (one per vacuum) give 0 changes and a <M> error of the size of the vacua;
    a chain alternating every 100 sweeps gives 10 changes per 1000 sweeps."""
    from rgdiff.bench.samplers import tunnelling
    from rgdiff.lattice.geometry import Lattice

    lattice = Lattice.lattice_units(2, 2)
    rng = np.random.default_rng(0)
    stuck = np.stack([np.full(1000, 5.0), np.full(1000, -5.0)]) + 0.1 * rng.normal(size=(2, 1000))
    fields = np.broadcast_to(stuck[..., None, None], (2, 1000, 2, 2))
    t = tunnelling(fields, lattice)
    assert t["vacuum_changes_per_1000_sweeps"]["value"] == 0 and t["vacuum_changes_per_chain"] == [0, 0]
    assert t["mean_M"]["error"] > 3  # the between-chain error sees the two vacua
    assert t["mean_M"]["error"] == t["mean_M"]["error_between_chains"] > 20 * t["mean_M"]["error_gamma"]
    # <|M|> = 5 in both vacua; its Gamma error is that of 0.1-wide white noise over 2000 values
    assert abs(t["mean_abs_M"] - 5.0) < 0.02 and 0.5 < t["mean_abs_M_error"] / (0.1 / np.sqrt(2000)) < 1.5
    hopping = np.where((np.arange(1000) // 100) % 2 == 0, 5.0, -5.0)[None] + 0.1 * rng.normal(size=(1, 1000))
    t = tunnelling(np.broadcast_to(hopping[..., None, None], (1, 1000, 2, 2)), lattice)
    assert t["vacuum_changes_per_chain"] == [9] and abs(t["vacuum_changes_per_1000_sweeps"]["value"] - 9) < 1e-9
    # one chain has no between-chain error; the Gamma method sees the 100-sweep dwell times (an
    # error of order 5 sqrt(2 tau_int / 1000) with tau_int ~ 50), not the 0.1-wide noise
    assert t["mean_M"]["error_between_chains"] is None and t["mean_M"]["error"] == t["mean_M"]["error_gamma"]
    assert 0.3 < t["mean_M"]["error"] / (5.0 * np.sqrt(100.0 / 1000)) < 3.0


def test_named_points_include_the_broken_benchmark_line_point():
    """Every broken-phase point is a named point with learned samplers in both suites, and the
    broken benchmark-line point is the benchmark theory at N = 20 with only m2 lowered."""
    from rgdiff.bench import samplers
    from rgdiff.theory.phi4 import BENCHMARK_LAM_A

    assert set(samplers.BROKEN_POINTS) <= set(samplers.NAMED_POINTS)
    for settings in (samplers.SamplerBenchSettings(), samplers.QUICK):
        assert set(samplers.BROKEN_POINTS) <= set(settings.paper_points) & set(settings.learned_points)
    visited = {label: theory for label, n, theory in samplers.points(samplers.QUICK) if n is None}
    broken = visited["benchmark_broken_N20"]
    assert broken.lattice.size == 20 and broken.m2 == samplers.LINE_BROKEN_M2 < -4.0
    assert broken.lam == 6.0 * BENCHMARK_LAM_A[20] and visited["paper_broken"].m2 == -2.0


def test_learned_samplers_setting_names_known_samplers_only():
    from rgdiff.bench import samplers
    from rgdiff.errors import RgdiffError

    assert samplers.SamplerBenchSettings().learned_samplers == samplers.LEARNED
    with pytest.raises(RgdiffError, match="unknown learned samplers"):
        samplers.SamplerBenchSettings(learned_samplers=("bridge", "teleport"))


def test_interrupted_bench_resumes_without_rerunning_finished_points(tmp_path, monkeypatch, capsys):
    """A samplers benchmark interrupted after its first point keeps that point in <json>.partial;
    the same command run again takes it from there, runs only the rest, draws what an
    uninterrupted run draws (same keys), and leaves no partial file. Other settings are refused."""
    from rgdiff.bench import samplers
    from rgdiff.bench.runner import partial_path, run_bench

    real = samplers._mcmc
    calls = []

    def interrupted(theory, algorithm, settings, key):
        calls.append(theory.lattice.size)
        if theory.lattice.size == 8:
            raise KeyboardInterrupt
        return real(theory, algorithm, settings, key)

    out = tmp_path / "bench.json"
    args = dict(suite="tiny", only="samplers", out=out, quiet=True, sizes="8", points="paper_broken")
    monkeypatch.setattr(samplers, "_mcmc", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bench(**args)
    assert not out.exists()
    partial = json.loads(partial_path(out).read_text())
    assert list(partial["sampler_points"]) == ["paper_broken"]

    calls.clear()
    monkeypatch.setattr(samplers, "_mcmc", lambda *a: calls.append(a[0].lattice.size) or real(*a))
    resumed = run_bench(**args)
    assert calls == [8] * len(samplers.LOCAL)  # the finished point was not rerun
    assert "resuming from" in capsys.readouterr().err
    assert not partial_path(out).exists() and json.loads(out.read_text())["ratios"] == resumed["ratios"]
    whole = run_bench(**{**args, "out": tmp_path / "whole.json"})
    tau = lambda data: [{name: s["observables"]["abs_M"]["tau_int"] for name, s in row["samplers"].items()}
                        for row in data["benchmarks"]["samplers"]["rows"]]
    assert tau(resumed) == tau(whole)
    assert resumed["tunnelling"]["paper_broken"] == json.loads(json.dumps(whole["tunnelling"]["paper_broken"]))

    monkeypatch.setattr(samplers, "_mcmc", interrupted)  # Ctrl-C through the CLI: exit 130 and how to go on
    cli = ["bench", "--tiny", "--only", "samplers", "--sizes", "8", "--points", "paper_broken", "--json", str(out), "--quiet"]
    assert main(cli) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run the same command again" in err[0] and str(partial_path(out)) in err[0], err

    partial_path(out).write_text(json.dumps({**partial, "suite": "quick"}))
    assert main(["bench", "--tiny", "--only", "samplers", "--sizes", "8", "--points", "paper_broken",
                 "--json", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0], err


def test_bench_sizes_none_runs_named_points_only():
    from rgdiff.bench.runner import InvalidBenchError, sampler_settings

    s = sampler_settings("tiny", "none", "paper_broken")
    assert s.sizes == () and s.learned_sizes == () and s.paper_points == ("paper_broken",)
    with pytest.raises(InvalidBenchError, match="nothing to run"):
        sampler_settings("tiny", "none", "none")


def test_bench_without_json_finds_the_newest_interrupted_run_of_the_same_settings(tmp_path):
    from rgdiff.bench.runner import _identity, find_resumable, suite_settings

    def partial(name, suite, only):
        path = tmp_path / f"{name}.json.partial"
        path.write_text(json.dumps({**_identity(suite, only, suite_settings(suite)), "benchmarks": {}, "sampler_points": {}}))
        return path

    assert find_resumable(tmp_path, "tiny", "samplers") is None
    partial("bench-1", "tiny", "samplers")
    partial("bench-2", "quick", "samplers")  # other settings
    partial("bench-3", "tiny", "kernel")
    assert find_resumable(tmp_path, "tiny", "samplers") == tmp_path / "bench-1.json"
    assert find_resumable(tmp_path, "tiny", "samplers", sizes="12") is None  # other sizes: other settings


def test_objective_pilot_ties_go_to_the_cheaper_objective():
    def pilot(mean, error, seconds):
        return {"mean_log_weight": mean, "mean_log_weight_error": error, "train_seconds": seconds, "steps": 150}

    cheap, dear = 30.0, 80.0  # seconds for the pilot's 150 steps
    resolved = {"reverse-kl": pilot(275.0, 0.1, cheap), "rg": pilot(276.0, 0.1, dear)}  # 7 errors apart
    assert choose_objective(resolved) == "rg"
    tied = {"reverse-kl": pilot(275.9, 0.1, cheap), "rg": pilot(276.0, 0.1, dear)}  # 0.7 errors apart
    assert choose_objective(tied) == "reverse-kl"
    assert choose_objective({"rg": pilot(1.0, 0.1, dear)}) == "rg"
    # a tie is judged against the leader's error too: a noisy leader ties with a precise runner-up
    noisy = {"reverse-kl": pilot(275.0, 0.01, cheap), "rg": pilot(275.5, 0.5, dear)}
    assert choose_objective(noisy) == "reverse-kl"


def test_log_q_roundtrip_measures_the_ode_solvers_error():
    """`_proposal_check`'s round trip (encode minus decode log q of the same proposals, what flags
    a CNF sampler as not exact): zero for the identity flow, and for a generic flow it falls as the
    RK4 steps grow. `sampling_steps` takes the fewest converged steps or the next rung of its
    ladder, whichever costs less per expected IMH acceptance."""
    import equinox as eqx

    from rgdiff.bench.samplers import LOG_Q_TOLERANCE, _proposal_check, sampling_steps
    from rgdiff.models.cnf import ContinuousFlow

    lattice, scheme = Lattice(2, 4, 4.0), make_scheme("carosso", M=1.0)
    theory = Phi4(lattice, 0.5, 0.1)
    identity = ContinuousFlow(lattice, 2.0, frequencies=3, time_bumps=3)
    key = jax.random.key(0)
    assert float(jnp.max(jnp.abs(_proposal_check(identity, theory, scheme, key, 16, 2)[0]))) < 1e-10
    w = 0.5 * jax.random.normal(jax.random.key(1), identity.weights.shape)
    flow = eqx.tree_at(lambda m: m.weights, identity, w)
    rms = {k: float(jnp.sqrt(jnp.mean(_proposal_check(flow, theory, scheme, key, 16, k)[0] ** 2))) for k in (1, 4, 32)}
    assert rms[1] > 1e-3, rms  # a generic flow: the coarse solver does not invert itself
    assert rms[32] < 0.1 * rms[4] < 0.1 * rms[1], rms
    ladder = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    steps, tried, acceptance, _ = sampling_steps(flow, theory, scheme, key, ladder)  # up the ladder to a converged round trip
    assert list(tried) == list(ladder[: len(tried)]) == list(acceptance)
    converged = min(k for k, v in tried.items() if v <= LOG_Q_TOLERANCE)
    assert all(v > LOG_Q_TOLERANCE for k, v in tried.items() if k < converged)
    assert max(tried) == ladder[ladder.index(converged) + 1]
    assert all(0 < a <= 1 for a in acceptance.values())
    assert steps == min((converged, max(tried)), key=lambda k: k / acceptance[k])


def test_chains_shorter_than_fifty_tau_int_are_flagged_unreliable():
    from rgdiff.bench._timing import Figure
    from rgdiff.bench.samplers import MIN_CHAIN_TAUS, efficiency

    def ar1_fields(rho, chains, samples, seed):
        rng = np.random.default_rng(seed)
        x = np.zeros((chains, samples))
        for t in range(1, samples):
            x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=chains)
        return np.broadcast_to((3.0 + x)[:, :, None, None], (chains, samples, 4, 4))  # M = 3 + x, away from 0

    lattice, clock = Lattice(2, 4, 4.0), Figure(1e-3, 0.0, 3)
    fast = efficiency(ar1_fields(0.5, 4, 2000, 0), lattice, clock, 0.0, 1000)["abs_M"]  # tau_int = 1.5
    slow = efficiency(ar1_fields(0.99, 4, 2000, 1), lattice, clock, 0.0, 1000)["abs_M"]  # tau_int = 99.5
    assert fast["reliable"] and fast["tau_int"] * MIN_CHAIN_TAUS < 2000
    assert not slow["reliable"] and slow["tau_int"] * MIN_CHAIN_TAUS > 2000


@pytest.mark.parametrize("finer_acceptance, kept", [(0.6, 16), (0.01, 8)])
def test_a_stiff_flow_is_trained_again_with_twice_the_steps(monkeypatch, finer_acceptance, kept):
    """A flow needing more than STIFF_STEPS x its training's RK4 steps is trained again with
    twice the steps; the one cheaper per accepted proposal is kept, and both trainings are setup."""
    from rgdiff.bench import samplers
    from rgdiff.bench.samplers import SamplerBenchSettings

    def fake(theory, data, settings, key):
        steps, acc = (48, 0.09) if settings.flow_ode_steps == 8 else (32, finer_acceptance)
        return {"ode_steps": steps, "expected_imh_acceptance_by_steps": {steps: acc},
                "training_seconds": 10.0 * settings.flow_ode_steps}

    monkeypatch.setattr(samplers, "_trained_flows", fake)
    monkeypatch.setattr(samplers, "_with_weight_tail", lambda flows, theory, key: flows)
    out = samplers._flows(None, None, SamplerBenchSettings(flow_ode_steps=8), None)
    assert out["training_ode_steps"] == kept and out["training_seconds"] == 80.0 + 160.0
    assert out["other_training"]["training_ode_steps"] == 24 - kept
    smooth = samplers._flows(None, None, SamplerBenchSettings(flow_ode_steps=16), None)  # 32 <= 2 x 16: kept as is
    assert smooth["training_ode_steps"] == 16 and "other_training" not in smooth and smooth["training_seconds"] == 160.0
