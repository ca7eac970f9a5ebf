"""Field rescalings of RG flows [5.47]-[5.51] and the scheme-comparison constant c [5.54], [5.55].

What the paper says (section 5.6.4; the OCR of the equations is garbled, this is the reading
implemented here):

- [5.47], [5.48]: near a fixed point the flowed density agrees with a fixed density up to a
  t-dependent rescaling of the field, p_t(c_t phi) prod c_t dphi ~ p_hat(phi) prod dphi, i.e.
  phi_t / c_t is distributed by the fixed point.
- [5.49], [5.50]: the rescaling can be built into the flow by adding -d/dt log c_t times a
  quadratic term to the seed action. For Carosso this gives
  d phi = (Delta + d/dt log c_t) phi dt + eta, *with the noise eta unchanged*.
  Per mode: beta -> beta - d/dt log c_t, gamma unchanged. -> `FieldRenormalized`.
- [5.51], [5.52] add a momentum dilatation -d/dt log(Lambda_t) n.D phi(n). The factor n is not
  periodic, so on the torus this term is not translation invariant and not diagonal in Fourier
  space: it is outside the linear, per-mode schemes of this package and is not implemented.
- [5.54], [5.55]: two schemes flowing the same p_0 to fixed points related by a field rescaling,
  p^(1)(phi) prod dphi = p^(2)(c phi) prod c dphi, i.e. phi^(2) ~ c phi^(1); c is found by matching
  second moments, E^(2)[phi(n) phi(m)] = c^2 E^(1)[phi(n) phi(m)]. -> `comparison_constant`.

Two different things are therefore called "rescaling":

- `Rescaled(base, scale)`: the exact push-forward of the flow under phi_t -> c_t phi_t, the
  operation of [5.48] (with c_t there the inverse of `scale` here). Kernel (c_t a_t, c_t^2 v_t);
  as an SDE: beta - d/dt log c_t and gamma c_t^2 (the noise is rescaled too).
- `FieldRenormalized(base, scale)`: the modified flow [5.49], [5.50] (noise unchanged). Its mean
  still picks up c_t (a -> c_t a_t) but its variance is
  v_t = int_0^t (c_t / c_s)^2 a_{t|s}^2 gamma_s ds, not c_t^2 v_t; computed by quadrature.

Both need c_0 = 1 so that the flow starts from p_0.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSchemeError, require_finite
from rgdiff.theory.gaussian import two_point_function
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg.base import AbstractLinearScheme, check_times, describe_part


@dataclasses.dataclass(frozen=True)
class ExponentialScale:
    """c_t = exp(rate * t): a constant d/dt log c_t = `rate` (e.g. a scaling dimension times the
    log-rate of the cutoff)."""

    rate: float

    def __post_init__(self):
        object.__setattr__(self, "rate", require_finite("scale rate", self.rate))

    def __call__(self, t):
        return jnp.exp(self.rate * t)

    def describe(self) -> dict:
        return {"scale": "exponential", "rate": self.rate}


def _check_scale(scale) -> None:
    if not callable(scale):
        raise InvalidSchemeError(f"the field scale must be a function c(t), got {scale!r}")
    try:
        with jax.ensure_compile_time_eval():  # a scheme may be built inside a jitted function
            c0 = float(scale(jnp.zeros(())))
    except Exception as err:  # the user's function could fail in any way; say which input
        raise InvalidSchemeError(f"the field scale c(t) failed at t = 0: {err}") from None
    if not np.isfinite(c0) or abs(c0 - 1.0) > 1e-12:
        raise InvalidSchemeError(f"the field scale must satisfy c(0) = 1 so the flow starts at p_0, got c(0) = {c0}")


def _scale_and_log_rate(scale, t):
    c, dc_dt = jax.jvp(scale, (t,), (jnp.ones_like(t),))
    return c, dc_dt / c


@dataclasses.dataclass(frozen=True)
class Rescaled(AbstractLinearScheme):
    """The flow of `base` followed by phi_t -> c_t phi_t (exact push-forward, [5.48]).

    Kernel (a, v) -> (c_t / c_s a_{t|s}, c_t^2 v_{t|s}); rates (beta - d/dt log c, c^2 gamma).

    **Arguments:**

    - `base`: any linear scheme.
    - `scale`: c(t), elementwise in a JAX array t, differentiable, with c(0) = 1, c > 0.
    """

    base: AbstractLinearScheme
    scale: Callable

    def __post_init__(self):
        if not isinstance(self.base, AbstractLinearScheme):
            raise InvalidSchemeError(f"Rescaled needs a linear RG scheme as base, got {self.base!r}")
        _check_scale(self.scale)

    @property
    def mass(self) -> float:
        return self.base.mass

    def describe(self) -> dict:
        return {"name": "rescaled", "base": self.base.describe(), "scale": describe_part(self.scale)}

    def mode_rates(self, t, phat_sq, lattice: Lattice):
        beta, gamma = self.base.mode_rates(t, phat_sq, lattice)
        c, log_rate = _scale_and_log_rate(self.scale, t)
        return beta - log_rate, c**2 * gamma

    def mode_transition(self, start, t, phat_sq, lattice: Lattice):
        a, v = self.base.mode_transition(start, t, phat_sq, lattice)
        c_t = self.scale(t)
        return (c_t / self.scale(start)) * a, c_t**2 * v

    def effective_cutoff(self, t, lattice: Lattice):
        return self.base.effective_cutoff(t, lattice)

    def no_prior_reason(self) -> str:
        return "a rescaled scheme has no stationary law here (c_t need not converge); sample the base prior and rescale"


@dataclasses.dataclass(frozen=True)
class FieldRenormalized(AbstractLinearScheme):
    """The flow of `base` with field renormalization built in [5.49], [5.50].

    Per mode: beta -> beta - d/dt log c_t, gamma unchanged (the noise eta is not rescaled).
    The kernel is computed by quadrature of these rates.
    """

    base: AbstractLinearScheme
    scale: Callable

    def __post_init__(self):
        if not isinstance(self.base, AbstractLinearScheme):
            raise InvalidSchemeError(f"FieldRenormalized needs a linear RG scheme as base, got {self.base!r}")
        _check_scale(self.scale)

    @property
    def mass(self) -> float:
        return self.base.mass

    def describe(self) -> dict:
        return {"name": "field-renormalized", "base": self.base.describe(), "scale": describe_part(self.scale)}

    def mode_rates(self, t, phat_sq, lattice: Lattice):
        beta, gamma = self.base.mode_rates(t, phat_sq, lattice)
        _, log_rate = _scale_and_log_rate(self.scale, t)
        return beta - log_rate, gamma

    def effective_cutoff(self, t, lattice: Lattice):
        return self.base.effective_cutoff(t, lattice)

    def no_prior_reason(self) -> str:
        return "a field-renormalized scheme has no closed-form stationary law here; use Carosso with M > 0"


# scheme comparison [5.54], [5.55] -----------------------------------------------------------


def _separation_index(separation, lattice: Lattice):
    if separation is None:
        return (0,) * lattice.dim
    sep = tuple(int(x) for x in np.atleast_1d(separation))
    if len(sep) != lattice.dim:
        raise InvalidSchemeError(f"separation needs {lattice.dim} components, got {separation!r}")
    return tuple(x % lattice.size for x in sep)


def flowed_spectrum(scheme: AbstractLinearScheme, lattice: Lattice, spectrum0_half, t, dtype=jnp.float64):
    """G_t(p) = a_t(p)^2 G_0(p) + v_t(p) on the half grid: the exact power spectrum at RG time t.

    Exact for any p_0 (not only Gaussian) whose power spectrum L^d <|phi~_0(p)|^2> is G_0, since the
    kernel is linear with independent noise ([5.32]; `Lattice.power_spectrum` measures G_0).
    """
    a, v = scheme.kernel(t, lattice, dtype)
    return a**2 * jnp.asarray(spectrum0_half, dtype) + v


def flowed_site_variance(scheme: AbstractLinearScheme, lattice: Lattice, spectrum0_half, t) -> float:
    """<phi_t(n)^2> = L^-d sum_p G_t(p), the exact per-site second moment at time t (float)."""
    spectrum = np.asarray(flowed_spectrum(scheme, lattice, spectrum0_half, t))
    return float(np.sum(lattice.half_multiplicity() * spectrum)) / lattice.volume


def comparison_constant(
    scheme_a: AbstractLinearScheme,
    scheme_b: AbstractLinearScheme,
    lattice: Lattice,
    spectrum0_half,
    t_a,
    t_b,
    separation=None,
):
    """c with phi_b ~ c phi_a, from second moments [5.55]: c^2 = <phi(n) phi(n+r)>_b / <...>_a.

    Both schemes flow the same zero-mean Gaussian p_0 (spectrum `spectrum0_half` = L^d <|phi~_0|^2>
    on the half grid), scheme a to time `t_a` and scheme b to `t_b`. The two-point functions are
    compared at the separation r (`separation`, default 0: the local second moment <phi(n)^2>).
    A single c matches all r only if the two spectra are proportional; compare several r to see
    how far that holds.

    **Returns:** c (a JAX scalar).
    """
    check_times(t_a)
    check_times(t_b)
    index = _separation_index(separation, lattice)
    c_a = two_point_function(lattice, flowed_spectrum(scheme_a, lattice, spectrum0_half, t_a))[index]
    c_b = two_point_function(lattice, flowed_spectrum(scheme_b, lattice, spectrum0_half, t_b))[index]
    ratio = c_b / c_a
    if not isinstance(ratio, jax.core.Tracer) and not float(ratio) > 0:
        raise InvalidSchemeError(
            f"the two-point functions at separation {index} have opposite signs or vanish "
            f"({float(c_a)}, {float(c_b)}); no field rescaling relates them there: pick another separation"
        )
    return jnp.sqrt(ratio)


def comparison_constant_from_fields(phi_a, phi_b, lattice: Lattice, separation=None):
    """The same c estimated from samples: c^2 = <phi_b(n) phi_b(n+r)> / <phi_a(n) phi_a(n+r)>,
    averaged over sites and configurations (for non-Gaussian p_0 pushed through the exact kernels).
    The ensemble mean is not subtracted (it vanishes for the Z_2-symmetric ensembles of interest)."""
    lattice.check_field(phi_a, "phi_a")
    lattice.check_field(phi_b, "phi_b")
    index = _separation_index(separation, lattice)

    def moment(phi):
        shifted = jnp.roll(phi, tuple(-i for i in index), axis=lattice.axes)
        return jnp.mean(phi * shifted)

    ratio = moment(jnp.asarray(phi_b)) / moment(jnp.asarray(phi_a))
    return jnp.sqrt(ratio)


jax.tree_util.register_static(Rescaled)
jax.tree_util.register_static(FieldRenormalized)
