"""Timing discipline shared by every benchmark: compile once, then time repeats; report medians.

A `Figure` is the median of repeated measurements with its spread (half the min-max range),
so every number printed by `rgdiff bench` carries an error bar. Compilation is measured
separately: `compiled(fn, *args)` lowers and compiles `fn` ahead of time and returns the
executable plus the compile seconds, so the timed calls never include tracing or XLA work.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from typing import Callable, Sequence

import jax
import numpy as np

from rgdiff.io.atomic import package_versions


@dataclasses.dataclass(frozen=True)
class Figure:
    """The median of `repeats` measurements and its spread (half the min-max range)."""

    median: float
    spread: float
    repeats: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Figure":
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
        if v.size == 0:
            return cls(math.nan, math.nan, 0)
        return cls(float(np.median(v)), float(0.5 * (v.max() - v.min())), int(v.size))

    def as_dict(self) -> dict:
        return {"median": _finite(self.median), "spread": _finite(self.spread), "repeats": self.repeats}

    def __str__(self) -> str:
        return format_figure(self.median, self.spread)


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def format_figure(value, spread) -> str:
    """`1.23e+04 ± 5.6e+02`-style, or 'n/a' for a missing value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if spread is None or not math.isfinite(spread):
        return f"{value:.3g}"
    return f"{value:.3g} ± {spread:.2g}"


def ratio_of(num: Sequence[float], den: Sequence[float]) -> Figure:
    """Per-repeat ratios num[i] / den[i] of interleaved measurements, summarized as a `Figure`."""
    return Figure.of([a / b for a, b in zip(num, den) if b])


def compiled(fn: Callable, *args):
    """(executable, compile seconds) of `jax.jit(fn)` at these arguments (ahead of time)."""
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    t0 = time.perf_counter()
    exe = jitted.lower(*args).compile()
    return exe, time.perf_counter() - t0


def seconds_per_call(exe: Callable, *args, repeats: int = 5, inner: int = 1) -> list[float]:
    """Wall seconds of `inner` back-to-back calls of `exe(*args)`, per call, for each repeat."""
    jax.block_until_ready(exe(*args))  # warm caches and allocators
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            res = exe(*args)
        jax.block_until_ready(res)
        out.append((time.perf_counter() - t0) / inner)
    return out


def seconds_per_call_over(fn: Callable, *args, min_seconds: float) -> float:
    """Seconds per call of `fn(*args)`, from back-to-back calls lasting at least `min_seconds`
    (at least one): a call of a few milliseconds is as short as the scheduler's jitter."""
    calls, t0 = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn(*args))
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / calls


def machine() -> dict:
    """Where the numbers were measured: CPU/GPU, cores, jax backend and devices, package versions."""
    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in devices],
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "versions": package_versions(),
    }
