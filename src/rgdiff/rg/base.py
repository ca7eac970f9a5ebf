"""Linear RG schemes as forward SDEs, diagonal in Fourier space [5.32]-[5.36].

Every scheme here is linear in phi, so each Fourier mode evolves on its own ::

    d phi~_t(p) = -beta_t(p) phi~_t(p) dt + noise,   L^d <|noise(p)|^2> grows at rate gamma_t(p),

with an exact Gaussian transition kernel from time s to time t (conventions page) ::

    phi~_t(p) = a_{t|s}(p) phi~_s(p) + noise,  L^d <|noise|^2> = v_{t|s}(p),
    a_{t|s} = exp(-int_s^t beta),  v_{t|s} = int_s^t exp(-2 int_r^t beta) gamma_r dr.

`kernel(t)` is the transition from 0. A scheme defines its rates (beta, gamma) and, where it
exists, the closed form of its kernel; otherwise the kernel is computed by quadrature
(`rgdiff.rg.quadrature`). Everything else (push-forward, transition density, conditional score,
stationary law) is written once here.

In position space (`rgdiff.rg.sde`) the same flow is d phi = F^-1[-beta F phi] dt plus white
per-site noise sqrt(eps^-d) dW coloured by the Fourier multiplier sqrt(gamma).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSchemeError, RgdiffError, require_finite
from rgdiff.theory.gaussian import as_complex, gaussian_field_log_prob, gaussian_field_score, gaussian_modes_log_prob, gaussian_modes_score, half_spectrum_noise_parts, sample_gaussian_field
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg.quadrature import DEFAULT_NODES, DEFAULT_PANELS, transition_by_quadrature

# validation ---------------------------------------------------------------------------------


def require_nonnegative(name: str, value) -> float:
    """`value` as a finite float >= 0, or `InvalidSchemeError`."""
    try:
        x = require_finite(name, value)
    except RgdiffError as err:
        raise InvalidSchemeError(str(err)) from None
    if x < 0:
        raise InvalidSchemeError(f"{name} must be >= 0, got {x}")
    return x


MAX_MASS = 1e6  # M^2 (and rates M^2 t) stay far inside float range; larger M wipes out every mode at once


def require_mass(name: str, value) -> float:
    """An IR mass M: a finite float in [0, MAX_MASS], or `InvalidSchemeError`."""
    x = require_nonnegative(name, value)
    if x > MAX_MASS:
        raise InvalidSchemeError(f"{name} must be in [0, {MAX_MASS:g}], got {x:g}")
    return x


def require_positive(name: str, value) -> float:
    """`value` as a finite float > 0, or `InvalidSchemeError`."""
    try:
        x = require_finite(name, value)
    except RgdiffError as err:
        raise InvalidSchemeError(str(err)) from None
    if x <= 0:
        raise InvalidSchemeError(f"{name} must be > 0, got {x:g}")
    return x


def check_times(t, start=0.0) -> None:
    """Refuse negative, non-finite, or backward times; traced values are not checked."""
    concrete = []
    for name, value in (("start time", start), ("RG time t", t)):
        if isinstance(value, jax.core.Tracer):
            concrete.append(None)
            continue
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InvalidSchemeError(f"{name} must be a real number, got {value!r}")
        if not np.all(np.isfinite(arr)):
            bad = float(arr[~np.isfinite(arr)].flat[0])
            raise InvalidSchemeError(f"{name} must be finite, got {bad}")
        if np.any(arr < 0):
            bad = float(arr[arr < 0].flat[0])
            raise InvalidSchemeError(f"{name} must be >= 0 (RG time runs forward from the UV at t = 0), got {bad}")
        concrete.append(arr)
    if concrete[0] is not None and concrete[1] is not None and np.any(concrete[1] < concrete[0]):
        raise InvalidSchemeError(f"the flow runs forward only: need t >= start, got start={start!r}, t={t!r}")


# helpers ------------------------------------------------------------------------------------


def mode_grid(lattice: Lattice, dtype, half: bool) -> jnp.ndarray:
    """|phat|^2 on the half (`rfftn`) or full grid."""
    return lattice.phat_sq_half(dtype) if half else lattice.phat_sq(dtype)


def expand_time(t: jnp.ndarray, lattice: Lattice) -> jnp.ndarray:
    """Append `dim` unit axes so a time array broadcasts against mode grids."""
    return jnp.reshape(t, jnp.shape(t) + (1,) * lattice.dim)


def one_minus_exp_over(x, w):
    """(1 - exp(-x w)) / w with the w -> 0 limit x, via expm1 (exact at small x w, never < 0)."""
    safe_w = jnp.where(w == 0, 1.0, w)
    return jnp.where(w == 0, x, -jnp.expm1(-x * safe_w) / safe_w)


def _field_dtype(phi) -> jnp.dtype:
    dtype = jnp.asarray(phi).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InvalidSchemeError(f"fields must be real floating-point arrays, got dtype {dtype}")
    return dtype


def describe_part(part):
    """A scheme's ingredient (rate function, cutoff profile, field scale) as data: a number as a
    float, a describable part by its own `describe()`, and a plain Python function by its name,
    `{"python": "module.qualname"}`, which records it but cannot rebuild it
    (`rgdiff.rg.scheme_from_description` refuses it)."""
    if isinstance(part, (int, float)) and not isinstance(part, bool):
        return float(part)
    if hasattr(part, "describe"):
        return part.describe()
    name = getattr(part, "__qualname__", None) or type(part).__qualname__
    return {"python": f"{getattr(part, '__module__', None) or '?'}.{name}"}


# the abstraction ----------------------------------------------------------------------------


class AbstractLinearScheme:
    """A linear RG scheme: per-mode rates (beta_t, gamma_t) and the exact Gaussian kernel.

    Concrete schemes are frozen dataclasses (hashable, static under `jax.jit`) that implement

    - `mode_rates(t, phat_sq, lattice) -> (beta, gamma)`: elementwise in `t` (already expanded
      to broadcast against `phat_sq`);
    - optionally `mode_transition(start, t, phat_sq, lattice) -> (a, v)`: the closed form
      (default: quadrature of the rates);
    - `mass` (the M of the M-modified schemes), `describe()` (plain data from which
      `rgdiff.rg.scheme_from_description` rebuilds an equal scheme), and, if a stationary law
      exists, `has_prior = True` and `mode_prior_spectrum(phat_sq, lattice)`.
    """

    quadrature_nodes: int = DEFAULT_NODES
    quadrature_panels: int = DEFAULT_PANELS

    # to implement -----------------------------------------------------------------------
    @property
    def mass(self) -> float:
        raise NotImplementedError

    def mode_rates(self, t, phat_sq, lattice: Lattice):
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def mode_transition(self, start, t, phat_sq, lattice: Lattice):
        """Default: the kernel by composite Gauss-Legendre quadrature of the rates."""
        full = jnp.broadcast_shapes(start.shape, t.shape)
        shape = full[: len(full) - lattice.dim]
        dtype = phat_sq.dtype
        starts = jnp.broadcast_to(start, shape + (1,) * lattice.dim).reshape(-1)
        ends = jnp.broadcast_to(t, shape + (1,) * lattice.dim).reshape(-1)

        def one(s, e):
            def rates(times):
                return self.mode_rates(expand_time(times, lattice), phat_sq, lattice)

            return transition_by_quadrature(rates, s, e, dtype, self.quadrature_nodes, self.quadrature_panels)

        a, v = jax.vmap(one)(starts, ends)
        return a.reshape(shape + phat_sq.shape), v.reshape(shape + phat_sq.shape)

    # rates and kernels ------------------------------------------------------------------
    def rates(self, t, lattice: Lattice, dtype=jnp.float64, half: bool = True):
        """(beta_t(p), gamma_t(p)) on the half (or full) grid; shape `t.shape + grid`."""
        check_times(t)
        t = jnp.asarray(t, dtype)
        phat_sq = mode_grid(lattice, dtype, half)
        beta, gamma = self.mode_rates(expand_time(t, lattice), phat_sq, lattice)
        shape = t.shape + phat_sq.shape
        return jnp.broadcast_to(beta, shape), jnp.broadcast_to(gamma, shape)

    def transition(self, start, t, lattice: Lattice, dtype=jnp.float64, half: bool = True):
        """(a_{t|s}(p), v_{t|s}(p)), the kernel from time `start` to time `t` >= `start`.

        Times may be python floats or JAX arrays (broadcast together); the result has shape
        `broadcast(start, t).shape + grid`.
        """
        check_times(t, start)
        return _transition(self, jnp.asarray(start), jnp.asarray(t), lattice, jnp.dtype(dtype), bool(half))

    def kernel(self, t, lattice: Lattice, dtype=jnp.float64, half: bool = True):
        """(a_t(p), v_t(p)) from t = 0: a_t = exp(-int_0^t beta), v_t = int_0^t e^{-2 int_s^t beta} gamma_s ds."""
        return self.transition(0.0, t, lattice, dtype, half)

    # sampling and densities -------------------------------------------------------------
    def push_forward(self, key, phi0, t, lattice: Lattice, start=0.0) -> jnp.ndarray:
        """An exact sample of phi_t given phi_start = `phi0` (one rfftn/irfftn round trip).

        **Arguments:**

        - `key`: a JAX PRNG key.
        - `phi0`: real fields `(*batch, *lattice.shape)`; float32 or float64 (kept).
        - `t`: the target time, a scalar or an array of shape `batch` (one time per field).
        - `lattice`: the lattice.
        - `start`: the time of `phi0` (default 0, the UV); scalar or of shape `batch`.

        **Returns:** real array of the shape and dtype of `phi0`.
        """
        lattice.check_field(phi0)
        dtype = _field_dtype(phi0)
        check_times(t, start)
        phi0, t, start = jnp.asarray(phi0), jnp.asarray(t), jnp.asarray(start)
        batch = jnp.broadcast_shapes(phi0.shape[: phi0.ndim - lattice.dim], t.shape, start.shape)
        return _push_forward(self, key, phi0, t, start, lattice, batch)

    def log_transition_density(self, phi_t, phi0, t, lattice: Lattice, start=0.0) -> jnp.ndarray:
        """log p_{t|s}(phi_t | phi0), exact and normalized in position-space coordinates (t > start).

        **Returns:** array of the batch shape.
        """
        args = self._checked(phi_t, phi0, t, lattice, start)
        return _log_transition_density(self, *args, lattice)

    def conditional_score(self, phi_t, phi0, t, lattice: Lattice, start=0.0) -> jnp.ndarray:
        """grad_{phi_t} log p_{t|s}(phi_t | phi0) = -F^-1[eps^d (phi~_t - a phi~_0) / v], closed form.

        The regression target of denoising score matching [5.23]. **Returns:** shape of `phi_t`.
        """
        args = self._checked(phi_t, phi0, t, lattice, start)
        return _conditional_score(self, *args, lattice)

    @staticmethod
    def _checked(phi_t, phi0, t, lattice: Lattice, start):
        lattice.check_field(phi_t, "phi_t")
        lattice.check_field(phi0, "phi0")
        _field_dtype(phi_t)
        check_times(t, start)
        return jnp.asarray(phi_t), jnp.asarray(phi0), jnp.asarray(t), jnp.asarray(start)

    # the stationary law p_T, T -> infinity ----------------------------------------------
    has_prior: bool = False

    def no_prior_reason(self) -> str:
        return f"the scheme {self.describe().get('name')!r} has no known stationary law"

    def require_prior(self, purpose: str) -> None:
        """Refuse (`InvalidSchemeError`) a scheme without a stationary law for `purpose`, which
        needs p_T to generate from (every learned model: [5.25], [6.14], and CNFs [5.8])."""
        if not self.has_prior:
            raise InvalidSchemeError(
                f"{purpose} needs a scheme with a stationary law to generate from (p_T); "
                f"{self.describe().get('name')} with M = {self.mass:g} has none: use carosso with M > 0"
            )

    def mode_prior_spectrum(self, phat_sq, lattice: Lattice):
        raise InvalidSchemeError(self.no_prior_reason())

    def prior_spectrum(self, lattice: Lattice, dtype=jnp.float64, half: bool = True) -> jnp.ndarray:
        """G_inf(p) of the stationary law (the prior p_T of the reverse flow [5.25], [6.14])."""
        if not self.has_prior:
            raise InvalidSchemeError(self.no_prior_reason())
        return self.mode_prior_spectrum(mode_grid(lattice, dtype, half), lattice)

    def prior_sample(self, key, lattice: Lattice, batch_shape=(), dtype=jnp.float64) -> jnp.ndarray:
        """Exact samples `(*batch_shape, *lattice.shape)` of the stationary law."""
        return sample_gaussian_field(key, lattice, self.prior_spectrum(lattice, dtype), batch_shape, dtype)

    def prior_log_prob(self, phi, lattice: Lattice) -> jnp.ndarray:
        """Exact normalized log density of the stationary law; shape `batch`."""
        spectrum = self.prior_spectrum(lattice, _field_dtype(phi))
        return gaussian_field_log_prob(phi, lattice, spectrum)

    def prior_score(self, phi, lattice: Lattice) -> jnp.ndarray:
        """grad log p_inf(phi), closed form."""
        spectrum = self.prior_spectrum(lattice, _field_dtype(phi))
        return gaussian_field_score(phi, lattice, spectrum)

    # effective cutoff [7.3], [7.4] --------------------------------------------------------
    def cutoff_time(self, t):
        """The time entering [7.3] (a scheme with a speed factor s uses s t)."""
        return t

    def effective_cutoff(self, t, lattice: Lattice):
        """Lambda_t = min(sqrt(max(1/(2t) - M^2, 0)), Lambda_0), and Lambda_0 at t = 0 [7.3].

        Vectorized over `t` (numpy); returns a float for scalar `t`.
        """
        check_times(t)
        tau = np.asarray(self.cutoff_time(np.asarray(t, dtype=np.float64)), dtype=np.float64)
        inverse = np.divide(1.0, 2.0 * tau, out=np.full(tau.shape, np.inf), where=tau > 0)
        cutoff = np.minimum(np.sqrt(np.maximum(inverse - self.mass**2, 0.0)), lattice.cutoff)
        return float(cutoff) if cutoff.ndim == 0 else cutoff

    def r(self, t, lattice: Lattice):
        """r_t = Lambda_t / Lambda_0 [7.4]: 1 at t = 0, 0 once the cutoff has closed."""
        cutoff = np.asarray(self.effective_cutoff(t, lattice)) / lattice.cutoff
        return float(cutoff) if cutoff.ndim == 0 else cutoff


# jitted bodies: schemes and lattices are static pytrees, times are traced --------------------


@functools.partial(jax.jit, static_argnames=("dtype", "half"))
def _transition(scheme, start, t, lattice, dtype, half):
    start = start.astype(dtype)
    t = t.astype(dtype)
    phat_sq = mode_grid(lattice, dtype, half)
    a, v = scheme.mode_transition(expand_time(start, lattice), expand_time(t, lattice), phat_sq, lattice)
    shape = jnp.broadcast_shapes(start.shape, t.shape) + phat_sq.shape
    return jnp.broadcast_to(a, shape), jnp.broadcast_to(v, shape)


@functools.partial(jax.jit, static_argnames=("batch",))
def _push_forward(scheme, key, phi0, t, start, lattice, batch):
    # One fused pass between the two FFTs: the noise (threefry and erf^-1, `half_spectrum_noise_parts`) is
    # drawn inside this body and combined in real arithmetic, a Re phi~ + s Re z and
    # a Im phi~ + s Im z with s = sqrt(v / L^d), so no complex noise array is stored and read back
    # and no complex-by-complex product multiplies by a real kernel.
    dtype = phi0.dtype
    a, v = _transition(scheme, start, t, lattice, dtype, True)
    modes = lattice.rfourier(phi0)
    z_re, z_im = half_spectrum_noise_parts(key, lattice, batch, dtype)
    s = jnp.sqrt(v / lattice.volume)
    phi_t = jax.lax.complex(a * jnp.real(modes) + s * z_re, a * jnp.imag(modes) + s * z_im)
    return lattice.inverse_rfourier(phi_t).astype(dtype)


def _residual(scheme, phi_t, phi0, t, start, lattice):
    a, v = _transition(scheme, start, t, lattice, phi_t.dtype, True)
    modes0 = lattice.rfourier(phi0.astype(phi_t.dtype))
    residual = lattice.rfourier(phi_t) - as_complex(a, modes0) * modes0
    return residual, v


@jax.jit
def _log_transition_density(scheme, phi_t, phi0, t, start, lattice):
    residual, v = _residual(scheme, phi_t, phi0, t, start, lattice)
    return gaussian_modes_log_prob(residual, lattice, v)


@jax.jit
def _conditional_score(scheme, phi_t, phi0, t, start, lattice):
    residual, v = _residual(scheme, phi_t, phi0, t, start, lattice)
    return gaussian_modes_score(residual, lattice, v)
