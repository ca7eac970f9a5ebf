"""The one interface of a generative model with an exact density, as exact samplers use it.

A proposal q draws configurations with their exact log q (for an independence-Metropolis step,
paper section 5.2 and [5.3]) and evaluates log q of given configurations (to re-weight a chain
state that a local move changed). Implementations:

- `rgdiff.generate.diffusion.ODEProposal` (`ode_proposal(model, scheme, ...)`): a score model
  through the probability-flow ODE [6.14];
- `rgdiff.generate.transport.FlowProposal`: a continuous normalizing flow in RG time [5.8].

Both are Equinox modules, so they pass through `jax.jit` / `eqx.filter_jit` as arguments.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax


class AbstractProposal(eqx.Module):
    """An exact generative density q on one lattice.

    **Attributes** (every implementation has them; not declared here, since a declared field
    would take its dataclass position before the subclasses' own): `dtype`, the floating-point
    type of its fields and ODE solves (a sampler may run its chains in another and convert at
    the boundary).

    **Methods:**

    - `sample(key, n) -> (fields, log_q)`: `n` fresh draws `(n, *lattice)` and log q of each `(n,)`;
    - `log_prob(fields) -> log_q`: log q of fields `(n, *lattice)`, shape `(n,)`.
    """

    @abc.abstractmethod
    def sample(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    @abc.abstractmethod
    def log_prob(self, fields: jax.Array) -> jax.Array:
        raise NotImplementedError
