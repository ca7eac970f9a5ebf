"""RG time on a logarithmic scale: the one warp every time grid and time embedding uses.

The couplings run fastest near t = 0 (the UV modes relax on the time scale 1/Lambda_0^2), and
slowly near the horizon T, so time is resolved uniformly in

    s(t) = log(1 + t / t_0) / log(1 + T / t_0)  in [0, 1],   t(s) = t_0 (exp(s log(1 + T / t_0)) - 1),

with the floor t_0 the scale below which time is resolved uniformly (t_0 -> inf: s = t / T).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSchemeError


@dataclasses.dataclass(frozen=True)
class LogTime:
    """The warp s(t) between RG time t in [0, T] and s in [0, 1] (module docstring).

    - `horizon`: T > 0; `floor`: t_0 > 0, or `math.inf` for the uniform map s = t / T.

    Works on Python floats, NumPy and JAX arrays alike (`jnp` ops; NumPy in `grid`).
    """

    horizon: float
    floor: float = math.inf

    def __post_init__(self):
        if not (math.isfinite(self.horizon) and self.horizon > 0):
            raise InvalidSchemeError(f"the RG-time horizon must be a finite number > 0, got {self.horizon}")
        if not (self.floor > 0) or math.isnan(self.floor):
            raise InvalidSchemeError(f"the log-time floor must be > 0 (or inf), got {self.floor}")

    @classmethod
    def from_warp(cls, horizon: float, warp: float) -> "LogTime":
        """The map with s = log(1 + w t / T) / log(1 + w): floor t_0 = T / w (w = 0: uniform)."""
        return cls(horizon, horizon / warp if warp > 0 else math.inf)

    @property
    def uniform(self) -> bool:
        return not math.isfinite(self.floor)

    @property
    def log_span(self) -> float:
        """log(1 + T / t_0) (1 for the uniform map, where s = t / T)."""
        return 1.0 if self.uniform else math.log1p(self.horizon / self.floor)

    def s_of_t(self, t):
        t = jnp.asarray(t)
        if self.uniform:
            return t / self.horizon
        return jnp.log1p(t / self.floor) / self.log_span

    def t_of_s(self, s):
        s = jnp.asarray(s)
        if self.uniform:
            return s * self.horizon
        return self.floor * jnp.expm1(s * self.log_span)

    def grid(self, t_lo: float, t_hi: float, steps: int) -> np.ndarray:
        """`steps + 1` increasing float64 times from `t_lo` to `t_hi`, uniform in s, exact endpoints."""
        if self.uniform:
            ts = np.linspace(t_lo, t_hi, steps + 1)
        else:
            u = np.linspace(math.log1p(t_lo / self.floor), math.log1p(t_hi / self.floor), steps + 1)
            ts = self.floor * np.expm1(u)
        ts[0], ts[-1] = t_lo, t_hi
        return ts
