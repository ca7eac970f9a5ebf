"""The lattice phi^4 Hamiltonian of the conventions page (paper [6.3], [6.9]).

    H = sum_n [ -1/2 eps^-d d^2/dphi(n)^2 ] + V(phi),
    V(phi) = eps^d sum_n [ 1/2 sum_i (phi(n+e_i) - phi(n))^2 / eps^2 + 1/2 m2 phi(n)^2 + lam/4! phi(n)^4 ],

on the periodic spatial lattice Z_N^d of side L (eps = L/N). V has the form of the Euclidean
action of `rgdiff.theory` in d dimensions; here d counts space dimensions only. N = 1 (a single
site) is allowed and is the anharmonic oscillator H = -1/2 eps^-d d^2/dphi^2 + eps^d (m2/2 phi^2 +
lam/24 phi^4), which `rgdiff.lattice.Lattice` (N >= 2) does not cover, so this module carries its
own geometry (same formulas, tested equal to `Lattice` for N >= 2).

With canonical coordinates q(n) = eps^(d/2) phi(n) the Hamiltonian is
H = sum_n -1/2 d^2/dq(n)^2 + 1/2 q.K q + lam/(24 eps^d) sum_n q(n)^4, K = -Delta + m2, whose free
normal-mode frequencies are omega_p = sqrt(|phat|^2 + m2).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidLatticeError, InvalidTheoryError, require_finite

UNITS = ("lattice", "physical")
MAX_SITES = 4096  # a variational ground state on more sites is far beyond this CPU package


@dataclasses.dataclass(frozen=True)
class Hamiltonian:
    """Lattice phi^4 Hamiltonian [6.9] on Z_N^d (d = 1, 2, 3; N >= 1; side L; mass m2; coupling lam).

    Hashable, so it can be a static argument of `jax.jit`. lam < 0 is unbounded below; lam = 0 with
    m2 <= 0 has a zero mode with no normalizable ground state: both are refused.
    """

    dim: int
    size: int
    length: float
    m2: float
    lam: float

    def __post_init__(self):
        for name, val, lo in (("dimension d", self.dim, 1), ("lattice size N", self.size, 1)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
                raise InvalidLatticeError(f"{name} must be an integer, got {val!r}")
            if val < lo:
                raise InvalidLatticeError(f"{name} must be >= {lo}, got {val}")
        if self.dim not in (1, 2, 3):
            raise InvalidLatticeError(f"dimension must be 1, 2 or 3, got {self.dim}")
        if self.size**self.dim > MAX_SITES:
            raise InvalidLatticeError(f"{self.size}^{self.dim} sites is more than {MAX_SITES}; use a smaller N")
        length = require_finite("length L", self.length, InvalidLatticeError)
        if length <= 0:
            raise InvalidLatticeError(f"length L must be > 0, got {self.length}")
        m2 = require_finite("m2", self.m2, InvalidTheoryError)
        lam = require_finite("lam", self.lam, InvalidTheoryError)
        if lam < 0:
            raise InvalidTheoryError(f"lam must be >= 0 (lam < 0 has no ground state), got {lam}")
        if lam == 0 and m2 <= 0:
            raise InvalidTheoryError(f"the free field needs m2 > 0 (m2 <= 0 has a zero mode with no ground state), got m2 = {m2}")
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "m2", m2)
        object.__setattr__(self, "lam", lam)

    @classmethod
    def make(cls, dim: int, size: int, *, m2: float, lam: float, units: str = "lattice", length: float | None = None) -> "Hamiltonian":
        """Lattice units fix L = N (eps = 1); physical units take L (default 1)."""
        if units not in UNITS:
            raise InvalidTheoryError(f"unknown units {units!r}; choose lattice or physical")
        if units == "lattice":
            if length is not None:
                raise InvalidTheoryError("units 'lattice' fix L = N; do not give --length")
            length = float(size)
        elif length is None:
            length = 1.0
        return cls(dim, size, length, m2, lam)

    # geometry ---------------------------------------------------------------------------
    @property
    def spacing(self) -> float:
        return self.length / self.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,) * self.dim

    @property
    def sites(self) -> int:
        return self.size**self.dim

    @property
    def axes(self) -> tuple[int, ...]:
        return tuple(range(-self.dim, 0))

    @property
    def cell(self) -> float:
        """eps^d: the weight of one site in V, and the inverse of the kinetic prefactor."""
        return self.spacing**self.dim

    def describe(self) -> dict:
        return {"dim": self.dim, "size": self.size, "length": self.length, "spacing": self.spacing,
                "m2": self.m2, "lam": self.lam}

    def label(self) -> str:
        return f"d={self.dim}, N={self.size}, L={self.length:g}, m2={self.m2:g}, lam={self.lam:g}"

    def phat_sq(self) -> np.ndarray:
        """|phat|^2 = sum_i (2N/L)^2 sin^2(pi p_i/N) on the full FFT grid [4.27] (zero for N = 1)."""
        comp = (2.0 * self.size / self.length) ** 2 * np.sin(np.pi * np.arange(self.size) / self.size) ** 2
        grids = np.meshgrid(*([comp] * self.dim), indexing="ij")
        return np.sum(grids, axis=0)

    def omega(self, mass_sq: float | None = None) -> np.ndarray:
        """Normal-mode frequencies sqrt(|phat|^2 + M^2) (M^2 = m2 by default) on the FFT grid."""
        m = self.m2 if mass_sq is None else mass_sq
        return np.sqrt(self.phat_sq() + m)

    def momentum_classes(self) -> np.ndarray:
        """Integer label per FFT-grid momentum: its orbit under the lattice point group (p -> -p, axis permutations)."""
        return _orbit_labels(self.size, self.dim)

    def distance_classes(self) -> np.ndarray:
        """Integer label per separation r: its orbit under the lattice point group."""
        return _orbit_labels(self.size, self.dim)

    def stiffness_matrix(self) -> np.ndarray:
        """K = -Delta + m2 as a dense (V, V) matrix (row-major site order), for exact diagonalization."""
        eye = np.eye(self.sites).reshape((self.sites,) + self.shape)
        lap = -2.0 * self.dim * eye
        for ax in range(1, self.dim + 1):
            lap = lap + np.roll(eye, 1, axis=ax) + np.roll(eye, -1, axis=ax)
        return -lap.reshape(self.sites, self.sites) / self.spacing**2 + self.m2 * np.eye(self.sites)

    # the Hamiltonian --------------------------------------------------------------------
    def potential(self, phi: jnp.ndarray) -> jnp.ndarray:
        """V(phi) [6.9], summed over the lattice axes (batch axes kept)."""
        grad = 0.0
        for ax in self.axes:
            grad = grad + (jnp.roll(phi, -1, axis=ax) - phi) ** 2
        density = 0.5 * grad / self.spacing**2 + 0.5 * self.m2 * phi**2 + (self.lam / 24.0) * phi**4
        return self.cell * jnp.sum(density, axis=self.axes)

    def kinetic_prefactor(self) -> float:
        """eps^-d in -1/2 eps^-d d^2/dphi(n)^2."""
        return 1.0 / self.cell


def _orbit_labels(n: int, d: int) -> np.ndarray:
    fold = np.minimum(np.arange(n), (n - np.arange(n)) % n)
    keys = {}
    out = np.zeros((n,) * d, dtype=np.int64)
    for idx in itertools.product(range(n), repeat=d):
        key = tuple(sorted(int(fold[i]) for i in idx))
        out[idx] = keys.setdefault(key, len(keys))
    return out
