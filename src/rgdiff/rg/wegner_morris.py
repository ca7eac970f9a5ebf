"""General linear Wegner-Morris schemes [5.32]-[5.36], kernel by quadrature.

The lattice Wegner-Morris SDE [5.32], [5.33] is d phi = -B_t * dS_seed/dphi dt + noise with
covariance B_t. For a Gaussian seed S_seed = L^d sum_p 1/2 sigma_t(p) |phi~(p)|^2 (seed density
exp(-2 S_seed) [5.28]) and a cutoff function B_t(p) acting as a Fourier multiplier, each mode has
(conventions page) ::

    beta_t(p) = B_t(p) sigma_t(p),   gamma_t(p) = B_t(p).

Any pair of rates defines a scheme; two families are built in:

- from a cutoff profile K_t(p) (Polchinski type [5.39]-[5.41]): beta = -d/dt log K_t,
  gamma = -(d/dt K_t) / w, so the Gaussian theory with propagator K_0 / w flows to K_t / w [5.40];
- from a Gaussian seed (B_t, sigma_t) as above. Carosso-M is B = 2, sigma = w / 2 [5.37].

Rate functions are called as `fn(t, w, lattice)` with w = |phat|^2 + M^2 on the mode grid and `t`
an array that broadcasts against it; they must act elementwise (jnp arithmetic does).

A scheme can be saved with a model (and rebuilt by `rgdiff.rg.scheme_from_description`) when every
ingredient is describable: numbers, `PolchinskiProfile`, `LinearInW`, and the builders' rate
functions over them. A plain Python function is recorded by name only, and refused when saving.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from rgdiff.errors import InvalidSchemeError
from rgdiff.lattice.geometry import Lattice
from rgdiff.errors import require_finite
from rgdiff.rg.base import AbstractLinearScheme, describe_part, require_nonnegative
from rgdiff.rg.quadrature import DEFAULT_NODES, DEFAULT_PANELS
from rgdiff.rg.schemes import POLCHINSKI_PROFILES, polchinski_log_profile


def _evaluate(fn_or_constant, t, w, lattice):
    if callable(fn_or_constant):
        return fn_or_constant(t, w, lattice)
    return fn_or_constant * jnp.ones_like(t * w)


@dataclasses.dataclass(frozen=True)
class PolchinskiProfile:
    """The cutoff profile K_t(w) of `Polchinski` ("slow" or "exponential") as a describable
    function of (t, w, lattice), for `WegnerMorris.from_cutoff_profile`."""

    kind: str = "slow"

    def __post_init__(self):
        if self.kind not in POLCHINSKI_PROFILES:
            raise InvalidSchemeError(f"unknown Polchinski profile {self.kind!r}; choose one of {', '.join(POLCHINSKI_PROFILES)}")

    def __call__(self, t, w, lattice):
        return jnp.exp(polchinski_log_profile(self.kind, t, w, lattice))

    def describe(self) -> dict:
        return {"function": "polchinski-profile", "kind": self.kind}


@dataclasses.dataclass(frozen=True)
class LinearInW:
    """f_t(p) = constant + slope w, time-independent: e.g. the seed kernel w / 2 of Carosso [5.37]."""

    constant: float = 0.0
    slope: float = 1.0

    def __post_init__(self):
        for field in ("constant", "slope"):
            object.__setattr__(self, field, require_finite(f"LinearInW {field}", getattr(self, field), InvalidSchemeError))

    def __call__(self, t, w, lattice):
        return (self.constant + self.slope * w) * jnp.ones_like(t)

    def describe(self) -> dict:
        return {"function": "linear-in-w", "constant": self.constant, "slope": self.slope}


@dataclasses.dataclass(frozen=True)
class ProfileBeta:
    """beta_t = -d/dt log K_t for a cutoff profile K(t, w, lattice)."""

    profile: Callable

    def __call__(self, t, w, lattice):
        k, dk_dt = jax.jvp(lambda s: self.profile(s, w, lattice), (t,), (jnp.ones_like(t),))
        return -dk_dt / k

    def describe(self) -> dict:
        return {"function": "profile-beta", "profile": describe_part(self.profile)}


@dataclasses.dataclass(frozen=True)
class ProfileGamma:
    """gamma_t = -(d/dt K_t) / w, and at w = 0 its limit -d/dw d/dt K_t (K_t(w=0) constant in t)."""

    profile: Callable

    def _dk_dt(self, t, w, lattice):
        return jax.jvp(lambda s: self.profile(s, w, lattice), (t,), (jnp.ones_like(t),))[1]

    def __call__(self, t, w, lattice):
        safe_w = jnp.where(w == 0, 1.0, w)
        zero = jnp.zeros_like(w)
        limit = jax.jvp(lambda u: self._dk_dt(t, u, lattice), (zero,), (jnp.ones_like(w),))[1]
        return jnp.where(w == 0, -limit, -self._dk_dt(t, safe_w, lattice) / safe_w)

    def describe(self) -> dict:
        return {"function": "profile-gamma", "profile": describe_part(self.profile)}


@dataclasses.dataclass(frozen=True)
class SeedBeta:
    """beta_t = B_t sigma_t for a Gaussian seed (each a function (t, w, lattice) or a constant)."""

    cutoff_function: Callable | float
    seed_kernel: Callable | float

    def __call__(self, t, w, lattice):
        return _evaluate(self.cutoff_function, t, w, lattice) * _evaluate(self.seed_kernel, t, w, lattice)

    def describe(self) -> dict:
        return {"function": "seed-beta", "cutoff_function": describe_part(self.cutoff_function),
                "seed_kernel": describe_part(self.seed_kernel)}


@dataclasses.dataclass(frozen=True)
class SeedGamma:
    """gamma_t = B_t [5.33]."""

    cutoff_function: Callable | float

    def __call__(self, t, w, lattice):
        return _evaluate(self.cutoff_function, t, w, lattice)

    def describe(self) -> dict:
        return {"function": "seed-gamma", "cutoff_function": describe_part(self.cutoff_function)}


@dataclasses.dataclass(frozen=True)
class WegnerMorris(AbstractLinearScheme):
    """A linear scheme given by its rates; the kernel is computed by quadrature (jit-able).

    **Arguments:**

    - `beta_fn`, `gamma_fn`: `fn(t, w, lattice)`, elementwise, with w = |phat|^2 + M^2; gamma >= 0.
    - `M`: mass shift entering w and the effective cutoff [7.3].
    - `name`: a label, recorded in `describe()` as `"label"`.
    - `n_quad`, `n_panels`: Gauss-Legendre nodes per panel and graded panels
      (`rgdiff.rg.quadrature`). The defaults reproduce the closed forms to ~1e-12 relative.
    """

    beta_fn: Callable
    gamma_fn: Callable
    M: float = 0.0
    name: str = "wegner-morris"
    n_quad: int = DEFAULT_NODES
    n_panels: int = DEFAULT_PANELS

    def __post_init__(self):
        if not callable(self.beta_fn) or not callable(self.gamma_fn):
            raise InvalidSchemeError("WegnerMorris needs callables beta_fn(t, w, lattice) and gamma_fn(t, w, lattice)")
        object.__setattr__(self, "M", require_nonnegative("Wegner-Morris mass M", self.M))
        for field in ("n_quad", "n_panels"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidSchemeError(f"{field} must be a positive integer, got {value!r}")

    @classmethod
    def from_cutoff_profile(cls, profile: Callable, M: float = 0.0, name: str = "wegner-morris-profile", **quadrature):
        """Polchinski-type scheme from K(t, w, lattice) > 0: beta = -d/dt log K, gamma = -(dK/dt) / w."""
        return cls(ProfileBeta(profile), ProfileGamma(profile), M=M, name=name, **quadrature)

    @classmethod
    def from_gaussian_seed(
        cls, cutoff_function, seed_kernel, M: float = 0.0, name: str = "wegner-morris-seed", **quadrature
    ):
        """Scheme from a cutoff function B_t(p) and a Gaussian seed kernel sigma_t(p) (functions of
        (t, w, lattice) or constants): beta = B sigma, gamma = B; seed density exp(-2 S_seed) with
        S_seed = L^d sum_p 1/2 sigma |phi~|^2."""
        return cls(SeedBeta(cutoff_function, seed_kernel), SeedGamma(cutoff_function), M=M, name=name, **quadrature)

    @property
    def quadrature_nodes(self) -> int:
        return self.n_quad

    @property
    def quadrature_panels(self) -> int:
        return self.n_panels

    @property
    def mass(self) -> float:
        return self.M

    def describe(self) -> dict:
        """`name` is always "wegner-morris"; the user's `name` is the `label`."""
        return {
            "name": "wegner-morris",
            "label": self.name,
            "M": self.M,
            "beta": describe_part(self.beta_fn),
            "gamma": describe_part(self.gamma_fn),
            "n_quad": self.n_quad,
            "n_panels": self.n_panels,
        }

    def mode_rates(self, t, phat_sq, lattice: Lattice):
        w = phat_sq + self.M**2
        beta = self.beta_fn(t, w, lattice)
        gamma = self.gamma_fn(t, w, lattice)
        shape = jnp.broadcast_shapes(jnp.shape(t), jnp.shape(w))
        return (
            jnp.broadcast_to(beta, shape).astype(w.dtype),
            jnp.broadcast_to(gamma, shape).astype(w.dtype),
        )

    def no_prior_reason(self) -> str:
        return (
            f"the general Wegner-Morris scheme {self.name!r} has no closed-form stationary law here "
            "(for time-independent rates it would be G = gamma / (2 beta)); use Carosso with M > 0"
        )


jax.tree_util.register_static(WegnerMorris)
