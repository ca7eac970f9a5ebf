"""The interface every score model of rgdiff implements.

A score model approximates grad_phi log p_t(phi) of the RG-flowed theory p_t (paper [5.23]). Like
Equinox layers it acts on ONE configuration: `model(phi, t)` with `phi` of shape
`lattice.shape` and a scalar RG time `t`; use `jax.vmap` for batches (batch axes stay explicit,
so data parallelism is a sharding of that axis).

Models whose divergence div_phi s_theta(phi, t) = sum_n d s(n) / d phi(n) is exact and cheap
(O(V x features)) derive from `AbstractExactScoreModel`; only those give exact likelihoods through
the probability-flow ODE [6.14], and only those may drive the bridge sampler's Metropolis step.

Continuous normalizing flows in RG time [5.8] are not score models: they derive from
`AbstractVelocityField` (d phi / dt = v_theta(phi, t), with an exact divergence) and are
integrated by `rgdiff.generate.transport`.

Dispatch is by these bases (`isinstance`), never by flags looked up with `getattr`.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from rgdiff.lattice.geometry import Lattice


def cast_model(tree, dtype):
    """`tree` (a score model, a flow, any PyTree) with every floating-point array cast to `dtype`."""
    dtype = jnp.dtype(dtype)
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree)


class AbstractScoreModel(eqx.Module):
    """s_theta(phi, t) ~ grad log p_t(phi), for one configuration.

    **Attributes:**

    - `lattice`: the `Lattice` (a static field in concrete classes).
    - `has_exact_divergence`: class-level flag, see module docstring.

    **Methods to implement:**

    - `__call__(phi, t) -> Array` of shape `lattice.shape` (same dtype as `phi`).
    - `divergence(phi, t) -> scalar`: the exact divergence (raise `NotImplementedError` where
      `has_exact_divergence` is False).
    - `describe() -> dict`: JSON-serializable hyperparameters sufficient to rebuild the model's
      skeleton (`rgdiff.models.build_model(describe(), lattice, key=...)` then loads weights).
    """

    lattice: eqx.AbstractVar[Lattice]
    has_exact_divergence: ClassVar[bool] = False

    def __call__(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        raise NotImplementedError

    def divergence(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        raise NotImplementedError(
            f"{type(self).__name__} has no exact divergence; its likelihood is unavailable"
        )

    def score_and_divergence(self, phi: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(model(phi, t), model.divergence(phi, t))`; models override it to share work."""
        return self(phi, t), self.divergence(phi, t)

    def describe(self) -> dict:
        raise NotImplementedError


class AbstractExactScoreModel(AbstractScoreModel):
    """A score model whose `divergence` is exact (and cheap): exact likelihoods via [6.14]."""

    has_exact_divergence: ClassVar[bool] = True

    def divergence(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        raise NotImplementedError


class AbstractVelocityField(eqx.Module):
    """v_theta(phi, t) of a continuous normalizing flow in RG time, for one configuration.

    **Attributes:** `lattice`; `horizon` (T, where the flow starts from the scheme's stationary law).

    **Methods to implement:** `__call__(phi, t)` (shape `lattice.shape`), `divergence(phi, t)`
    (exact, scalar), `describe()` (JSON-serializable hyperparameters).
    """

    lattice: eqx.AbstractVar[Lattice]
    horizon: eqx.AbstractVar[float]
    has_exact_divergence: ClassVar[bool] = True

    def __call__(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        raise NotImplementedError

    def divergence(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError
