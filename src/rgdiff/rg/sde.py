"""Position-space simulation of RG SDEs with diffrax [5.9], [5.20], [5.32], [5.33].

For a linear scheme with per-mode rates (beta_t, gamma_t) the position-space SDE is ::

    d phi = F^-1[ -beta_t(p) F phi ] dt + F^-1[ sqrt(gamma_t(p)) F sqrt(eps^-d) dW ],

with W a standard Wiener process per site. The noise of one mode then has continuum-normalized
variance rate L^d <|noise~(p)|^2> / dt = gamma_t(p): for Carosso (gamma = 2) it is the white noise
sqrt(2 eps^-d) dW_n of [5.20].

A nonlinear seed action [text after 5.56] enters through the Wegner-Morris drift [5.32]: with the
cutoff function B_t(p) = gamma_t(p) (the noise covariance [5.33]) ::

    d phi = -F^-1[ B_t(p) F( eps^-d dS_seed/dphi ) ] dt + (noise as above),

whose stationary law for a time-independent B and seed is exp(-2 S_seed) [5.28]. For the Gaussian
seed eps^-d dS_seed/dphi = F^-1[(beta / gamma) F phi] this is the linear scheme again.

The SDE is solved with `diffrax.diffeqsolve` on
`MultiTerm(ODETerm(drift), ControlTerm(diffusion, brownian))`; the diffusion is a lineax
`FunctionLinearOperator` (the colouring Fourier multiplier).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax

from rgdiff.errors import InvalidSchemeError
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg.base import AbstractLinearScheme, check_times, require_positive

BROWNIAN_PATHS = ("virtual", "unsafe")


@dataclasses.dataclass(frozen=True)
class SeedForce:
    """eps^-d dS_seed/dphi(n) for a seed action `seed_action(t, phi)` of one configuration.

    Hashable (by the seed function and lattice), so jitted simulations are reused across calls.
    """

    seed_action: Callable
    lattice: Lattice

    def __call__(self, t, phi):
        grad = jax.grad(self.seed_action, argnums=1)(t, phi)
        return grad / self.lattice.spacing**self.lattice.dim


def drift_function(scheme: AbstractLinearScheme, lattice: Lattice, seed_force: Callable | None = None):
    """The drift f(t, phi) of the position-space SDE (one configuration)."""

    def drift(t, phi, args):
        beta, gamma = scheme.rates(t, lattice, phi.dtype)
        if seed_force is None:
            return lattice.fourier_multiply(phi, -beta)
        return lattice.fourier_multiply(seed_force(t, phi), -gamma)

    return drift


def diffusion_function(scheme: AbstractLinearScheme, lattice: Lattice):
    """The diffusion g(t, phi) as a linear operator on the per-site Wiener increment dW."""
    white = 1.0 / math.sqrt(lattice.spacing**lattice.dim)

    def diffusion(t, phi, args):
        _, gamma = scheme.rates(t, lattice, phi.dtype)
        amplitude = white * jnp.sqrt(gamma)
        return lineax.FunctionLinearOperator(
            lambda dw: lattice.fourier_multiply(dw, amplitude),
            jax.ShapeDtypeStruct(lattice.shape, phi.dtype),
        )

    return diffusion


def sde_terms(
    scheme: AbstractLinearScheme,
    lattice: Lattice,
    key,
    t0: float,
    t1: float,
    dt: float,
    dtype=jnp.float64,
    seed_force: Callable | None = None,
    brownian: str = "virtual",
) -> diffrax.MultiTerm:
    """`MultiTerm(ODETerm(drift), ControlTerm(diffusion, brownian path))` for one configuration."""
    shape = jax.ShapeDtypeStruct(lattice.shape, dtype)
    if brownian == "virtual":
        path = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 4, shape=shape, key=key)
    elif brownian == "unsafe":
        path = diffrax.UnsafeBrownianPath(shape=shape, key=key)
    else:
        raise InvalidSchemeError(f"unknown Brownian path {brownian!r}; choose one of {', '.join(BROWNIAN_PATHS)}")
    return diffrax.MultiTerm(
        diffrax.ODETerm(drift_function(scheme, lattice, seed_force)),
        diffrax.ControlTerm(diffusion_function(scheme, lattice), path),
    )


@eqx.filter_jit
def _solve_batch(scheme, lattice, keys, phi0, t0, t1, dt, solver, seed_force, brownian, max_steps):
    def one(key, y0):
        terms = sde_terms(scheme, lattice, key, t0, t1, dt, y0.dtype, seed_force, brownian)
        solution = diffrax.diffeqsolve(
            terms,
            solver,
            t0,
            t1,
            dt,
            y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=max_steps,
            # UnsafeBrownianPath cannot be checkpointed; it is only for forward simulation anyway
            adjoint=diffrax.ForwardMode() if brownian == "unsafe" else diffrax.RecursiveCheckpointAdjoint(),
        )
        return solution.ys[0]

    return jax.vmap(one)(keys, phi0)


def simulate_sde(
    scheme: AbstractLinearScheme,
    key,
    phi0,
    t1: float,
    lattice: Lattice,
    dt: float,
    *,
    t0: float = 0.0,
    solver: diffrax.AbstractSolver | None = None,
    seed_force: Callable | None = None,
    brownian: str = "virtual",
) -> jnp.ndarray:
    """Integrate the position-space RG SDE from `t0` to `t1` with fixed steps `dt`.

    **Arguments:**

    - `scheme`: a linear scheme (its rates give the drift and the noise colouring).
    - `key`: a JAX PRNG key; each configuration gets its own Brownian path.
    - `phi0`: real fields `(*batch, *lattice.shape)`.
    - `t1`, `t0`: end and start times (python floats, 0 <= t0 <= t1).
    - `lattice`: the lattice.
    - `dt`: the step size.
    - `solver`: a diffrax SDE solver (default `diffrax.Euler()`, i.e. Euler-Maruyama).
    - `seed_force`: optional `(t, phi) -> eps^-d dS_seed/dphi` (e.g. `SeedForce`); replaces the
      linear drift by -F^-1[gamma_t F seed_force], the Wegner-Morris drift with B_t = gamma_t.
    - `brownian`: `"virtual"` (`VirtualBrownianTree`, tolerance dt/4) or `"unsafe"`
      (`UnsafeBrownianPath`: faster, valid for fixed steps without backpropagation).

    **Returns:** the fields at `t1`, same shape and dtype as `phi0`.
    """
    if not isinstance(scheme, AbstractLinearScheme):
        raise InvalidSchemeError(f"simulate_sde needs a linear RG scheme (its rates), got {scheme!r}")
    check_times(t1, t0)
    t0, t1 = float(t0), float(t1)
    dt = require_positive("the step size dt", dt)
    if brownian not in BROWNIAN_PATHS:
        raise InvalidSchemeError(f"unknown Brownian path {brownian!r}; choose one of {', '.join(BROWNIAN_PATHS)}")
    lattice.check_field(phi0)
    phi0 = jnp.asarray(phi0)
    if t1 == t0:
        return phi0
    solver = diffrax.Euler() if solver is None else solver
    batch = phi0.shape[: phi0.ndim - lattice.dim]
    flat = phi0.reshape((-1,) + lattice.shape)
    keys = jax.random.split(key, flat.shape[0])
    max_steps = int(math.ceil((t1 - t0) / dt * (1 + 1e-9))) + 1
    out = _solve_batch(scheme, lattice, keys, flat, t0, t1, dt, solver, seed_force, brownian, max_steps)
    return out.reshape(batch + lattice.shape)
