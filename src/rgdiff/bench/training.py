"""Benchmark (training): gradient steps/s and samples/s of the score models and the flow, and
their peak memory against lattice volume.

The timed step is the one `rgdiff.train.score.train` runs (same loss, `objectives.training_loss`
with the anchor for `AbstractExactScoreModel`s, and the same Adam with the parameter average),
compiled ahead of time so the compile seconds are separate; steps/s is the median over repeated
steps. For the CNF (if available) the step is one reverse-KL [5.5] gradient step through
`ode_steps` RK4 steps with the flow's Adam (`FlowTrainSettings`).

Memory: XLA's own accounting of the compiled step (`Compiled.memory_analysis()`: arguments +
outputs + temporaries - aliased), at N = 16, 32, 64 by default. A model with a V x V Jacobian
would grow as V^2; the fitted exponent k of memory ~ V^k (least squares in log-log, with its
standard error) shows linear growth (k ~ 1).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.models import make_model
from rgdiff.models.base import AbstractExactScoreModel
from rgdiff.rg import make_scheme
from rgdiff.theory.phi4 import Phi4
from rgdiff.train.cnf import FlowTrainSettings
from rgdiff.models.base import cast_model
from rgdiff.train.loop import with_parameter_average
from rgdiff.train.score import TrainSettings
from rgdiff.bench._cnf import flow_api
from rgdiff.bench._timing import Figure, compiled, seconds_per_call

NAME = "training"
LAM = 6 * 4.807  # the N = 20 benchmark-line coupling, used at every N (cost does not depend on it)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    models: tuple[str, ...] = ("eft-score", "score", "cnf")
    sizes: tuple[int, ...] = (8, 20, 32)
    memory_sizes: tuple[int, ...] = (16, 32, 64)
    batch: int = 64
    dtype: str = "float32"
    repeats: int = 7
    cnf_ode_steps: int = 16


QUICK = TrainingSettings(sizes=(8, 32), repeats=5, cnf_ode_steps=8)
TINY = TrainingSettings(models=("eft-score",), sizes=(4,), memory_sizes=(4, 6), batch=4, repeats=2)


def _theory(n: int) -> Phi4:
    return Phi4(Lattice.lattice_units(2, n), -4.0, LAM)


def _score_step(name: str, n: int, settings: TrainingSettings):
    """(jittable step(params, opt_state, batch, key), args) for a score model."""
    from rgdiff.objectives.score_matching import training_loss

    theory = _theory(n)
    lattice = theory.lattice
    scheme = make_scheme("carosso", M=1.0)
    dtype = jnp.dtype(settings.dtype)
    model = cast_model(make_model(name, theory, time_scale=1.0, key=jax.random.key(0)), dtype)
    train_settings = TrainSettings(batch=settings.batch, dtype=settings.dtype, horizon=1.0)
    opt = with_parameter_average(train_settings.optimizer(), train_settings.ema)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    horizon, t_min = train_settings.horizon, train_settings.t_min * train_settings.horizon
    anchor = train_settings.anchor_weight if isinstance(model, AbstractExactScoreModel) else 0.0

    def loss(p, batch, key):
        return training_loss(eqx.combine(p, static), scheme, lattice, batch, key, horizon, t_min, anchor)

    def step(p, opt_state, batch, key):
        value, grads = jax.value_and_grad(loss)(p, batch, key)
        updates, opt_state = opt.update(grads, opt_state, p)
        return eqx.apply_updates(p, updates), opt_state, value

    batch = jax.random.normal(jax.random.key(1), (settings.batch, n, n), dtype)
    return step, (params, opt.init(params), batch, jax.random.key(2))


def _cnf_step(n: int, settings: TrainingSettings, api):
    theory = _theory(n)
    scheme = make_scheme("carosso", M=1.0)
    dtype = jnp.dtype(settings.dtype)
    flow = cast_model(api["ContinuousFlow"](theory.lattice, 1.0, key=jax.random.key(0)), dtype)
    opt = FlowTrainSettings().optimizer()
    params, static = eqx.partition(flow, eqx.is_inexact_array)

    def loss(p, key):
        value, _ = api["reverse_kl_loss"](eqx.combine(p, static), scheme, theory, key, settings.batch, settings.cnf_ode_steps)
        return value

    def step(p, opt_state, key):
        value, grads = jax.value_and_grad(loss)(p, key)
        updates, opt_state = opt.update(grads, opt_state, p)
        return eqx.apply_updates(p, updates), opt_state, value

    return step, (params, opt.init(params), jax.random.key(2))


def _memory(exe) -> dict | None:
    try:
        m = exe.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if m is None:
        return None
    parts = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
    }
    parts["peak_bytes"] = parts["argument_bytes"] + parts["output_bytes"] + parts["temp_bytes"] - parts["alias_bytes"]
    return parts


def power_law_exponent(volumes, values) -> dict:
    """k and its standard error in values ~ volume^k (least squares in log-log)."""
    x, y = np.log(np.asarray(volumes, float)), np.log(np.asarray(values, float))
    if x.size < 2:
        return {"exponent": None, "error": None}
    a = np.vstack([x, np.ones_like(x)]).T
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    err = None
    if x.size > 2:
        resid = y - a @ coef
        s2 = float(resid @ resid) / (x.size - 2)
        err = math.sqrt(s2 / float(np.sum((x - x.mean()) ** 2)))
    return {"exponent": float(coef[0]), "error": err}


def run(settings: TrainingSettings, callback=None) -> dict:
    api, note = flow_api() if "cnf" in settings.models else (None, None)
    models = [m for m in settings.models if m != "cnf" or api is not None]
    total = len(models) * len(set(settings.sizes) | set(settings.memory_sizes))
    done = 0
    rows, memory = [], []

    def build(name, n):
        if name == "cnf":
            return _cnf_step(n, settings, api)
        return _score_step(name, n, settings)

    for name in models:
        mem_rows = []
        # one compilation per size serves both the timing (sizes) and the memory fit (memory_sizes)
        for n in sorted(set(settings.sizes) | set(settings.memory_sizes)):
            step, args = build(name, n)
            exe, compile_s = compiled(step, *args)
            if n in settings.sizes:
                secs = seconds_per_call(exe, *args, repeats=settings.repeats)
                rows.append({
                    "model": name, "N": n, "batch": settings.batch, "dtype": settings.dtype,
                    "steps_per_s": Figure.of([1.0 / s for s in secs]).as_dict(),
                    "samples_per_s": Figure.of([settings.batch / s for s in secs]).as_dict(),
                    "compile_seconds": compile_s,
                    "memory": _memory(exe),
                })
            if n in settings.memory_sizes:
                mem_rows.append({"N": n, "volume": n * n, "compile_seconds": compile_s, "memory": _memory(exe)})
            done += 1
            if callback:
                callback(NAME, done, total)
        ok = [r for r in mem_rows if r["memory"]]
        fit = {
            key: power_law_exponent([r["volume"] for r in ok], [max(r["memory"][key], 1) for r in ok])
            for key in ("peak_bytes", "temp_bytes")
        } if ok else None
        memory.append({"model": name, "batch": settings.batch, "rows": mem_rows, "fit": fit})
    return {"settings": dataclasses.asdict(settings), "rows": rows, "memory": memory, "notes": [note] if note else []}


def ratios(result: dict) -> dict:
    out = {}
    for m in result["memory"]:
        if m["fit"]:
            out[f"memory_exponent_{m['model'].replace('-', '_')}"] = m["fit"]["peak_bytes"]
    return out


def table_rows(result: dict):
    from rgdiff.bench._timing import format_figure

    header = ["model", "N", "batch", "steps/s", "samples/s", "compile s", "peak MiB"]
    body = []
    for r in result["rows"]:
        mem = r["memory"]["peak_bytes"] / 2**20 if r["memory"] else None
        body.append([
            r["model"], str(r["N"]), str(r["batch"]),
            format_figure(r["steps_per_s"]["median"], r["steps_per_s"]["spread"]),
            format_figure(r["samples_per_s"]["median"], r["samples_per_s"]["spread"]),
            f"{r['compile_seconds']:.1f}", "n/a" if mem is None else f"{mem:.1f}",
        ])
    for m in result["memory"]:
        sizes = ", ".join(f"N={r['N']}: {r['memory']['peak_bytes'] / 2**20:.1f} MiB" for r in m["rows"] if r["memory"])
        fit = m["fit"]["peak_bytes"] if m["fit"] else None
        k = "n/a" if not fit or fit["exponent"] is None else format_figure(fit["exponent"], fit["error"])
        body.append([m["model"], "memory", str(m["batch"]), sizes, f"peak ~ V^k, k = {k}", "", ""])
    return header, body
