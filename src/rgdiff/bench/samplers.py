"""Benchmark (samplers): ESS per second and tau_int of every UV sampler, side by side.

Points, each in the same run:

- the paper's two points (d = 2, L = 1, N = 20, lam = 0.0017): `paper_broken` (m2 = -2, the
  embedded default of `rgdiff run`; two vacua that local samplers never leave) and
  `paper_near_massless` (m2 = 0.01, Fig. 7; the zero mode dominates);
- the standard benchmark line at each size N (`theory.benchmark_theory(N)`: d = 2, lattice units,
  m2 = -4, lam = 6 lam_A(N)), where the dynamic exponents z are fitted;
- `benchmark_broken_N20`: the benchmark theory at N = 20 with m2 lowered to `LINE_BROKEN_M2`, a
  broken-phase point near the critical line where the local samplers stop tunnelling.

Samplers:

- local MCMC (`rgdiff.samplers.uv`, Blackjax, Stan's window adaptation): the paper's NUTS, HMC
  with `hmc_steps` leapfrog steps, and the Fourier-accelerated FA-HMC and FA-NUTS
  (`rgdiff.samplers.fourier`), the strongest classical baselines for phi^4; each in its cheaper
  form (`SamplerSettings.in_lockstep`): on a CPU NUTS and FA-NUTS one chain after another from
  N = 16, otherwise the chains in lockstep;
- the learned samplers, at the benchmark sizes `learned_sizes` and the paper points
  `learned_points`, all trained on the FA-HMC chains of the same point (whose cost counts as setup):
  - `bridge` (`rgdiff.samplers.bridge`): an EFT score model trained by DSM; proposals from the
    probability-flow ODE in `ode_dtype` (float32) with `ode_steps` Tsit5 steps, batched over
    chains and sweeps; blocks of `imh_per_block` exact IMH steps, then one FA-HMC trajectory and
    one encode per block;
  - `tempering` (`rgdiff.samplers.tempering`): RG parallel tempering on `tempering_levels`
    levels of the same score model, the ladder re-placed once from a pilot's exchange rates;
  - `flow`: the RG-time CNF (`rgdiff.models.cnf`) as an exact independence sampler, trained by
    the better of reverse KL [5.5] and the RG objective [5.22] (all of it counts as setup;
    `_flows`). Trained to the end, reverse KL won at every benchmark size (importance ESS
    0.90/0.85, 0.84/0.41, 0.49/0.26, 0.33/0.04 at N = 8, 12, 20, 32, full settings, stop 25),
    and again each time a pilot chose the RG objective (stop 28, full settings): at N = 32 its
    flow accepted 13% of IMH proposals against 26% for reverse KL's, its flow-bridge had tau_int
    12 against 3.7, and it trained at 1.53 s per step against 0.67; at `paper_broken` its
    flow-bridge accepted 3.4% against 35%. The RG objective costs 2.3-2.8x as much per step.
    So `flow_objectives` is reverse KL alone by default; with both, each trains
    `flow_pilot_steps` steps on an N = `flow_pilot_size` lattice of the same spacing, and the
    one with the larger mean log weight E_q[log w] at N moves there and trains on to
    `flow_train_steps` in all. The importance ESS after a 150-step pilot is no criterion (a few
    weights decide it: both objectives at 0.019 at N = 20, stop 25); the mean log weight is
    resolved there: at N = 20 after 150 steps 276.31 +- 0.06 (reverse KL) against 275.91 +- 0.07
    (RG), after 300 steps 277.09 +- 0.03 against 276.54 +- 0.05 (1024 proposals, two draws each).
    `flow_train_steps` and `flow_learning_rate` (Adam, 1e-2; the paper's 5e-3 is
    `FlowTrainSettings`'s default) trade training against acceptance. Reverse KL alone at N = 20
    (stop 27, the full settings otherwise, 4 x 1000 IMH steps each; amortized ESS/s of |M| over 1e5
    samples, NUTS 66 +- 9 on the same machine):

    | steps x learning rate | train s | IMH acceptance | tau_int |M| | amortized ESS/s |
    |---|---|---|---|---|
    | 600 x 5e-3 | 136 | 0.565 | 1.86 +- 0.24 | 114 +- 17 |
    | 450 x 1e-2 | 110 | 0.525 | 1.36 +- 0.16 | 174 +- 24 |
    | 300 x 1e-2 | 68 | 0.498 | 1.65 +- 0.21 | 179 +- 26 |
    | 300 x 1.5e-2 | 71 | 0.425 | 2.36 +- 0.34 | 121 +- 19 |
    | 200 x 1.5e-2 | 47 | 0.393 | 3.67 +- 0.62 | 93 +- 17 |
    | 150 x 2e-2 | 35 | 0.328 | 5.75 +- 1.16 | 64 +- 14 |

    Batch 32 (600 x 5e-3: 86 +- 14) and 3 sine features instead of 6 (106 +- 19) did worse.
    400 steps leaves room for N = 32, where the acceptance levelled off later (0.3-0.4 at
    500-550 steps at 5e-3, stop 24). The 75-step pilot at 1e-2 moves the weights about as far
    as stop 26's 150 steps at 5e-3. At N = 32 training on past 400 steps does not help: from 500
    to 800 steps the mean log weight wandered between 735.67 and 736.13 (+- 0.025) and the
    weights' Pareto k-hat between 0.37 and 0.71, and at 800 the flow IMH's tau_int was 64 +- 12
    (stop 29): at 1e-2 the last iterate is a draw from a noisy plateau, and which one sets the
    flow IMH's tail. Decaying the learning rate (`flow_learning_rate_decay`, over the run) did
    not narrow the draw: two trainings each at N = 32 (8 x 5000 steps) gave

    | decay over 400 steps | k-hat | flow tau_int | flow-bridge tau_int |
    |---|---|---|---|
    | 0.89 (the default; 0.1 per 8000 steps) | 0.54, 0.42 | 19.6 +- 2.4, 9.1 +- 0.8 | 7.4 +- 0.6, 4.8 +- 0.3 |
    | 0.1 | 0.39, 0.50 | 8.8 +- 0.8, 17.9 +- 2.1 | 4.6 +- 0.4, 5.5 +- 0.5 |
    | 0.01 (undertrained) | 0.82, 0.88 | 42 +- 7, 98 +- 22 | 21 +- 3, 20 +- 3 |

    The flow-bridge's local moves make it the steadier of the two (its single chains' tau_int
    4-8 where the flow IMH's ranged over 6-76). Do not train with fewer than 8 RK4 steps: at 4 the training
    cost halves and the benchmark line lost no acceptance (0.50 and 0.30 at N = 20 and 32), but
    at the broken-phase points the flow learns a map that is good only as its own coarse
    discretization; sampled where log q is converged (64 steps) its IMH acceptance fell to
    0.007 and 0.025, the flow-bridge's to 0, and neither tunnelled (stop 27, full settings).
    The flow trains and samples in `flow_dtype` (float32): 1.5x faster per training step than
    float64 at N = 20 with the same acceptance curve (0.51 and 0.54 at 250 and 300 steps against
    0.51 and 0.47); the IMH weights -S - log q are formed in float64 from the float32 proposals.
    It trains with `flow_ode_steps` RK4 steps and samples with the fewest steps of
    `SAMPLING_STEPS` whose log q is converged to `LOG_Q_TOLERANCE`, or the next where that is
    cheaper per expected IMH acceptance (`sampling_steps`); a sampler whose log q is not
    converged at the most steps is noted as NOT EXACT in the run's notes;
  - `flow-bridge`: the bridge with that CNF as its proposal, at the same steps.

  Both CNF samplers run `flow_chains` chains as long as the local samplers' (8 x 5000; a sweep
  costs about a millisecond at N = 32, against 250 s of training). Shorter chains do not see
  how often an IMH chain sticks: at N = 32 a flow with heavy-tailed weights (Pareto k-hat 0.54,
  `imh.pareto_k`) gave its flow IMH tau_int(|M|) 19.6 +- 2.4 over 8 x 4800 steps, with single
  chains from 6.5 to 74, and 49 +- 18 over the first 4 x 1000 (stop 29).

Tunnelling: at the broken-phase points (`BROKEN_POINTS`) every sampler's vacuum changes per 1000
sweeps and <M> (exactly 0 by symmetry) with the larger of its between-chain and Gamma-method
errors (`tunnelling`).

Observables per configuration: |M|, the chi-type V M^2 (the series of G2(0) = L^d <M^2> up to a
constant factor) and max|phi|. tau_int (and its error) by the Gamma method (pyerrors), ESS =
chains x samples / (2 tau_int). Seconds exclude JIT compilation: samplers run in fixed-size
chunks, the first chunk (which compiles) is replaced by the median of the others, and compile
seconds are the difference. ESS/s is given

- excluding setup ("sampling only"), and
- including setup, amortized over `amortize_samples` (default 1e5) samples: setup is the MCMC
  warm-up (adaptation steps at the sampling cost per transition), and for the bridge the FA-HMC
  training data (its warm-up and sampling), the DSM training steps and the bridge warm-up; for the
  flow the training of every objective in `flow_objectives`.

Break-even: the number of effective samples beyond which the learned sampler's total time
(setup + sampling) is below NUTS's; null where it never is. The dynamic exponent z of
tau_int(|M|) ~ N^z comes from a weighted log-log fit over the benchmark sizes run (error from the
tau_int errors; with two sizes the fit is exact and the error is propagated).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import RgdiffError
from rgdiff.observables.estimators import magnetization
from rgdiff.rg import make_scheme
from rgdiff.samplers import imh
from rgdiff.samplers.uv import SamplerSettings, sample
from rgdiff.theory.phi4 import BENCHMARK_LAM_A, benchmark_theory, paper_theory
from rgdiff.bench._timing import Figure, compiled

NAME = "samplers"
OBSERVABLES = ("abs_M", "chi", "max_abs_phi")
LOCAL = ("nuts", "hmc", "fa-hmc", "fa-nuts")  # the local MCMC samplers, run at every point
BENCHMARK_SIZES = tuple(BENCHMARK_LAM_A)
PAPER_POINTS = {"paper_broken": -2.0, "paper_near_massless": 0.01}  # point -> bare m2 at L = 1, N = 20
# m2 on the benchmark line at N = 20 lowered from -4 until NUTS and FA-HMC stopped changing vacuum
# (4 chains x 2000 sweeps: 23 and 29 changes per 1000 sweeps at -4, 1.6 and 1.8 at -4.3, 0 at -4.6)
LINE_BROKEN_M2 = -4.6
NAMED_POINTS = {  # the points off the benchmark line's z fit: label -> theory
    **{label: functools.partial(paper_theory, m2) for label, m2 in PAPER_POINTS.items()},
    "benchmark_broken_N20": lambda: dataclasses.replace(benchmark_theory(20), m2=LINE_BROKEN_M2),
}
BROKEN_POINTS = ("paper_broken", "benchmark_broken_N20")  # where vacuum tunnelling is measured
LEARNED = ("bridge", "tempering", "flow", "flow-bridge")  # the learned samplers, run at learned sizes and points
PILOT_PROPOSALS = 512  # flow proposals that judge each objective's pilot (`_flows`)
# flow proposals whose weights' Pareto k-hat (`weight_tail`) judges a trained flow's tail: from
# 512 it scattered too much (0.68 where 8192 gave 0.415, N = 32, stop 29)
TAIL_PROPOSALS = 8192
# rms log q error (`_proposal_check`) above which a CNF sampler is flagged not exact. An error eps
# in log q biases <O> by cov(O, eps) <= sigma_O rms(eps) (Cauchy-Schwarz), below the statistical
# error sigma_O / sqrt(ESS) of a run of ESS effective samples if rms(eps) < ESS^-1/2: 0.01 for the
# 1e4 effective samples of the bench's 1e5-sample amortization (0.1 before stop 28 covered 100)
LOG_Q_TOLERANCE = 0.01
SAMPLING_STEPS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)  # the RK4 steps `sampling_steps` tries, in order
# Pareto k-hat of a CNF's proposal weights at and above which E_q[w^2] is infinite and so is its
# IMH chains' mean holding time (`imh.pareto_k`): its chains stick now and then (noted in the run)
HEAVY_TAIL_K = 0.5
MIN_CHAIN_TAUS = 50  # chains shorter than this many tau_int give no reliable estimate (`efficiency`)
# a flow that needs more than this many times its training's RK4 steps to sample exactly is trained again with twice the steps (`_flows`)
STIFF_STEPS = 2
PILOT_SIGMAS = 2.0  # pilots closer than this many standard errors are a tie, won by the cheaper objective


@dataclasses.dataclass(frozen=True)
class SamplerBenchSettings:
    sizes: tuple[int, ...] = (8, 12, 20, 32)
    learned_sizes: tuple[int, ...] = (8, 12, 20, 32)  # sizes where the learned samplers are trained and run
    paper_points: tuple[str, ...] = tuple(NAMED_POINTS)  # the named points run (`NAMED_POINTS`)
    learned_points: tuple[str, ...] = BROKEN_POINTS  # named points with learned samplers (tunnelling)
    learned_samplers: tuple[str, ...] = LEARNED  # which of the learned samplers run there
    chains: int = 8
    samples: int = 5000
    warmup: int = 500
    hmc_steps: int = 10
    train_steps: int = 2000
    bridge_samples: int = 1000  # sweeps per chain of the EFT bridge and tempering
    bridge_chains: int = 4
    bridge_warmup: int = 200
    ode_steps: int = 32
    ode_dtype: str = "float32"
    imh_per_block: int = 4
    tempering_levels: int = 4
    flow_objectives: tuple[str, ...] = ("reverse-kl",)  # both: the pilot of `_flows` chooses (it misled twice, stop 28)
    flow_train_steps: int = 400
    flow_pilot_steps: int = 75
    flow_learning_rate: float = 1e-2
    flow_learning_rate_decay: float = 0.1 ** (400 / 8000)  # the factor by which it falls (exponentially) over flow_train_steps
    flow_dtype: str = "float32"
    flow_ode_steps: int = 8
    flow_pilot_size: int | None = 8
    flow_chains: int = 8  # chains of both CNF samplers
    flow_samples: int = 40_000  # flow IMH proposals, shared out over `flow_chains` chains
    flow_bridge_samples: int = 5000  # sweeps per chain of the flow-bridge
    amortize_samples: int = 100_000
    chunks: int = 20

    def __post_init__(self):
        unknown = [n for n in self.learned_samplers if n not in LEARNED]
        if unknown:
            raise RgdiffError(f"unknown learned samplers {unknown}; known: {', '.join(LEARNED)}")
        if self.flow_pilot_size is not None and (isinstance(self.flow_pilot_size, bool) or self.flow_pilot_size < 2):
            raise RgdiffError(f"flow_pilot_size must be a lattice size >= 2 or None (pilot at N), got {self.flow_pilot_size!r}")
        if not self.flow_objectives or not 1 <= self.flow_pilot_steps <= self.flow_train_steps:
            raise RgdiffError("the flow needs at least one objective and 1 <= flow_pilot_steps <= flow_train_steps, got "
                              f"{self.flow_objectives}, {self.flow_pilot_steps}, {self.flow_train_steps}")


QUICK = SamplerBenchSettings(
    sizes=(8, 12, 20), learned_sizes=(8, 12, 20), learned_points=BROKEN_POINTS, chains=4, samples=2000, warmup=300, train_steps=500,
    bridge_samples=200, bridge_warmup=50, ode_steps=32, flow_objectives=("reverse-kl",), flow_train_steps=300,
    flow_ode_steps=8, flow_chains=4, flow_samples=4000, flow_bridge_samples=1000, chunks=10,
)
TINY = SamplerBenchSettings(
    sizes=(8,), learned_sizes=(), paper_points=(), learned_points=(), chains=2, samples=40, warmup=20, hmc_steps=4,
    chunks=4,
)


# measurement helpers ------------------------------------------------------------------------


class ChunkClock:
    """Progress callback that records when each chunk of a stage finished."""

    def __init__(self):
        self.marks: dict[str, list[tuple[float, int]]] = {}

    def __call__(self, stage, done, total):
        self.marks.setdefault(stage, []).append((time.perf_counter(), done))

    def per_item_seconds(self, stage: str) -> tuple[list[float], float]:
        """Seconds per item for each chunk after the first, and the first chunk's compile excess."""
        marks = self.marks.get(stage, [])
        rates, first = [], None
        for (t0, d0), (t1, d1) in zip(marks, marks[1:]):
            if d1 > d0:
                per = (t1 - t0) / (d1 - d0)
                if first is None:
                    first = (per, t1 - t0, d1 - d0)
                else:
                    rates.append(per)
        if first is None:
            return [], 0.0
        if not rates:  # a single chunk: cannot separate the compilation
            return [first[0]], 0.0
        compile_s = max(first[1] - float(np.median(rates)) * first[2], 0.0)
        return rates, compile_s


def tau_with_error(series: np.ndarray) -> dict:
    """Gamma-method tau_int and its error of one observable, shape (chains, samples)."""
    from rgdiff.observables.stats import ENSEMBLE, primaries

    obs = primaries({"x": series}, markov=True)["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs.gamma_method()
    tau = float(obs.e_tauint.get(ENSEMBLE, 0.5))
    dtau = float(obs.e_dtauint.get(ENSEMBLE, 0.0))
    return {"tau_int": tau, "error": dtau}


def observables_of(fields: np.ndarray, lattice) -> dict:
    m = magnetization(fields, lattice)
    return {"abs_M": np.abs(m), "chi": lattice.sites * m**2, "max_abs_phi": np.max(np.abs(fields), axis=lattice.axes)}


def efficiency(fields: np.ndarray, lattice, seconds_per_sample: Figure, setup_seconds: float, amortize: int) -> dict:
    """tau_int, ESS and ESS/s (sampling only and amortized) for each observable, and "reliable":
    whether each chain is at least `MIN_CHAIN_TAUS` tau_int long (shorter, the Gamma method's
    tau_int and everything from it are unreliable, and the chain may not have visited the
    distribution)."""
    chains, samples = fields.shape[:2]
    n = chains * samples
    out = {}
    for name, series in observables_of(fields, lattice).items():
        tau = tau_with_error(series)
        rel_tau = tau["error"] / tau["tau_int"] if tau["tau_int"] > 0 else math.nan
        sps = seconds_per_sample.median
        rel_t = seconds_per_sample.spread / sps if sps > 0 else math.nan
        ess = n / (2.0 * tau["tau_int"])
        rate = 1.0 / (2.0 * tau["tau_int"] * sps)
        amortized = amortize / (2.0 * tau["tau_int"]) / (setup_seconds + amortize * sps)
        rel = math.hypot(rel_tau, rel_t)
        out[name] = {
            "tau_int": tau["tau_int"], "tau_int_error": tau["error"], "ess": ess,
            "reliable": samples >= MIN_CHAIN_TAUS * tau["tau_int"],
            "ess_per_s": {"value": rate, "error": rate * rel},
            "ess_per_s_amortized": {"value": amortized, "error": amortized * rel},
        }
    return out


def dynamic_exponent(sizes, taus, errors) -> dict:
    """z and its error in tau_int ~ N^z: weighted least squares in log-log."""
    pts = [(n, t, e) for n, t, e in zip(sizes, taus, errors) if t and t > 0]
    if len(pts) < 2:
        return {"z": None, "error": None, "sizes": [p[0] for p in pts]}
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    sig = np.array([max(p[2] / p[1], 1e-6) for p in pts])
    w = 1.0 / sig**2
    xm = np.sum(w * x) / np.sum(w)
    sxx = np.sum(w * (x - xm) ** 2)
    z = float(np.sum(w * (x - xm) * (y - np.sum(w * y) / np.sum(w))) / sxx)
    return {"z": z, "error": float(math.sqrt(1.0 / sxx)), "sizes": [p[0] for p in pts]}


def break_even(setup_learned, sps_learned, tau_learned, setup_ref, sps_ref, tau_ref) -> float | None:
    """Effective samples beyond which the learned sampler's total time is below the reference's."""
    cost_l, cost_r = 2 * tau_learned * sps_learned, 2 * tau_ref * sps_ref  # seconds per effective sample
    if cost_l >= cost_r:
        return None
    return max((setup_learned - setup_ref) / (cost_r - cost_l), 0.0)


# the samplers ---------------------------------------------------------------------------------


def _mcmc(theory, algorithm: str, settings: SamplerBenchSettings, key) -> dict:
    s = SamplerSettings(algorithm=algorithm, chains=settings.chains, samples=settings.samples,
                        warmup=settings.warmup, hmc_steps=settings.hmc_steps)
    clock = ChunkClock()
    chunk = max(1, -(-settings.samples // settings.chunks))
    t0 = time.perf_counter()
    res = sample(theory, s, key=key, callback=clock, chunk=chunk)
    wall = time.perf_counter() - t0
    per_transition, compile_s = _seconds_per_sample(clock, settings.chains)  # one chain, one transition
    setup = settings.warmup * settings.chains * per_transition.median  # adaptation at the sampling cost
    return {
        "fields": res.fields,
        "seconds_per_sample": per_transition,
        "setup_seconds": setup,
        "compile_seconds": compile_s,
        "warmup_seconds_incl_compile": res.diagnostics["warmup_seconds"],
        "wall_seconds": wall,
        "acceptance": float(np.mean(res.diagnostics["acceptance_rate"])),
        "mean_integration_steps": float(np.mean(res.diagnostics["mean_integration_steps"])),
        "lockstep": res.diagnostics["lockstep"],
    }


def _data_seconds(data: dict) -> float:
    """What the FA-HMC training data cost: its warm-up and sampling."""
    fields = data["fields"]
    return data["setup_seconds"] + fields.shape[0] * fields.shape[1] * data["seconds_per_sample"].median


def _score_model(theory, data: dict, settings: SamplerBenchSettings, key) -> dict:
    """An EFT score model trained by DSM on the chains of `data` (an `_mcmc` run, FA-HMC in `run`)."""
    from rgdiff.train.initial import initial_model
    from rgdiff.train.score import TrainSettings, default_horizon, train

    lattice = theory.lattice
    scheme = make_scheme("carosso", M=1.0)
    fields = data["fields"]
    k_model, k_train = jax.random.split(key)
    horizon = default_horizon(scheme, fields, lattice)
    model = initial_model("eft-score", lattice, scheme, fields, horizon, key=k_model)
    ts = TrainSettings(steps=settings.train_steps, batch=64, decay_steps=settings.train_steps, horizon=horizon,
                       log_every=settings.train_steps)
    clock = ChunkClock()
    clock("training", 0, settings.train_steps)  # so the first interval holds the compilation
    model = train(model, scheme, lattice, fields, ts, key=k_train, callback=clock)
    per_step, train_compile = clock.per_item_seconds("training")
    return {"model": model, "scheme": scheme, "horizon": horizon,
            "training_seconds": settings.train_steps * float(np.median(per_step)), "train_compile_seconds": train_compile}


def _learned_chunk(samples: int, settings: SamplerBenchSettings) -> int:
    """Sweeps per jitted call of a bridge or tempering run of `samples` sweeps: `chunks` timed chunks."""
    return max(2, -(-samples // settings.chunks))


def _seconds_per_sample(clock: ChunkClock, chains: int) -> tuple[Figure, float]:
    """Seconds per recorded sample (one chain, one sweep) of the "sampling" stage, and its compile seconds."""
    per_sweep, compile_s = clock.per_item_seconds("sampling")
    return Figure.of([p / chains for p in per_sweep]), compile_s


def equilibrated_starts(data: dict, chains: int) -> np.ndarray:
    """`chains` starting configurations for a learned sampler's chains: the last states of the
    FA-HMC run that trained its model (equilibrated, and already paid for as setup), taken round
    the FA-HMC chains so that each vacuum they sit in is represented."""
    fields = np.asarray(data["fields"])
    return np.stack([fields[i % fields.shape[0], -1 - i // fields.shape[0]] for i in range(chains)])


def _bridge_run(proposal, theory, data: dict, settings: SamplerBenchSettings, setup: dict, key, chains: int,
                samples: int) -> dict:
    """The bridge (`rgdiff.samplers.bridge.sample_bridge`) with `proposal`, `chains` chains of
    `samples` sweeps: blocks of `imh_per_block` IMH steps, one FA-HMC trajectory and one encode
    per block. `setup`: the seconds it took to have the proposal (training data, training), by part."""
    from rgdiff.samplers.bridge import BridgeSettings, sample_bridge

    bs = BridgeSettings(chains=chains, samples=samples, hmc_steps_between=1,
                        imh_per_block=settings.imh_per_block, warmup=settings.bridge_warmup,
                        chunk=_learned_chunk(samples, settings))
    clock = ChunkClock()
    res = sample_bridge(proposal, theory, bs, key=key, callback=clock, start=equilibrated_starts(data, bs.chains))
    per_sample, compile_s = _seconds_per_sample(clock, chains)
    # the bridge warm-up is the window adaptation of its local moves (FA-HMC) plus one encode
    warm_seconds = settings.bridge_warmup * chains * data["seconds_per_sample"].median
    parts = {**setup, "warmup": warm_seconds}
    return {
        "fields": res.fields,
        "seconds_per_sample": per_sample,
        "setup_seconds": sum(parts.values()),
        "setup_parts": parts,
        "compile_seconds": compile_s,
        "imh_acceptance": res.diagnostics["imh_acceptance"],
        "hmc_acceptance": res.diagnostics["hmc_acceptance"],
        "log_weight_std": res.diagnostics["log_weight_std"],
        "bridge_settings": bs.describe(),
    }


def _bridge(theory, data: dict, score: dict, settings: SamplerBenchSettings, key) -> dict:
    """The bridge driven by the EFT score model (`_score_model`): float32 probability-flow ODE
    proposals (`settings.ode_steps`, `ode_dtype`), the chains in float64."""
    from rgdiff.generate.diffusion import ode_proposal
    from rgdiff.models.base import cast_model

    proposal = ode_proposal(cast_model(score["model"], settings.ode_dtype), score["scheme"], T=score["horizon"],
                            steps=settings.ode_steps, dtype=settings.ode_dtype)
    out = _bridge_run(proposal, theory, data, settings,
                      {"training_data": _data_seconds(data), "training": score["training_seconds"]}, key,
                      settings.bridge_chains, settings.bridge_samples)
    return {**out, "horizon": score["horizon"], "train_compile_seconds": score["train_compile_seconds"],
            "ode": {"steps": settings.ode_steps, "dtype": settings.ode_dtype, "solver": "tsit5"}}


def _tempering(theory, data: dict, score: dict, settings: SamplerBenchSettings, key) -> dict:
    """RG parallel tempering (`rgdiff.samplers.tempering.run_tempering`) on the levels of the same
    EFT score model as the bridge, the ladder re-placed once from a pilot's exchange rates; the
    pilot counts as warm-up."""
    from rgdiff.samplers.tempering import TemperingSettings, run_tempering

    ts = TemperingSettings(chains=settings.bridge_chains, samples=settings.bridge_samples,
                           n_levels=settings.tempering_levels, adapt_levels=1,
                           pilot_sweeps=max(20, settings.bridge_warmup // 2), warmup=settings.bridge_warmup,
                           ode_steps=settings.ode_steps, chunk=_learned_chunk(settings.bridge_samples, settings))
    clock = ChunkClock()
    t0 = time.perf_counter()
    res = run_tempering(score["model"], score["scheme"], theory, ts, key=key, T=score["horizon"], callback=clock,
                        start=equilibrated_starts(data, ts.chains))
    wall = time.perf_counter() - t0
    per_sample, compile_s = _seconds_per_sample(clock, settings.bridge_chains)
    d = res.diagnostics
    sampling = settings.bridge_samples * settings.bridge_chains * per_sample.median
    # warm-up and pilot at their measured wall time less the sampling and its compilation; the
    # warm-up's and pilot's own compilations stay in (not separable here), so this overstates setup
    parts = {"training_data": _data_seconds(data), "training": score["training_seconds"],
             "warmup_and_pilot": max(wall - sampling - compile_s, 0.0)}
    return {
        "fields": res.fields,
        "seconds_per_sample": per_sample,
        "setup_seconds": sum(parts.values()),
        "setup_parts": parts,
        "compile_seconds": compile_s,
        "levels": d.get("levels"),
        "exchange_acceptance": d.get("exchange_acceptance"),
        "round_trips_per_1000_sweeps": d.get("round_trips_per_1000_sweeps"),
        "hmc_acceptance": d.get("hmc_acceptance"),
        "tempering_settings": ts.describe(),
    }


def _flows(theory, data: dict, settings: SamplerBenchSettings, key) -> dict:
    """The flow of `_trained_flows`, trained once more from the start with twice the RK4 steps
    where it needs more than `STIFF_STEPS` times its training's steps to sample exactly: such a
    flow learned a map that is good only as its own coarse discretization. Of the two, the one
    cheaper per accepted proposal (sampling steps / expected IMH acceptance) is kept; both
    trainings count as setup. At `paper_broken` (trained with 8 steps, stop 29) one training
    needed 48 steps and accepted 0.09 (its flow-bridge 0.0, no vacuum change); trained with 16
    it accepted 0.34 (flow-bridge 0.29, 145 vacuum changes per 1000 sweeps). Another needed 24
    and accepted 0.47 (0.45, 227); with 16, 32 steps and 0.65 (0.64, 321). On the benchmark line
    the flows sample with at most their training's 8 steps, and nothing is retrained.

    Adds to the kept flow's `_trained_flows` record "training_ode_steps", "weight_pareto_k"
    (the Pareto k-hat of its weights at its sampling steps, `weight_tail`) and, where it trained
    twice, "other_training" (the flow not kept: its training and sampling steps, expected IMH
    acceptance and training seconds); "training_seconds" is both trainings'."""
    out = _trained_flows(theory, data, settings, key)
    out["training_ode_steps"] = settings.flow_ode_steps
    if out["ode_steps"] <= STIFF_STEPS * settings.flow_ode_steps:
        return _with_weight_tail(out, theory, key)
    finer = dataclasses.replace(settings, flow_ode_steps=2 * settings.flow_ode_steps)
    again = _trained_flows(theory, data, finer, key)
    again["training_ode_steps"] = finer.flow_ode_steps

    def cost(flows):  # RK4 steps per accepted proposal
        return flows["ode_steps"] / max(flows["expected_imh_acceptance_by_steps"][flows["ode_steps"]], 1e-12)

    best, other = (again, out) if cost(again) <= cost(out) else (out, again)
    dropped = {"training_ode_steps": other["training_ode_steps"], "ode_steps": other["ode_steps"],
               "expected_imh_acceptance": other["expected_imh_acceptance_by_steps"][other["ode_steps"]],
               "training_seconds": other["training_seconds"]}
    return _with_weight_tail({**best, "training_seconds": best["training_seconds"] + other["training_seconds"],
                              "other_training": dropped}, theory, key)


def _with_weight_tail(flows: dict, theory, key) -> dict:
    """`flows` with the "weight_pareto_k" of its flow at its sampling steps (`weight_tail`;
    None where it is not finite), for the kept flow only."""
    k = weight_tail(flows["flow"], theory, flows["scheme"], jax.random.fold_in(key, 200), flows["ode_steps"])
    return {**flows, "weight_pareto_k": _json_number(k)}


def _trained_flows(theory, data: dict, settings: SamplerBenchSettings, key) -> dict:
    """The RG-time CNF (`rgdiff.models.cnf`, `rgdiff.train.cnf.train_flow`; the RG objective's UV
    chains start on the FA-HMC data) trained by the better objective of `settings.flow_objectives`.

    With one objective it trains `flow_train_steps` steps at N. With more, each trains
    `flow_pilot_steps` steps, and the one with the larger mean log weight
    E_q[log w] = log Z - KL(q || p), w = exp(-S) / q, on `PILOT_PROPOSALS` proposals trains on to
    `flow_train_steps` (a fresh Adam state: at b1 = 0.8, b2 = 0.9 its moments remember about 10
    steps). Both objectives are judged by the same quantity on the same target, and log Z cancels
    in the comparison. Unlike the importance ESS, which a few large weights decide, the mean log
    weight has the standard error std(log w) / sqrt(n): after 150 steps reverse KL led by 3.9
    combined errors at N = 32, by 1.1 and 4.5 in two trainings at N = 20 and by 0.3 at
    `benchmark_broken_N20` (full settings, stop 26). Pilots within `PILOT_SIGMAS` errors of each
    other are a tie, won by the objective cheaper per step (`choose_objective`): reverse KL, 2.3-2.8x
    cheaper, won at every benchmark size trained to the end (stop 25). Each flow is judged at the
    RK4 steps it would sample with (`sampling_steps`), not the training's: at `paper_broken` log q
    at 8 steps was off by 17 rms (stop 26), which moves the mean log weight by more than the gap
    it is to resolve. All training counts as setup; the choosing proposals do not (about 1% of the
    training).

    The pilots train on an N = `flow_pilot_size` lattice of the same spacing and couplings where
    that is smaller than N (a training step there costs about (n / N)^2 of one at N), move to N
    (`ContinuousFlow.on_lattice`, the volume transfer of Gerdes et al.) and are judged there, on
    the target; the winner trains on at N. The RG objective's pilot at N was a third of the
    flow's setup at N = 32 (stop 27); at N = 8 both pilots cost 14 s at every N (stop 28). Judged
    on the small lattice itself, the pilots once chose the RG objective at `paper_broken` whose
    flow-bridge at N = 20 then accepted 3.4% of its IMH proposals and changed vacuum 17 times
    per 1000 sweeps, against 35% and 172 for reverse KL's (stop 28): the vacua's barrier grows
    with the volume, so the small lattice is no judge of the large one. Judged at N, the same
    pilots were a tie (mean log weights 263 +- 661 and -752 +- 820: moved flows of the small
    volume overlap the large one's two vacua poorly), won by the cheaper reverse KL; but at
    N = 32 on the benchmark line the RG pilot led at N, 731.14 +- 0.17 against 730.25 +- 0.18,
    and trained to the end it lost, 734.59 +- 0.11 against reverse KL's 736.07 +- 0.07 in a run
    with the same keys: 75 steps do not tell which objective ends better. The RG
    objective's UV chains there start on the FA-HMC configurations cut to n^d sites: not samples
    of the small lattice's exp(-S) (a seam at the cut), but the chains move by exact IMH and HMC
    steps from the first training step on, and the configurations keep the data's vacua.

    Returns {"flow", "scheme", "objective", "training_seconds", "candidates": {objective:
    {"steps", "train_seconds", "mean_log_weight" (at N), "mean_log_weight_error",
    "importance_ess_per_sample", "judged_at_ode_steps", "log_q_roundtrip_rms_by_steps",
    "expected_imh_acceptance_by_steps" (after its last step; `sampling_steps`), and for the one
    trained on the last seven after its pilot, prefixed "pilot_"}}, "pilot_lattice_size",
    "ode_steps", "log_q_roundtrip_rms", "log_q_roundtrip_rms_by_steps",
    "expected_imh_acceptance_by_steps"} (the best flow's, as trained to the end)."""
    from rgdiff.lattice.geometry import Lattice
    from rgdiff.models.base import cast_model
    from rgdiff.models.cnf import ContinuousFlow
    from rgdiff.train.cnf import FlowTrainSettings, initial_flow, train_flow
    from rgdiff.train.score import default_horizon

    lattice = theory.lattice
    scheme = make_scheme("carosso", M=1.0)
    fields = data["fields"]
    horizon = default_horizon(scheme, fields, lattice)
    several = len(settings.flow_objectives) > 1
    first = settings.flow_pilot_steps if several else settings.flow_train_steps

    def train_settings(objective, steps, done=0):
        # one exponential decay over all `flow_train_steps`, `done` of them already taken
        total, decay = settings.flow_train_steps, settings.flow_learning_rate_decay
        return FlowTrainSettings(steps=steps, batch=64, ode_steps=settings.flow_ode_steps, objective=objective,
                                 learning_rate=settings.flow_learning_rate * decay ** (done / total),
                                 transition_steps=total, decay_rate=decay, log_every=steps, dtype=settings.flow_dtype)

    start = initial_flow(lattice, scheme, fields, horizon, train_settings("reverse-kl", 1))
    pilot_theory, pilot_fields = theory, fields
    n = settings.flow_pilot_size
    if several and n is not None and n < lattice.size:
        small = Lattice(lattice.dim, n, lattice.spacing * n)
        pilot_theory = dataclasses.replace(theory, lattice=small)
        pilot_fields = fields[(...,) + (slice(0, n),) * lattice.dim]
        start = cast_model(ContinuousFlow(small, horizon, start.frequencies.shape[0], start.weights.shape[0],
                                          start.time_floor, start.field_scale), settings.flow_dtype)

    def train(flow, on, objective, steps, k, uv, done=0):
        clock = ChunkClock()
        clock("train", 0, steps)
        flow = train_flow(flow, scheme, on, train_settings(objective, steps, done), key=k, uv_start=uv, callback=clock)
        per_step, _ = clock.per_item_seconds("train")
        return flow, steps * float(np.median(per_step))

    def judge(flow, k) -> dict:
        # at the steps the flow would sample with: an unconverged log q biases the mean log weight
        steps, roundtrip, acceptance, log_w = sampling_steps(flow, theory, scheme, k)
        log_w = np.asarray(log_w, dtype=np.float64)
        return {"mean_log_weight": float(log_w.mean()),
                "mean_log_weight_error": float(log_w.std(ddof=1) / math.sqrt(log_w.size)),
                "importance_ess_per_sample": float(imh.importance_ess(jnp.asarray(log_w))), "judged_at_ode_steps": steps,
                "log_q_roundtrip_rms_by_steps": roundtrip, "expected_imh_acceptance_by_steps": acceptance}

    flows, candidates = {}, {}
    for j, objective in enumerate(settings.flow_objectives):
        flow, seconds = train(start, pilot_theory, objective, first, jax.random.fold_in(key, j), pilot_fields)
        flows[objective] = flow.on_lattice(lattice) if flow.lattice != lattice else flow
        candidates[objective] = {"steps": first, "train_seconds": seconds,
                                 **judge(flows[objective], jax.random.fold_in(key, 100 + j))}
    best = choose_objective(candidates)
    rest = settings.flow_train_steps - first
    flow = flows[best]
    if rest > 0:
        j = settings.flow_objectives.index(best)
        flow, seconds = train(flow, theory, best, rest, jax.random.fold_in(key, 50 + j), fields, first)
        c = candidates[best]
        pilot = {f"pilot_{name}": c[name] for name in ("mean_log_weight", "mean_log_weight_error",
                                                        "importance_ess_per_sample", "train_seconds",
                                                        "judged_at_ode_steps", "log_q_roundtrip_rms_by_steps",
                                                        "expected_imh_acceptance_by_steps")}
        c.update(steps=first + rest, train_seconds=c["train_seconds"] + seconds, **pilot,
                 **judge(flow, jax.random.fold_in(key, 150 + j)))
    # the best flow's last judgement was of the flow as trained to the end: its steps are the sampler's
    c = candidates[best]
    steps = c["judged_at_ode_steps"]
    return {"flow": flow, "scheme": scheme, "objective": best, "pilot_lattice_size": pilot_theory.lattice.size,
            "training_seconds": sum(c["train_seconds"] for c in candidates.values()), "candidates": candidates,
            "ode_steps": steps, "log_q_roundtrip_rms": c["log_q_roundtrip_rms_by_steps"][steps],
            "log_q_roundtrip_rms_by_steps": c["log_q_roundtrip_rms_by_steps"],
            "expected_imh_acceptance_by_steps": c["expected_imh_acceptance_by_steps"]}


def sampling_steps(flow, theory, scheme, key, ladder: tuple[int, ...] = SAMPLING_STEPS) -> tuple[int, dict, dict, jax.Array]:
    """The RK4 steps a CNF sampler samples with. A CNF sampler is exact only up to its error in
    log q, and neither the steps it trained with nor fewer need be enough: at `paper_broken`
    (full settings, stop 26) the round trip (`_proposal_check`) was 17 rms at 8 steps, 0.13 at
    16 and 0.004 at 32. Where the flow is smooth, fewer steps than it trained with are as good:
    at N = 20 on the benchmark line (trained with 8) the round trip was 0.10 at 4 steps and
    0.003 at 8, and the expected IMH acceptance 0.488 and 0.490 (stop 28).

    The steps climb `ladder` to the fewest whose round trip on `PILOT_PROPOSALS` proposals is
    within `LOG_Q_TOLERANCE` rms; of those and the next rung (the same prior draws), the sampler
    takes the cheaper per accepted proposal, steps / `imh.expected_acceptance`: a coarse map can
    be converged in log q and still a worse proposal. Returns (steps, {steps tried: round trip
    rms}, {steps tried: expected IMH acceptance}, the log weights of the proposals at those
    steps); the most steps tried if none passes (the run notes the sampler as NOT EXACT)."""
    roundtrip, acceptance, log_weights = {}, {}, {}

    def check(steps):
        error, log_weights[steps] = _proposal_check(flow, theory, scheme, key, PILOT_PROPOSALS, steps)
        roundtrip[steps] = float(np.sqrt(np.mean(np.square(np.asarray(error, dtype=np.float64)))))
        acceptance[steps] = float(imh.expected_acceptance(log_weights[steps]))
        return roundtrip[steps] <= LOG_Q_TOLERANCE

    rung = 0
    while not check(ladder[rung]) and rung + 1 < len(ladder):
        rung += 1
    steps = ladder[rung]
    if roundtrip[steps] <= LOG_Q_TOLERANCE and rung + 1 < len(ladder) and check(ladder[rung + 1]):
        finer = ladder[rung + 1]
        if finer / max(acceptance[finer], 1e-12) < steps / max(acceptance[steps], 1e-12):
            steps = finer
    return steps, roundtrip, acceptance, log_weights[steps]


@functools.partial(jax.jit, static_argnums=(1, 2, 4, 5))
def _proposal_check(flow, theory, scheme, key, n, steps):
    """For `n` proposals: the log q round trip, log q as the encode (field -> prior, what the
    flow-bridge computes after local moves) gives it minus log q as their decode gave it (both
    integrate the same ODE, so they differ by the solver's error: zero for a converged solver,
    and what an exact chain needs); and their log weights -S - log q (float64 from float32)."""
    from rgdiff.generate.transport import encode

    phi, log_q = _flow_proposals(flow, scheme, key, n, steps)
    roundtrip = encode(flow, scheme, phi, 0.0, steps=steps)[1] - log_q
    return roundtrip, _log_weights(theory, phi, log_q)


def _log_weights(theory, phi, log_q):
    """log w = -S - log q of float32 proposals, formed in float64."""
    return -theory.action(phi.astype(jnp.float64)) - log_q.astype(jnp.float64)


def weight_tail(flow, theory, scheme, key, steps: int, n: int = TAIL_PROPOSALS, batch: int = 1024) -> float:
    """The Pareto k-hat (`imh.pareto_k`) of the importance weights of `n` proposals of `flow` at
    `steps` RK4 steps, drawn `batch` at a time."""
    log_w = [_proposal_log_weights(flow, theory, scheme, jax.random.fold_in(key, i), batch, steps)
             for i in range(-(-n // batch))]
    return imh.pareto_k(np.concatenate([np.asarray(w) for w in log_w])[:n])


@functools.partial(jax.jit, static_argnums=(1, 2, 4, 5))
def _proposal_log_weights(flow, theory, scheme, key, n, steps):
    return _log_weights(theory, *_flow_proposals(flow, scheme, key, n, steps))


def choose_objective(candidates: dict, sigmas: float = PILOT_SIGMAS) -> str:
    """The objective whose pilot has the largest mean log weight; among those within `sigmas`
    combined standard errors of it (the pilot cannot tell them apart), the one cheapest per
    training step. `candidates`: {objective: {"mean_log_weight", "mean_log_weight_error",
    "train_seconds", "steps"}}."""
    top = max(candidates, key=lambda o: candidates[o]["mean_log_weight"])
    c = candidates[top]

    def tied(o):
        e = math.hypot(c["mean_log_weight_error"], candidates[o]["mean_log_weight_error"])
        return c["mean_log_weight"] - candidates[o]["mean_log_weight"] < sigmas * e

    return min((o for o in candidates if tied(o)), key=lambda o: candidates[o]["train_seconds"] / candidates[o]["steps"])


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _flow_proposals(flow, scheme, key, n, steps):
    from rgdiff.generate.transport import sample as flow_sample

    return flow_sample(flow, scheme, key, n, steps=steps, dtype=flow.weights.dtype)


def _flow(theory, data: dict, flows: dict, settings: SamplerBenchSettings, key) -> dict:
    """The better CNF (`_flows`) as an exact independence Metropolis sampler. Each chain starts at
    a draw of q, not of exp(-S): its first `bridge_warmup` steps (at most a quarter of the chain)
    are discarded, like the bridge's warm-up, and their proposals count as setup."""
    lattice = theory.lattice
    flow, scheme = flows["flow"], flows["scheme"]
    k_prop, k_acc = jax.random.split(key)
    n_chunk = max(2, settings.flow_samples // settings.chunks)

    def propose(key):
        phi, log_q = _flow_proposals(flow, scheme, key, n_chunk, flows["ode_steps"])
        return phi, log_q, theory.action(phi)

    gen, compile_s = compiled(propose, k_prop)
    secs, phis, log_qs, log_w = [], [], [], []
    for c in range(settings.chunks):
        t0 = time.perf_counter()
        phi, log_q, action = jax.block_until_ready(gen(jax.random.fold_in(k_prop, c)))
        secs.append((time.perf_counter() - t0) / n_chunk)
        phis.append(phi)
        log_qs.append(log_q)
        log_w.append(-action - log_q)
    chains = settings.flow_chains
    per_chain = sum(p.shape[0] for p in phis) // chains
    used = chains * per_chain
    phi = jnp.concatenate(phis)[:used].reshape(chains, per_chain, *lattice.shape).astype(jnp.float64)
    log_q = jnp.concatenate(log_qs)[:used].reshape(chains, per_chain).astype(jnp.float64)
    fields, accepted = _imh_chains(theory, jax.random.split(k_acc, chains), phi, log_q)
    burn = min(settings.bridge_warmup, per_chain // 4)
    per_sample = Figure.of(secs)
    parts = {"training_data": _data_seconds(data), "training": flows["training_seconds"],
             "warmup": burn * chains * per_sample.median}
    return {
        "fields": np.asarray(fields)[:, burn:],
        "warmup_sweeps": burn,
        "seconds_per_sample": per_sample,
        "setup_seconds": sum(parts.values()),
        "setup_parts": parts,
        "compile_seconds": compile_s,
        **_flow_record(flows),
        "objectives": flows["candidates"],
        "log_q_roundtrip_rms_by_steps": flows["log_q_roundtrip_rms_by_steps"],
        "imh_acceptance": float(np.mean(accepted)) if accepted.size else 0.0,
        "importance_ess_per_sample": float(imh.importance_ess(jnp.concatenate(log_w))),
    }


def _flow_bridge(theory, data: dict, flows: dict, settings: SamplerBenchSettings, key) -> dict:
    """The bridge with the better CNF as its proposal (`rgdiff.generate.transport.FlowProposal`)."""
    from rgdiff.generate.transport import FlowProposal

    proposal = FlowProposal(flows["flow"], flows["scheme"], steps=flows["ode_steps"],
                            dtype=flows["flow"].weights.dtype)
    out = _bridge_run(proposal, theory, data, settings,
                      {"training_data": _data_seconds(data), "training": flows["training_seconds"]}, key,
                      settings.flow_chains, settings.flow_bridge_samples)
    return {**out, **_flow_record(flows)}


def _json_number(x: float) -> float | None:
    """`x`, or None where it is not finite (JSON has no NaN or infinity)."""
    return x if math.isfinite(x) else None


def _flow_record(flows: dict) -> dict:
    """What both CNF samplers record of their flow (`_flows`): its objective, the lattice its
    objective was chosen on, the RK4 steps it samples with, its log q round trip there (which
    `_learned_runs` checks), the Pareto k-hat of its proposals' weights (`imh.pareto_k`, which
    `_learned_runs` checks too) and the expected IMH acceptance at each steps tried."""
    return {key: flows[key] for key in ("objective", "pilot_lattice_size", "ode_steps", "log_q_roundtrip_rms",
                                        "weight_pareto_k", "expected_imh_acceptance_by_steps", "training_ode_steps",
                                        "other_training") if key in flows}


@functools.partial(jax.jit, static_argnums=0)
def _imh_chains(theory, keys, proposals, proposals_log_q):
    """Independence Metropolis along each chain's share of proposals (`imh.chains_over`)."""
    return imh.chains_over(theory.logdensity_fn(), keys, proposals, proposals_log_q)


# the benchmark --------------------------------------------------------------------------------


def points(settings: SamplerBenchSettings) -> list[tuple[str, int | None, object]]:
    """(label, benchmark N or None, theory) of every point the run visits, named points first."""
    out = [(label, None, NAMED_POINTS[label]()) for label in settings.paper_points]
    return out + [(f"benchmark_N{n}", n, benchmark_theory(n)) for n in settings.sizes]


def _learned_runs(theory, runs: dict, settings: SamplerBenchSettings, key, notes: list, where: str) -> None:
    """Train the models on the FA-HMC run and add the learned samplers' runs to `runs`; a sampler
    that fails is noted, not fatal."""
    data = runs["fa-hmc"]
    trained = {}

    def score():
        if "score" not in trained:
            trained["score"] = _score_model(theory, data, settings, jax.random.fold_in(key, 1))
        return trained["score"]

    def flows():
        if "flows" not in trained:
            trained["flows"] = _flows(theory, data, settings, jax.random.fold_in(key, 2))
        return trained["flows"]

    learned = {
        "bridge": lambda k: _bridge(theory, data, score(), settings, k),
        "tempering": lambda k: _tempering(theory, data, score(), settings, k),
        "flow": lambda k: _flow(theory, data, flows(), settings, k),
        "flow-bridge": lambda k: _flow_bridge(theory, data, flows(), settings, k),
    }
    for j, (name, fn) in enumerate(learned.items()):
        if name not in settings.learned_samplers:
            continue
        t0 = time.perf_counter()
        try:
            runs[name] = fn(jax.random.fold_in(key, 10 + j))
        except (FloatingPointError, RgdiffError, NotImplementedError) as err:  # one failed sampler must not lose the run
            notes.append(f"{name} at {where} failed: {err}")
            continue
        runs[name]["wall_seconds"] = time.perf_counter() - t0
        error = runs[name].get("log_q_roundtrip_rms")
        if error is not None and not error <= LOG_Q_TOLERANCE:
            notes.append(f"{name} at {where}: NOT EXACT: at {runs[name]['ode_steps']} ODE steps (the most tried) encoding "
                         f"its proposals changes their log q by {error:.2g} rms (tolerance {LOG_Q_TOLERANCE}); its chain "
                         "targets exp(-S) only up to that error")
        k = runs[name].get("weight_pareto_k")
        if k is not None and k >= HEAVY_TAIL_K:
            notes.append(f"{name} at {where}: HEAVY-TAILED weights: Pareto k-hat {k:.2f} >= {HEAVY_TAIL_K} "
                         "(`imh.pareto_k`), so its IMH holding times have an infinite mean: its chains can stick for "
                         "long stretches, and its tau_int and ESS/s may scatter between runs beyond their error bars")


def tunnelling(fields: np.ndarray, lattice) -> dict:
    """Vacuum changes (`rgdiff.observables.estimators.vacuum_changes`) per 1000 sweeps, with a
    Poisson error, and <M> (exactly 0 by phi -> -phi symmetry) with an error (below) that stays
    honest when chains are stuck in one vacuum.
    <|M|> (the same in both vacua, so a check of each sampler's exactness where it does not
    tunnel) carries its Gamma-method error, chains as replicas: "mean_abs_M_error".

    <M>'s "error" is the larger of the between-chain error std(chain means) / sqrt(chains)
    ("error_between_chains") and the Gamma-method error ("error_gamma"): the first alone sees chains stuck in different vacua, but
    from 4 chains it is itself uncertain by about 40% (3 degrees of freedom); the second alone is
    blind to a vacuum no chain left."""
    from rgdiff.observables.estimators import vacuum_changes
    from rgdiff.observables.stats import tau_int

    m = magnetization(fields, lattice)
    chains, sweeps = m.shape
    changes = vacuum_changes(m)
    total = sum(changes)
    per = 1000.0 / (chains * sweeps)
    means = m.mean(axis=1)
    between = float(means.std(ddof=1) / math.sqrt(chains)) if chains > 1 else None
    gamma = _gamma_error(m, tau_int)
    known = [e for e in (between, gamma) if e is not None]
    return {
        "vacuum_changes_per_1000_sweeps": {"value": total * per, "error": math.sqrt(max(total, 1)) * per},
        "vacuum_changes_per_chain": changes,
        "mean_M": {"value": float(m.mean()), "error": max(known) if known else None,
                   "error_between_chains": between, "error_gamma": gamma},
        "mean_abs_M": float(np.abs(m).mean()),
        "mean_abs_M_error": _gamma_error(np.abs(m), tau_int),
        "chains": int(chains),
        "sweeps_per_chain": int(sweeps),
    }


def _gamma_error(series: np.ndarray, estimate) -> float | None:
    """The Gamma-method error of the mean of `series` (chains, samples); None where the chains are
    too short for it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = estimate(series)
    except ValueError:
        return None
    return est.error if est.error is not None and math.isfinite(est.error) else None


def run(settings: SamplerBenchSettings, callback=None, *, done: dict | None = None, on_point=None) -> dict:
    """Every point of `points(settings)`, in order.

    - `done`: {label: point record} of points an interrupted run with the same settings already
      finished (what `on_point` was given); they are taken as they are, not rerun. Each point's
      key depends on its place in the order only, so a resumed run draws what the whole run would.
    - `on_point(label, record)`: after each point, with the JSON-ready record {"row", "tunnelling"
      (null off the broken-phase points), "notes"}.
    """
    notes = []
    rows, tunnel = [], {}
    todo = points(settings)
    done = done or {}
    for i, (label, n, theory) in enumerate(todo):
        if label in done:
            record = done[label]
            rows.append(record["row"])
            if record.get("tunnelling") is not None:
                tunnel[label] = record["tunnelling"]
            notes.extend(record.get("notes", []))
            if callback:
                callback(NAME, i + 1, len(todo))
            continue
        key = jax.random.fold_in(jax.random.key(8), i if n is None else n)
        point_notes = []
        runs = {alg: _mcmc(theory, alg, settings, jax.random.fold_in(key, j)) for j, alg in enumerate(LOCAL)}
        if (n is not None and n in settings.learned_sizes) or label in settings.learned_points:
            _learned_runs(theory, runs, settings, key, point_notes, label)
        row = {"point": label, "N": n if n is not None else theory.lattice.size, "benchmark_line": n is not None,
               "theory": theory.describe(), "samplers": {}}
        if label in BROKEN_POINTS:
            tunnel[label] = {"N": theory.lattice.size, "theory": theory.describe(),
                             "samplers": {name: tunnelling(r["fields"], theory.lattice) for name, r in runs.items()}}
        for name, r in runs.items():
            eff = efficiency(r.pop("fields"), theory.lattice, r["seconds_per_sample"], r["setup_seconds"], settings.amortize_samples)
            r["seconds_per_sample"] = r["seconds_per_sample"].as_dict()
            row["samplers"][name] = {**r, "observables": eff}
            if not eff["abs_M"]["reliable"]:
                point_notes.append(f"{name} at {label}: UNRELIABLE: tau_int(|M|) {eff['abs_M']['tau_int']:.3g} is more than "
                                   f"1/{MIN_CHAIN_TAUS} of its chains' length; its estimates and ESS/s are not a reference")
        nuts = row["samplers"]["nuts"]
        for name in LEARNED:
            if name not in row["samplers"]:
                continue
            r = row["samplers"][name]
            r["break_even_effective_samples"] = {
                obs: break_even(r["setup_seconds"], r["seconds_per_sample"]["median"], r["observables"][obs]["tau_int"],
                                nuts["setup_seconds"], nuts["seconds_per_sample"]["median"], nuts["observables"][obs]["tau_int"])
                for obs in OBSERVABLES
            }
            r["break_even_samples"] = {  # raw samples of the learned sampler: 2 tau_int per effective one
                obs: None if e is None else 2.0 * r["observables"][obs]["tau_int"] * e
                for obs, e in r["break_even_effective_samples"].items()
            }
        rows.append(row)
        notes.extend(point_notes)
        if on_point is not None:
            on_point(label, {"row": row, "tunnelling": tunnel.get(label), "notes": point_notes})
        if callback:
            callback(NAME, i + 1, len(todo))
    exponents = {}
    line = [r for r in rows if r["benchmark_line"]]
    for name in (*LOCAL, *LEARNED):
        for obs in OBSERVABLES:
            pts = [(r["N"], r["samplers"][name]["observables"][obs]) for r in line if name in r["samplers"]]
            exponents[f"{name}_{obs}"] = dynamic_exponent([p[0] for p in pts], [p[1]["tau_int"] for p in pts],
                                                          [p[1]["tau_int_error"] for p in pts])
    return {"settings": dataclasses.asdict(settings), "rows": rows, "dynamic_exponents": exponents,
            "tunnelling": tunnel, "notes": notes}


def _ratio(a: dict, b: dict) -> dict:
    v = a["value"] / b["value"]
    rel = math.hypot(a["error"] / a["value"], b["error"] / b["value"])
    return {"value": v, "error": v * rel}


def _key(name: str) -> str:
    return name.replace("-", "_")


def _abs_m(row: dict, name: str, kind: str) -> dict:
    return row["samplers"][name]["observables"]["abs_M"][kind]


def ratios(result: dict) -> dict:
    """ESS/s ratios on |M| at the largest benchmark size where each sampler ran (vs NUTS, and for
    the best learned sampler vs FA-HMC too) and at each paper point, and z per sampler."""
    out = {}
    line = [r for r in result["rows"] if r.get("benchmark_line", True)]
    for name in (*LEARNED, "hmc", "fa-hmc", "fa-nuts"):
        rows = [r for r in line if name in r["samplers"]]
        for kind in ("ess_per_s_amortized", "ess_per_s"):
            key = f"{_key(name)}_vs_nuts_{kind}"
            out[key] = None if not rows else {**_ratio(_abs_m(rows[-1], name, kind), _abs_m(rows[-1], "nuts", kind)),
                                              "N": rows[-1]["N"]}
    # the best learned sampler (amortized ESS/s of |M|) at the largest size where any ran
    learned_rows = [r for r in line if any(n in r["samplers"] for n in LEARNED)]
    for kind in ("ess_per_s_amortized", "ess_per_s"):
        for base in ("nuts", "fa-hmc"):
            out[f"best_learned_vs_{_key(base)}_{kind}"] = None
    if learned_rows:
        r = learned_rows[-1]
        for kind in ("ess_per_s_amortized", "ess_per_s"):
            best = max((n for n in LEARNED if n in r["samplers"]), key=lambda n: _abs_m(r, n, kind)["value"])
            for base in ("nuts", "fa-hmc"):
                out[f"best_learned_vs_{_key(base)}_{kind}"] = {**_ratio(_abs_m(r, best, kind), _abs_m(r, base, kind)),
                                                               "N": r["N"], "sampler": best}
    for label in NAMED_POINTS:
        row = next((r for r in result["rows"] if r.get("point") == label), None)
        for name in ("hmc", "fa-hmc", "fa-nuts"):
            for kind in ("ess_per_s_amortized", "ess_per_s"):
                key = f"{_key(name)}_vs_nuts_{kind}_{label}"
                out[key] = None if row is None else {**_ratio(_abs_m(row, name, kind), _abs_m(row, "nuts", kind)),
                                                     "N": row["N"]}
    for name in (*LOCAL, *LEARNED):
        e = result["dynamic_exponents"].get(f"{name}_abs_M", {"z": None})
        out[f"z_{_key(name)}"] = None if e["z"] is None else {"value": e["z"], "error": e["error"], "sizes": e["sizes"]}
    return out


def table_rows(result: dict):
    from rgdiff.observables.stats import format_value_error

    header = ["point", "sampler", "tau |M|", "tau V M^2", "tau max|phi|", "ESS/s |M|", "ESS/s |M| amortized",
              "s/sample", "setup s", "compile s", "break-even ESS"]
    body = []
    for r in result["rows"]:
        for name, s in r["samplers"].items():
            o = s["observables"]
            be = s.get("break_even_effective_samples", {}).get("abs_M")
            body.append([
                r.get("point", str(r["N"])), name,
                format_value_error(o["abs_M"]["tau_int"], o["abs_M"]["tau_int_error"]),
                format_value_error(o["chi"]["tau_int"], o["chi"]["tau_int_error"]),
                format_value_error(o["max_abs_phi"]["tau_int"], o["max_abs_phi"]["tau_int_error"]),
                format_value_error(o["abs_M"]["ess_per_s"]["value"], o["abs_M"]["ess_per_s"]["error"]),
                format_value_error(o["abs_M"]["ess_per_s_amortized"]["value"], o["abs_M"]["ess_per_s_amortized"]["error"]),
                f"{s['seconds_per_sample']['median']:.2e}", f"{s['setup_seconds']:.1f}", f"{s['compile_seconds']:.1f}",
                "" if name in LOCAL else ("never" if be is None else f"{be:.3g}"),
            ])
    return header, body
