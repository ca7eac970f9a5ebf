"""Lattice phi^4 theory (paper [4.6], [7.2]) and converters from other conventions.

The action, in our convention (conventions page), is::

    S[phi] = eps^d sum_n [ 1/2 sum_i (phi(n+e_i) - phi(n))^2 / eps^2
                           + 1/2 m2 phi(n)^2 + lam/4! phi(n)^4 ]

or, in momentum space [7.2], S = L^d sum_p 1/2 (|phat|^2 + m2) |phi~(p)|^2 + quartic.

Other conventions map onto ours (lattice units, eps = 1):

- Albergo et al. / Gerdes et al.: S_A = sum_x [ sum_mu (phi_A(x+mu) - phi_A(x))^2
  + m2 phi_A^2 + lam_A phi_A^4 ];  phi = sqrt(2) phi_A, m2 the same, lam = 6 lam_A.
- hopping form: S_h = sum_x [ -2 kappa sum_mu phi_h(x) phi_h(x+mu) + phi_h^2
  + lambda_h (phi_h^2 - 1)^2 ];  phi = sqrt(2 kappa) phi_h, m2 = (1 - 2 lambda_h)/kappa - 2d,
  lam = 6 lambda_h / kappa^2.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from rgdiff.errors import InvalidTheoryError, require_finite
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.gaussian import free_field_spectrum

UNITS = ("physical", "lattice", "albergo", "hopping")

# Standard benchmark line (Albergo et al., Gerdes et al.): lattice units, m2 = -4, lam = 6 lam_A(N).
BENCHMARK_LAM_A = {8: 6.008, 12: 5.276, 20: 4.807, 32: 4.572, 64: 4.398}


@dataclasses.dataclass(frozen=True)
class Phi4:
    """Lattice phi^4 theory with bare mass squared `m2` and quartic coupling `lam` (our convention).

    Hashable, so it can be a static argument of `jax.jit`.
    """

    lattice: Lattice
    m2: float
    lam: float

    def __post_init__(self):
        m2 = require_finite("m2", self.m2, InvalidTheoryError)
        lam = require_finite("lam", self.lam, InvalidTheoryError)
        if lam < 0:
            raise InvalidTheoryError(f"lam = {lam} < 0: the action is unbounded below; use lam >= 0")
        if lam == 0 and m2 <= 0:
            raise InvalidTheoryError(
                f"lam = 0 with m2 = {m2} <= 0 is not normalizable; use m2 > 0 or lam > 0"
            )
        object.__setattr__(self, "m2", m2)
        object.__setattr__(self, "lam", lam)

    @property
    def is_free(self) -> bool:
        return self.lam == 0.0

    def describe(self) -> dict:
        return {"theory": "phi4", **self.lattice.describe(), "m2": self.m2, "lam": self.lam}

    # action -----------------------------------------------------------------------------
    def potential_density(self, phi: jnp.ndarray) -> jnp.ndarray:
        """The on-site part 1/2 m2 phi^2 + lam/4! phi^4 (no eps^d)."""
        return 0.5 * self.m2 * phi**2 + (self.lam / 24.0) * phi**4

    def action(self, phi: jnp.ndarray) -> jnp.ndarray:
        """`S[phi]` [4.6], summed over the lattice axes; batch axes are kept."""
        lat = self.lattice
        kinetic = 0.0
        for ax in lat.axes:
            kinetic = kinetic + (jnp.roll(phi, -1, axis=ax) - phi) ** 2
        density = 0.5 * kinetic / lat.spacing**2 + self.potential_density(phi)
        return lat.spacing**lat.dim * lat.sum_sites(density)

    def grad_action(self, phi: jnp.ndarray) -> jnp.ndarray:
        """dS/dphi(n) = eps^d ( -Delta phi + m2 phi + lam/6 phi^3 ) (closed form)."""
        lat = self.lattice
        return lat.spacing**lat.dim * (
            -lat.laplacian(phi) + self.m2 * phi + (self.lam / 6.0) * phi**3
        )

    def score(self, phi: jnp.ndarray) -> jnp.ndarray:
        """grad log p = -dS/dphi = eps^d (Delta phi - m2 phi - lam/6 phi^3)."""
        return -self.grad_action(phi)

    def momentum_action_free(self, phi: jnp.ndarray) -> jnp.ndarray:
        """The quadratic part in momentum space [7.2]: L^d sum_p 1/2 (|phat|^2 + m2) |phi~(p)|^2."""
        lat = self.lattice
        phi_p = lat.fourier(phi)
        w = lat.phat_sq(phi.dtype) + self.m2
        return lat.volume * 0.5 * jnp.sum(w * jnp.abs(phi_p) ** 2, axis=lat.axes)

    def logdensity_fn(self):
        """log p(phi) = -S[phi] up to a constant, for one configuration (for Blackjax)."""
        return lambda phi: -self.action(phi)

    # free-field closed forms ------------------------------------------------------------
    def free_propagator(self, dtype=jnp.float64) -> jnp.ndarray:
        """G2(p) = 1/(|phat|^2 + m2) on the full grid (`theory.gaussian.free_field_spectrum`); lam = 0 only."""
        if not self.is_free:
            raise InvalidTheoryError("the closed-form propagator exists only for lam = 0")
        return free_field_spectrum(self.lattice, self.m2, dtype, half=False)


# converters ---------------------------------------------------------------------------


def make_phi4(
    dim: int,
    size: int,
    *,
    units: str = "physical",
    length: float | None = None,
    m2: float | None = None,
    lam: float | None = None,
    kappa: float | None = None,
    lambda_h: float | None = None,
) -> Phi4:
    """Build a `Phi4` from parameters given in any supported convention.

    - `physical`: our convention with side length `length` (default 1).
    - `lattice`: our convention in lattice units (L = N).
    - `albergo`: (m2, lam_A) of Albergo et al. in lattice units, given as `m2` and `lam`.
    - `hopping`: (kappa, lambda_h) in lattice units.
    """
    if units not in UNITS:
        raise InvalidTheoryError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
    if units == "hopping":
        if m2 is not None or lam is not None:
            raise InvalidTheoryError("with units 'hopping' give kappa and lambda_h, not m2 and lam")
        if kappa is None or lambda_h is None:
            raise InvalidTheoryError("units 'hopping' needs both kappa and lambda_h")
    else:
        if kappa is not None or lambda_h is not None:
            raise InvalidTheoryError(f"kappa and lambda_h only apply with units 'hopping', not {units!r}")
        if m2 is None or lam is None:
            raise InvalidTheoryError(f"units {units!r} needs both m2 and lam")
    if units != "physical" and length is not None:
        raise InvalidTheoryError(f"units {units!r} fix L = N; do not give a length")

    if units == "physical":
        lattice = Lattice(dim, size, 1.0 if length is None else length)
        return Phi4(lattice, m2, lam)
    lattice = Lattice.lattice_units(dim, size)
    if units == "lattice":
        return Phi4(lattice, m2, lam)
    if units == "albergo":
        return Phi4(lattice, require_finite("m2", m2, InvalidTheoryError), 6.0 * require_finite("lam", lam, InvalidTheoryError))
    kappa = require_finite("kappa", kappa, InvalidTheoryError)
    lambda_h = require_finite("lambda_h", lambda_h, InvalidTheoryError)
    if kappa <= 0:
        raise InvalidTheoryError(f"kappa must be > 0, got {kappa}")
    return Phi4(lattice, (1.0 - 2.0 * lambda_h) / kappa - 2.0 * lattice.dim, 6.0 * lambda_h / kappa**2)


def field_scale(units: str, *, kappa: float | None = None) -> float:
    """c such that phi_ours = c * phi_units; divide our fields/magnetizations by c to convert."""
    if units in ("physical", "lattice"):
        return 1.0
    if units == "albergo":
        return math.sqrt(2.0)
    if units == "hopping":
        if kappa is None or kappa <= 0:
            raise InvalidTheoryError("the hopping field scale needs kappa > 0")
        return math.sqrt(2.0 * kappa)
    raise InvalidTheoryError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")


def benchmark_theory(size: int, dim: int = 2) -> Phi4:
    """A point of the standard benchmark line: lattice units, m2 = -4, lam = 6 lam_A(N)."""
    if size not in BENCHMARK_LAM_A:
        raise InvalidTheoryError(
            f"no benchmark-line coupling for N = {size}; known N: {sorted(BENCHMARK_LAM_A)}"
        )
    return Phi4(Lattice.lattice_units(dim, size), -4.0, 6.0 * BENCHMARK_LAM_A[size])


def paper_theory(m2: float = -2.0) -> Phi4:
    """The paper's numerical points: d = 2, L = 1, N = 20, lam = 0.0017 (m2 = -2 or 0.01)."""
    return Phi4(Lattice(2, 20, 1.0), m2, 0.0017)


jax.tree_util.register_static(Lattice)
jax.tree_util.register_static(Phi4)
