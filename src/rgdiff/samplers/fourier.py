"""Fourier acceleration: HMC and NUTS in coordinates where the phi^4 propagator is diagonal.

With a mass matrix diagonal in position space, the HMC time scale of a Fourier mode p is set by
its variance G2(p): at the paper's points (L = 1, N = 20) the mode frequencies |phat|^2 + m2_eff
span 0.03 ... 3200, so the zero mode and the other infrared modes, which carry <|M|>, G2(0) and
m_R, are the slowest directions by orders of magnitude (tau_int(|M|) ~ 90-360 for NUTS). The
standard remedy is Fourier acceleration (Batrouni et al. 1985; for HMC e.g. Espriu et al.): a
mass matrix diagonal in momentum space, with each mode's mass proportional to its inverse
variance, so that every mode moves on the same time scale.

Here the chains move in the coordinates u of::

    phi = H[sigma * u],     sigma(p)^2 = 1 / (eps^d (|phat|^2 + m2_ref))

with H the orthonormal discrete Hartley transform (`Lattice.hartley`: real, orthogonal, its own
inverse) and sigma^2 the free propagator of a reference mass (in Hartley coordinates G2(p)/eps^d
is the variance of mode p; `reference_variance`). The map is linear with the constant Jacobian
prod_p sigma(p), so the density of u is exp(-S(phi(u))) up to a constant: a chain that is exact
for it gives fields exactly distributed as exp(-S). Blackjax's own kernels and Stan's window
adaptation then run unchanged in u; the adapted diagonal inverse mass matrix is the measured
variance of each Fourier mode relative to the reference (1 at the start: the closed form), i.e.
Fourier acceleration with the measured propagator. `orbit_averaged_metric` averages it over each
momentum orbit of the lattice symmetry at every window end (fewer, better-estimated numbers).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.metric_recipes import MetricCore, lookup_recipe

from rgdiff.lattice.geometry import Lattice
from rgdiff.lattice.symmetry import orbit_average
from rgdiff.theory.phi4 import Phi4


def reference_mass_sq(theory: Phi4) -> float:
    """m2_ref of the closed-form start: m2 in the symmetric phase (m2 > 0), and the curvature
    -2 m2 of the potential at a classical vacuum phi^2 = -6 m2/lam otherwise (m2 <= 0)."""
    return theory.m2 if theory.m2 > 0 else -2.0 * theory.m2


def reference_variance(theory: Phi4) -> np.ndarray:
    """The closed-form variance of each Hartley coordinate, 1 / (eps^d (|phat|^2 + m2_ref)) on the
    full grid (float64 NumPy): the free propagator [7.2] of mass^2 m2_ref over eps^d."""
    lat = theory.lattice
    m2_ref = reference_mass_sq(theory)
    if m2_ref <= 0:  # m2 = 0 needs lam > 0 (Phi4 refuses the free massless theory); the zero mode
        m2_ref = lat.phat1_sq  # then gets the scale of the softest non-zero mode
    return 1.0 / (lat.spacing**lat.dim * (lat.phat_sq_np() + m2_ref))


class AbstractCoordinates(eqx.Module):
    """A linear map u -> phi with a constant Jacobian, in which a chain moves."""

    lattice: eqx.AbstractVar[Lattice]

    def to_field(self, u: jax.Array) -> jax.Array:
        raise NotImplementedError

    def from_field(self, phi: jax.Array) -> jax.Array:
        raise NotImplementedError

    def logdensity_fn(self, theory: Phi4):
        """log p(u) = -S(phi(u)) up to the constant log-Jacobian, for one configuration."""
        return lambda u: -theory.action(self.to_field(u))


class SiteCoordinates(AbstractCoordinates):
    """The field values themselves (plain HMC / NUTS)."""

    lattice: Lattice = eqx.field(static=True)

    def to_field(self, u):
        return u

    def from_field(self, phi):
        return phi


class FourierCoordinates(AbstractCoordinates):
    """phi = H[sigma * u]: Hartley modes whitened by a reference propagator (see the module)."""

    lattice: Lattice = eqx.field(static=True)
    scale: jax.Array  # sigma(p) on the full grid

    def __init__(self, lattice: Lattice, variance):
        self.lattice = lattice
        self.scale = jnp.sqrt(jnp.asarray(variance))

    @classmethod
    def for_theory(cls, theory: Phi4) -> "FourierCoordinates":
        """The closed-form start: sigma^2 = `reference_variance(theory)`."""
        return cls(theory.lattice, reference_variance(theory))

    def to_field(self, u):
        return self.lattice.hartley(self.scale.astype(u.dtype) * u)

    def from_field(self, phi):
        return self.lattice.hartley(phi) / self.scale.astype(phi.dtype)


def orbit_averaged_metric(lattice: Lattice) -> MetricCore:
    """Blackjax's diagonal Welford metric whose estimate is averaged over each momentum orbit
    (`rgdiff.lattice.orbit_average`) at the end of every slow window.

    For Fourier coordinates the inverse mass matrix is one variance per Hartley mode; a
    translation- and hypercubic-invariant theory has equal variances on an orbit (p and -p
    included), so the average is an unbiased estimate with fewer free numbers.
    """
    core = lookup_recipe("welford_diag").build_core(imm_shrinkage_to_previous=0.0, initial_inverse_mass_matrix=None)

    def final(state):
        state = core.final(state)
        imm = state.inverse_mass_matrix
        averaged = orbit_average(imm.reshape(imm.shape[:-1] + lattice.shape), lattice.dim, lattice.size)
        return state._replace(inverse_mass_matrix=averaged.reshape(imm.shape))

    return MetricCore(core.init, core.update, final)
