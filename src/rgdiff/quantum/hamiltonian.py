"""The lattice phi^4 Hamiltonian of the conventions page (paper [6.3], [6.9]).

    H = sum_n [ -1/2 eps^-d d^2/dphi(n)^2 ] + V(phi),
    V(phi) = eps^d sum_n [ 1/2 sum_i (phi(n+e_i) - phi(n))^2 / eps^2 + 1/2 m2 phi(n)^2 + lam/4! phi(n)^4 ],

on the periodic spatial lattice Z_N^d of side L (eps = L/N). V is the Euclidean action [4.6] of
`rgdiff.theory.Phi4` in d dimensions (here d counts space dimensions only), and the geometry
(momenta, Laplacian, symmetry orbits) is that of `rgdiff.lattice.Lattice`: the Hamiltonian is
built on a `SpatialLattice` and a `Phi4`. N = 1 (a single site) is allowed and is the anharmonic
oscillator H = -1/2 eps^-d d^2/dphi^2 + eps^d (m2/2 phi^2 + lam/24 phi^4).

With canonical coordinates q(n) = eps^(d/2) phi(n) the Hamiltonian is
H = sum_n -1/2 d^2/dq(n)^2 + 1/2 q.K q + lam/(24 eps^d) sum_n q(n)^4, K = -Delta + m2, whose free
normal-mode frequencies are omega_p = sqrt(|phat|^2 + m2).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidLatticeError, InvalidTheoryError
from rgdiff.lattice.geometry import Lattice
from rgdiff.lattice.symmetry import lattice_orbits
from rgdiff.theory.phi4 import Phi4

UNITS = ("lattice", "physical")
MAX_SITES = 4096  # a variational ground state on more sites is far beyond this CPU package


class SpatialLattice(Lattice):
    """The Hamiltonian's spatial lattice: a `Lattice` that also allows N = 1 (one site).

    All formulas are `Lattice`'s; on one site |phat|^2 = 0 and the Laplacian vanishes.
    """

    min_size: ClassVar[int] = 1


jax.tree_util.register_static(SpatialLattice)


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
    lattice: SpatialLattice = dataclasses.field(init=False, repr=False, compare=False)
    theory: Phi4 = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        lattice = SpatialLattice(self.dim, self.size, self.length)  # validates d, N, L
        if lattice.sites > MAX_SITES:
            raise InvalidLatticeError(f"{lattice.size}^{lattice.dim} sites is more than {MAX_SITES}; use a smaller N")
        theory = Phi4(lattice, self.m2, self.lam)  # lam >= 0; lam = 0 needs m2 > 0 (no ground state otherwise)
        for name, value in (("dim", lattice.dim), ("size", lattice.size), ("length", lattice.length),
                            ("m2", theory.m2), ("lam", theory.lam), ("lattice", lattice), ("theory", theory)):
            object.__setattr__(self, name, value)

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

    # geometry (the lattice's) -----------------------------------------------------------
    @property
    def spacing(self) -> float:
        return self.lattice.spacing

    @property
    def shape(self) -> tuple[int, ...]:
        return self.lattice.shape

    @property
    def sites(self) -> int:
        return self.lattice.sites

    @property
    def axes(self) -> tuple[int, ...]:
        return self.lattice.axes

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
        """|phat|^2 on the full FFT grid [4.27], float64 NumPy, read-only (zero for N = 1)."""
        return self.lattice.phat_sq_np()

    def omega(self, mass_sq: float | None = None) -> np.ndarray:
        """Normal-mode frequencies sqrt(|phat|^2 + M^2) (M^2 = m2 by default) on the FFT grid."""
        m = self.m2 if mass_sq is None else mass_sq
        return np.sqrt(self.phat_sq() + m)

    def momentum_classes(self) -> np.ndarray:
        """Integer label per FFT-grid momentum: its orbit under the lattice point group (p -> -p, axis permutations)."""
        return lattice_orbits(self.dim, self.size)[1]

    def distance_classes(self) -> np.ndarray:
        """Integer label per separation r: its orbit under the lattice point group."""
        return lattice_orbits(self.dim, self.size)[1]

    def stiffness_matrix(self) -> np.ndarray:
        """K = -Delta + m2 as a dense (V, V) matrix (row-major site order), for exact diagonalization.

        Column j is -Delta applied to the j-th unit field (`Lattice.laplacian` on the identity).
        """
        basis = np.eye(self.sites).reshape((self.sites,) + self.shape)
        laplacian = self.lattice.laplacian(basis).reshape(self.sites, self.sites)
        return -laplacian + self.m2 * np.eye(self.sites)

    # the Hamiltonian --------------------------------------------------------------------
    def potential(self, phi: jnp.ndarray) -> jnp.ndarray:
        """V(phi) [6.9] = the Euclidean action S[phi] of `theory`, summed over the lattice axes (batch axes kept)."""
        return self.theory.action(phi)

    def kinetic_prefactor(self) -> float:
        """eps^-d in -1/2 eps^-d d^2/dphi(n)^2."""
        return 1.0 / self.cell
