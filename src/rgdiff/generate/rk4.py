"""The classical fixed-step Runge-Kutta method (RK4) as one `lax.scan`, for any pytree state.

Used where the step count is fixed and gradients flow through the solver (the CNF's log-time ODE,
`rgdiff.generate.transport`; the quantum flow ansatz, `rgdiff.quantum.ansatz`). diffrax 0.7.2
has no classical RK4 (its fixed-step explicit methods are Euler, Heun, Midpoint, Ralston and the
embedded pairs); a plain scan also keeps the compiled graph and the backward pass minimal.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _axpy(y, a, k):
    return jax.tree.map(lambda u, w: u + a * w, y, k)


def rk4(field: Callable, y0, t0, t1, steps: int, *, observe: Callable | None = None):
    """Integrate dy/dt = `field(y, t)` from `t0` to `t1` (either direction) in `steps` equal RK4 steps.

    `y0` is any pytree of arrays; `field` returns one of the same structure.
    **Returns:** `(y1, path)`: the state at `t1`, and `observe(y)` after each step stacked on a
    leading axis of length `steps` (None without `observe`).
    """
    h = (t1 - t0) / steps

    def step(y, i):
        t = t0 + i * h
        k1 = field(y, t)
        k2 = field(_axpy(y, 0.5 * h, k1), t + 0.5 * h)
        k3 = field(_axpy(y, 0.5 * h, k2), t + 0.5 * h)
        k4 = field(_axpy(y, h, k3), t + h)
        y = jax.tree.map(lambda u, a, b, c, d: u + h / 6.0 * (a + 2 * b + 2 * c + d), y, k1, k2, k3, k4)
        return y, (None if observe is None else observe(y))

    return jax.lax.scan(step, y0, jnp.arange(steps, dtype=jnp.result_type(h)))
