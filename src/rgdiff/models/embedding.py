"""Time embedding shared by the score models.

RG time t in [0, T] is mapped to a warped coordinate (`rgdiff.rg.LogTime` with floor T / w)

    u(t) = log(1 + w t / T) / log(1 + w)        (u(t) = t / T when w = 0)

and then to the fixed feature vector

    h(t) = [1, exp(-(u - c_1)^2 / (2 b^2)), ..., exp(-(u - c_K)^2 / (2 b^2))],

K Gaussian radial basis functions with centres c_j evenly spaced on [0, 1] and width
b = 1 / (K - 1) (`gaussian_time_basis`, also the time bumps of `ContinuousFlow`). The warp w > 0 spaces the centres logarithmically in t between ~T/w and T: under
the Carosso and slow Polchinski schemes a mode of momentum p relaxes on the time scale
1/(|phat|^2 + M^2), so the couplings of the effective action move fastest at small t (the UV modes
decay by t ~ 1/Lambda_0^2). The score models default to w = T Lambda_0^2, which puts the first
centre near the lattice time 1/Lambda_0^2. Unlike sqrt(t), u(t) is smooth (analytic) at t = 0.

The embedding has no trainable parameters; models put a learned map on top of it.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from rgdiff.models._errors import InvalidModelError
from rgdiff.rg.time import LogTime


def gaussian_time_basis(u: jax.Array, num: int, dtype) -> jax.Array:
    """exp(-(u - c_j)^2 / (2 b^2)), j = 1..num: bumps centred on an even grid c_j of [0, 1], b = 1 / (num - 1).

    `num = 1` gives the constant (1,). The centres have `dtype`; the result has the promoted dtype
    of `u` and `dtype`, shape `(num,)` for a scalar `u`.
    """
    if num == 1:
        return jnp.ones((1,), dtype=jnp.result_type(u, dtype))
    centres = jnp.linspace(0.0, 1.0, num, dtype=dtype)
    width = 1.0 / (num - 1)
    return jnp.exp(-0.5 * ((u - centres) / width) ** 2)


class TimeEmbedding(eqx.Module):
    """Fixed smooth features of the RG time t (see the module docstring).

    **Arguments:**

    - `time_scale`: T > 0, the end of the time interval [0, T].
    - `num_basis`: K >= 2, the number of Gaussian basis functions.
    - `warp`: w >= 0, the logarithmic warp of the time axis (0: uniform in t).
    """

    time_scale: float = eqx.field(static=True)
    num_basis: int = eqx.field(static=True)
    warp: float = eqx.field(static=True)

    def __init__(self, time_scale: float, num_basis: int = 16, warp: float = 0.0):
        time_scale = float(time_scale)
        warp = float(warp)
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise InvalidModelError(f"time_scale T must be a finite number > 0, got {time_scale}")
        if isinstance(num_basis, bool) or int(num_basis) != num_basis or num_basis < 2:
            raise InvalidModelError(f"the number of time basis functions must be an integer >= 2, got {num_basis}")
        if not (math.isfinite(warp) and warp >= 0):
            raise InvalidModelError(f"the time warp must be a finite number >= 0, got {warp}")
        self.time_scale = time_scale
        self.num_basis = int(num_basis)
        self.warp = warp

    @property
    def size(self) -> int:
        """The number of features, K + 1."""
        return self.num_basis + 1

    @property
    def log_time(self) -> LogTime:
        """The warp as a `LogTime`: floor T / w (uniform for w = 0)."""
        return LogTime.from_warp(self.time_scale, self.warp)

    def warped_time(self, t: jax.Array) -> jax.Array:
        """u(t), with u(0) = 0 and u(T) = 1 (elementwise)."""
        return self.log_time.s_of_t(t)

    def __call__(self, t: jax.Array) -> jax.Array:
        """**Arguments:**

        - `t`: a scalar time (its dtype sets the output dtype; integers become floats).

        **Returns:**

        The features h(t), shape `(num_basis + 1,)`.
        """
        t = jnp.asarray(t)
        if not jnp.issubdtype(t.dtype, jnp.floating):
            t = t.astype(jnp.result_type(float))
        if t.shape != ():
            raise InvalidModelError(f"TimeEmbedding takes one scalar time, got shape {t.shape}; use jax.vmap")
        rbf = gaussian_time_basis(self.warped_time(t), self.num_basis, t.dtype)
        return jnp.concatenate([jnp.ones((1,), t.dtype), rbf])

    def describe(self) -> dict:
        return {"time_scale": self.time_scale, "num_basis": self.num_basis, "warp": self.warp}
