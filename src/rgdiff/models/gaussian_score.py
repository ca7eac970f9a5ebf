"""The exact score of a Gaussian UV theory flowed by a linear RG scheme: the reference model.

If p_0 is the zero-mean Gaussian field with spectrum G_0(p) (e.g. the free field,
G_0 = 1 / (|phat|^2 + m2) [7.2]) and the scheme is linear with kernel (a_t, v_t), then p_t is
Gaussian too, with spectrum (conventions page, "RG schemes as forward SDEs") ::

    G_t(p) = a_t(p)^2 G_0(p) + v_t(p).

Its score is the Fourier multiplier -eps^d / G_t(p) (`rgdiff.gaussian.gaussian_field_score`):
s_t(phi) = -F^-1[eps^d phi~ / G_t]. The map phi -> s_t(phi) is linear and diagonal in the
(unitary) plane-wave basis, with eigenvalue -eps^d / G_t(p) on every mode p of the FULL grid, so
its divergence (the trace of its Jacobian) is exactly ::

    div s_t = -eps^d sum_{p in Z_N^d} 1 / G_t(p),

evaluated on the `rfftn` half grid with `Lattice.half_multiplicity()` weights.

A `scale` != 1 multiplies G_0 by that factor: a deliberately WRONG model (its p_0 is the Gaussian
with spectrum scale * G_0), which the tests use to show that the bridge sampler is exact anyway.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from rgdiff.errors import InvalidSchemeError, InvalidTheoryError, require_finite
from rgdiff.theory.gaussian import free_field_spectrum, gaussian_field_log_prob, gaussian_modes_score
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.base import AbstractExactScoreModel
from rgdiff.rg.base import AbstractLinearScheme
from rgdiff.rg.rescaling import flowed_spectrum


class GaussianFlowScore(AbstractExactScoreModel):
    """s(phi, t) = grad log p_t(phi) for a Gaussian p_0 (spectrum G_0) flowed by a linear scheme.

    **Arguments:**

    - `lattice`: the lattice.
    - `scheme`: a linear RG scheme (`rgdiff.rg.AbstractLinearScheme`).
    - `spectrum0`: G_0(p) = L^d <|phi~_0(p)|^2> on the `rfftn` half grid, > 0 and even in p.
    - `scale`: factor multiplying G_0 (default 1: the exact score); != 1 gives a wrong model.

    Exact, linear, translation invariant, with an exact divergence.
    """

    lattice: Lattice = eqx.field(static=True)
    scheme: AbstractLinearScheme = eqx.field(static=True)
    spectrum0: jax.Array
    scale: jax.Array

    def __init__(self, lattice: Lattice, scheme: AbstractLinearScheme, spectrum0, scale: float = 1.0):
        if not isinstance(scheme, AbstractLinearScheme):
            raise InvalidSchemeError(f"GaussianFlowScore needs a linear RG scheme, got {scheme!r}")
        spectrum0 = jnp.asarray(spectrum0)
        half_shape = lattice.half_shape
        if spectrum0.shape != half_shape:
            raise InvalidTheoryError(
                f"spectrum0 must be given on the rfftn half grid of shape {half_shape}, got {spectrum0.shape}"
            )
        if not isinstance(spectrum0, jax.core.Tracer) and not bool(jnp.all(spectrum0 > 0)):
            raise InvalidTheoryError("spectrum0 must be positive on every mode (a normalizable Gaussian)")
        scale = require_finite("scale", scale, InvalidTheoryError)
        if scale <= 0:
            raise InvalidTheoryError(f"scale must be > 0, got {scale}")
        self.lattice = lattice
        self.scheme = scheme
        self.spectrum0 = spectrum0
        self.scale = jnp.asarray(scale, spectrum0.dtype)

    @classmethod
    def free_field(
        cls, lattice: Lattice, scheme: AbstractLinearScheme, m2: float, scale: float = 1.0, dtype=jnp.float64
    ):
        """The model for the free UV field of mass squared `m2` > 0: G_0 = 1 / (|phat|^2 + m2)."""
        return cls(lattice, scheme, free_field_spectrum(lattice, m2, dtype), scale)

    # the flowed spectrum --------------------------------------------------------------------
    def spectrum(self, t, dtype=None) -> jax.Array:
        """G_t = a_t^2 scale G_0 + v_t on the half grid (shape `t.shape + half grid`; `rg.flowed_spectrum`)."""
        dtype = self.spectrum0.dtype if dtype is None else jnp.dtype(dtype)
        t = jnp.asarray(t, dtype)
        return flowed_spectrum(self.scheme, self.lattice, (self.scale * self.spectrum0).astype(dtype), t, dtype)

    # the AbstractExactScoreModel interface -------------------------------------------------------
    def __call__(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        """-F^-1[eps^d phi~ / G_t] (`rgdiff.gaussian.gaussian_field_score`)."""
        spectrum = self.spectrum(t, phi.dtype)
        return gaussian_modes_score(self.lattice.rfourier(phi), self.lattice, spectrum)

    def divergence(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        """-eps^d sum over the full grid of 1 / G_t(p); independent of phi (the score is linear)."""
        lat = self.lattice
        spectrum = self.spectrum(t, phi.dtype)
        weights = jnp.asarray(lat.half_multiplicity(), phi.dtype)
        return -(lat.spacing**lat.dim) * jnp.sum(weights / spectrum)

    def log_prob(self, phi: jax.Array, t) -> jax.Array:
        """The exact normalized log p_t(phi) of the model's own flow (any batch shape)."""
        return gaussian_field_log_prob(phi, self.lattice, self.spectrum(t, jnp.asarray(phi).dtype))

    def describe(self) -> dict:
        return {
            "model": "gaussian_flow",
            "lattice": self.lattice.describe(),
            "scheme": self.scheme.describe(),
            "scale": float(self.scale),
        }
