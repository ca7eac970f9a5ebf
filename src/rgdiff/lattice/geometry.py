"""Periodic hypercubic lattices and their Fourier conventions (paper [4.1], [4.26], [4.27]).

A field on the lattice is an array whose last `dim` axes are the lattice axes, each of length
`size` = N; any leading axes are batch axes. The physical side length is `length` = L and the
spacing is eps = L / N.

Fourier transform [4.26]::

    phi~(p) = N^-d sum_n exp(-2 pi i p.n / N) phi(n)

Lattice momenta [4.27]::

    phat_i = (2N/L) sin(pi p_i / N),   |phat|^2 = sum_i phat_i^2,

the eigenvalues of minus the lattice Laplacian
Delta phi(n) = eps^-2 sum_i (phi(n+e_i) - 2 phi(n) + phi(n-e_i)).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidLatticeError, require_finite

MAX_SITES = 2**24  # refuse lattices that could not possibly fit one field in memory


@dataclasses.dataclass(frozen=True)
class Lattice:
    """A periodic lattice Z_N^d of physical side length L.

    Hashable and immutable, so it can be a static argument of `jax.jit`.

    **Arguments:**

    - `dim`: the dimension d, one of 1, 2, 3.
    - `size`: N, the number of sites per side (N >= 2).
    - `length`: L > 0, the physical side length; lattice units are L = N.
    """

    dim: int
    size: int
    length: float

    # the field theory needs N >= 2 (a one-site "lattice" has no momenta); the Hamiltonian's
    # spatial lattice also allows the single site (rgdiff.quantum.hamiltonian)
    min_size: ClassVar[int] = 2

    def __post_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)):
            raise InvalidLatticeError(f"dimension must be an integer 1, 2 or 3, got {self.dim!r}")
        if self.dim not in (1, 2, 3):
            raise InvalidLatticeError(f"dimension must be 1, 2 or 3, got {self.dim}")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)):
            raise InvalidLatticeError(f"lattice size N must be an integer >= {self.min_size}, got {self.size!r}")
        if self.size < self.min_size:
            raise InvalidLatticeError(f"lattice size N must be >= {self.min_size}, got {self.size}")
        if self.size**self.dim > MAX_SITES:
            raise InvalidLatticeError(
                f"lattice {self.size}^{self.dim} has more than {MAX_SITES} sites; use a smaller N"
            )
        length = require_finite("length L", self.length, InvalidLatticeError)
        if length <= 0:
            raise InvalidLatticeError(f"length L must be > 0, got {self.length}")
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "length", length)

    @classmethod
    def lattice_units(cls, dim: int, size: int) -> "Lattice":
        """The lattice with eps = 1, i.e. L = N."""
        return cls(dim, size, float(size))

    # geometry ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,) * self.dim

    @property
    def spacing(self) -> float:
        """eps = L / N."""
        return self.length / self.size

    @property
    def sites(self) -> int:
        """V = N^d, the number of sites."""
        return self.size**self.dim

    @property
    def volume(self) -> float:
        """The physical volume L^d."""
        return self.length**self.dim

    @property
    def axes(self) -> tuple[int, ...]:
        """The lattice axes of a field array (the last `dim` axes)."""
        return tuple(range(-self.dim, 0))

    @property
    def cutoff(self) -> float:
        """Lambda_0 = max |phat| = 2 sqrt(d) N / L."""
        return 2.0 * math.sqrt(self.dim) * self.size / self.length

    @property
    def phat1_sq(self) -> float:
        """|phat|^2 at the unit momentum e_i: (2N/L)^2 sin^2(pi/N), the smallest non-zero one."""
        return float(self._momentum_component()[1] ** 2)

    def describe(self) -> dict:
        return {"dim": self.dim, "size": self.size, "length": self.length}

    # momenta ----------------------------------------------------------------------------
    def _momentum_component(self) -> np.ndarray:
        """phat_i = (2N/L) sin(pi p_i / N) for p_i = 0..N-1, float64 NumPy [4.27]."""
        p = np.arange(self.size)
        return (2.0 * self.size / self.length) * np.sin(np.pi * p / self.size)

    def momentum_components(self, dtype=jnp.float64) -> list[jnp.ndarray]:
        """phat_i on the full FFT grid, one broadcastable array per axis [4.27]."""
        comp = self._momentum_component()
        out = []
        for i in range(self.dim):
            shape = [1] * self.dim
            shape[i] = self.size
            out.append(jnp.asarray(comp.reshape(shape), dtype=dtype))
        return out

    @functools.lru_cache(maxsize=64)
    def phat_sq_np(self) -> np.ndarray:
        """|phat|^2 = sum_i phat_i^2 on the full FFT grid, shape (N,)*d, float64 NumPy (read-only).

        The one evaluation of [4.27]: `phat_sq`, `phat_sq_half` and every host-side use derive
        from it (computed in float64 whatever the JAX precision setting).
        """
        comp_sq = self._momentum_component() ** 2
        total = np.zeros(self.shape)
        for i in range(self.dim):
            shape = [1] * self.dim
            shape[i] = self.size
            total = total + comp_sq.reshape(shape)
        total.setflags(write=False)
        return total

    def phat_sq(self, dtype=jnp.float64) -> jnp.ndarray:
        """|phat|^2 on the full FFT grid, shape (N,)*d (the eigenvalues of -Delta)."""
        return jnp.asarray(self.phat_sq_np(), dtype)

    def phat_sq_half(self, dtype=jnp.float64) -> jnp.ndarray:
        """|phat|^2 on the half grid of `rfftn` (last axis N//2 + 1)."""
        return self.phat_sq(dtype)[..., : self.size // 2 + 1]

    @property
    def half_shape(self) -> tuple[int, ...]:
        """The `rfftn` half grid: `shape` with the last axis N//2 + 1."""
        return self.shape[:-1] + (self.size // 2 + 1,)

    def self_conjugate_planes(self) -> np.ndarray:
        """On the half grid's last axis q = 0..N//2: True where q = -q mod N (q = 0 and, N even, N/2).

        rfftn stores those planes in full (both p and -p); every other entry of the half grid stands
        for the pair {p, -p}. The one definition behind `real_mode_mask_half` and `half_multiplicity`.
        """
        q = np.arange(self.size // 2 + 1)
        return (2 * q) % self.size == 0

    def real_mode_mask_half(self) -> np.ndarray:
        """On the `rfftn` half grid: True where p = -p mod N (the mode is real)."""
        planes = self.self_conjugate_planes()
        full_axis = np.zeros(self.size, dtype=bool)
        full_axis[: planes.size] = planes  # p_i = -p_i mod N only at 0 and N/2, both <= N//2
        out = np.ones((1,) * self.dim, dtype=bool)
        for i in range(self.dim):
            m = planes if i == self.dim - 1 else full_axis
            shape = [1] * self.dim
            shape[i] = m.shape[0]
            out = out & m.reshape(shape)
        return np.broadcast_to(out, self.half_shape)

    def half_multiplicity(self) -> np.ndarray:
        """How many full-grid modes each `rfftn` half-grid mode stands for (1 or 2)."""
        last = np.where(self.self_conjugate_planes(), 1, 2)
        shape = [1] * self.dim
        shape[-1] = last.shape[0]
        return np.broadcast_to(last.reshape(shape), self.half_shape)

    # transforms -------------------------------------------------------------------------
    def fourier(self, phi: jnp.ndarray) -> jnp.ndarray:
        """phi~(p) = N^-d sum_n exp(-2 pi i p.n/N) phi(n) on the full grid [4.26]."""
        return jnp.fft.fftn(phi, axes=self.axes) / self.sites

    def inverse_fourier(self, phi_p: jnp.ndarray) -> jnp.ndarray:
        """Inverse of `fourier`, returning the real part (fields are real)."""
        return jnp.real(jnp.fft.ifftn(phi_p * self.sites, axes=self.axes))

    def rfourier(self, phi: jnp.ndarray) -> jnp.ndarray:
        """`fourier` on the half grid (real fields): last lattice axis has N//2 + 1 entries."""
        return jnp.fft.rfftn(phi, axes=self.axes) / self.sites

    def inverse_rfourier(self, phi_p: jnp.ndarray) -> jnp.ndarray:
        """Inverse of `rfourier`."""
        return jnp.fft.irfftn(phi_p * self.sites, s=self.shape, axes=self.axes)

    def hartley(self, x: jnp.ndarray) -> jnp.ndarray:
        """The orthonormal discrete Hartley transform on the lattice axes::

            H[x](p) = V^-1/2 sum_n cas(2 pi p.n / N) x(n),   cas = cos + sin,

        i.e. V^-1/2 (Re - Im) of the FFT. H is real, orthogonal and its own inverse (H H = 1), and
        for a translation- and reflection-invariant Gaussian field its coefficients are
        uncorrelated with variance V G2(p) / L^d = G2(p) / eps^d: the real Fourier basis in which
        a phi^4 propagator is diagonal (Fourier acceleration, `rgdiff.samplers.fourier`).
        """
        modes = jnp.fft.fftn(x, axes=self.axes) / math.sqrt(self.sites)
        return (modes.real - modes.imag).astype(x.dtype)

    def fourier_multiply(self, phi: jnp.ndarray, multiplier_half) -> jnp.ndarray:
        """The translation-invariant linear map phi -> F^-1[m(p) F[phi]] with m real on the half grid.

        `multiplier_half` broadcasts against the `rfftn` half grid (batch axes first); the result
        keeps `phi`'s dtype.
        """
        modes = self.rfourier(phi)
        multiplier = jnp.asarray(multiplier_half).astype(modes.dtype)  # explicit: strict dtype promotion
        return self.inverse_rfourier(multiplier * modes).astype(phi.dtype)

    def lattice_laplacian(self, phi: jnp.ndarray) -> jnp.ndarray:
        """eps^2 Delta phi(n) = sum_i (phi(n+e_i) - 2 phi(n) + phi(n-e_i)): the stencil in lattice units.

        The one nearest-neighbour stencil of the package; its eigenvalue on the plane wave p is
        -eps^2 |phat|^2 [4.27]. Acts on the last `dim` axes; a NumPy array stays NumPy (host-side
        float64 uses such as the Hamiltonian's stiffness matrix), anything else goes through `jnp`.
        """
        xp = np if isinstance(phi, np.ndarray) else jnp
        out = -2.0 * self.dim * phi
        for ax in self.axes:
            out = out + xp.roll(phi, 1, axis=ax) + xp.roll(phi, -1, axis=ax)
        return out

    def laplacian(self, phi: jnp.ndarray) -> jnp.ndarray:
        """Delta phi(n) = eps^-2 sum_i (phi(n+e_i) - 2 phi(n) + phi(n-e_i))."""
        return self.lattice_laplacian(phi) / self.spacing**2

    def power_spectrum(self, fields, *, half: bool = True) -> np.ndarray:
        """G2(p) = L^d <|phi~(p)|^2> of an ensemble (float64 NumPy), averaged over all leading axes.

        `half=True` gives it on the `rfftn` half grid (weights: `half_multiplicity`), else on the
        full grid. No mean is subtracted: for the flowed spectrum a_t^2 G2_0 + v_t of a linear
        scheme the raw second moment is what is pushed forward.
        """
        flat = np.asarray(fields, dtype=np.float64).reshape(-1, *self.shape)
        transform = np.fft.rfftn if half else np.fft.fftn
        modes = transform(flat, axes=self.axes) / self.sites
        return self.volume * np.mean(np.abs(modes) ** 2, axis=0)

    def sum_sites(self, x: jnp.ndarray) -> jnp.ndarray:
        """Sum over the lattice axes, keeping batch axes."""
        return jnp.sum(x, axis=self.axes)

    def check_field(self, phi, what: str = "field") -> None:
        """Raise if `phi`'s trailing axes are not this lattice's shape."""
        shape = tuple(np.shape(phi))
        if len(shape) < self.dim or shape[-self.dim :] != self.shape:
            raise InvalidLatticeError(
                f"{what} has shape {shape}, expected trailing lattice axes {self.shape}"
            )
