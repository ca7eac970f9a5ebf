"""A continuous normalizing flow whose time is the RG time t (paper [5.8], section 7; Gerdes et al. [4]).

The flow is the neural ODE d phi / dt = v_theta(phi, t), run from the scheme's exact prior p_T
(t = T) down to any t >= 0, with the exact log-density of p_t^theta along the way ::

    log p_t^theta(phi_t) = log p_T(phi_T) + int_t^T div v_theta(phi_r, r) dr.

Log-time. Near t = 0 the RG flow moves the UV modes at rates |phat|^2 + M^2 up to Lambda_0^2,
and at t ~ 1 only the IR modes move: uniform steps in t are either unstable or wasteful. The
network therefore lives in the log-time ::

    s(t) = log(1 + t / t0) / log(1 + T / t0) in [0, 1],   t0 = 1 / Lambda_0^2,

and defines g_theta(phi, s) = d phi / ds; v_theta = g_theta ds/dt is the same ODE written in t
(the reparametrization is exact, p_t^theta is the law at RG time t).

Vector field (Gerdes et al.): per-site features F_0(u) = u and F_k(u) = sin(omega_k u), k = 1..K,
of u = phi / sigma(s) (sigma a fixed, data-derived field scale; odd features keep phi -> -phi
equivariance), convolved over the whole periodic lattice with a kernel that depends only on the
class of the displacement under the hypercubic group (translations, reflections, axis
permutations) and on time through Gaussian bumps c_b(s) ::

    g_theta(phi, s)(x) = sigma(s) sum_k sum_y K_{s,k}(x - y) F_k(u(y)),
    K_{s,k}(r) = sum_b c_b(s) W[b, k, class(r)] / (n_class(r) sqrt(C)),

with n_c the size of class c and C the number of classes (`class_normalization`).

The convolution is one rfftn per feature and one irfftn. Only K_{s,k}(0) touches the diagonal of
the Jacobian, so the divergence is exact and costs O(V x K) ::

    div_phi g = sum_x sum_k K_{s,k}(0) F_k'(u(x)).

W starts at zero: the flow is the identity at initialization (p_t^theta = p_T for all t).
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.theory.gaussian import as_complex
from rgdiff.lattice.geometry import Lattice
from rgdiff.lattice.symmetry import lattice_orbits
from rgdiff.models._errors import InvalidModelError
from rgdiff.models._layers import odd_sine_features
from rgdiff.models.base import AbstractVelocityField
from rgdiff.models.embedding import gaussian_time_basis
from rgdiff.rg.time import LogTime


@functools.lru_cache(maxsize=16)
def class_normalization(lattice: Lattice) -> np.ndarray:
    """1 / (n_c sqrt(C)) per class c (n_c displacements in the class, C classes).

    The kernel is K(r) = W[class(r)] / (n_c sqrt(C)): a weight moves the kernel's spectrum by at
    most its own change / sqrt(C) however large the class, so one optimizer step of size lr
    changes the flow's rates by O(lr sqrt(C)) on any lattice (raw class weights would move the
    zero mode's rate by lr V).
    """
    n, classes = lattice_orbits(lattice.dim, lattice.size)
    counts = np.bincount(classes.reshape(-1), minlength=n).astype(np.float64)
    return 1.0 / (counts * math.sqrt(n))


@functools.lru_cache(maxsize=16)
def class_spectra(lattice: Lattice) -> np.ndarray:
    """rfftn of the normalized indicator of each displacement class, shape (classes, *half grid); real.

    Each class is closed under r -> -r, so its transform is real; the kernel with weights W_c has
    spectrum sum_c W_c class_spectra[c] (no FFT of the kernel at run time).
    """
    n, classes = lattice_orbits(lattice.dim, lattice.size)
    onehot = (classes[None] == np.arange(n).reshape((-1,) + (1,) * lattice.dim)).astype(np.float64)
    onehot *= class_normalization(lattice).reshape((-1,) + (1,) * lattice.dim)
    return np.ascontiguousarray(np.fft.rfftn(onehot, axes=tuple(range(1, lattice.dim + 1))).real)


class ContinuousFlow(AbstractVelocityField):
    """The equivariant CNF vector field g_theta(phi, s) = d phi / ds, for ONE configuration.

    **Arguments:**

    - `lattice`: the `Lattice`.
    - `horizon`: T > 0, the RG time where the flow starts from the scheme's prior.
    - `frequencies`: K, the number of sine features (besides phi itself), >= 0.
    - `time_bumps`: B >= 1, the number of Gaussian time bumps c_b(s).
    - `time_floor`: t0 > 0 of the log-time (default 1 / Lambda_0^2).
    - `field_scale`: sigma(s) as a tuple of values on `len(field_scale)` equally spaced nodes of
      s in [0, 1] (linear interpolation; one value = constant). Default (1.0,).
    - `key`: a JAX PRNG key (keyword-only; the weights start at zero, the key is unused but kept
      for the models' common signature).

    **Methods:** `velocity(phi, s)` -> shape `lattice.shape`; `divergence(phi, s)` -> scalar;
    `on_lattice(lattice)` -> the same flow on a larger lattice of the same spacing; `t_of_s`,
    `s_of_t`; `describe()`.
    """

    lattice: Lattice = eqx.field(static=True)
    horizon: float = eqx.field(static=True)
    time_floor: float = eqx.field(static=True)
    field_scale: tuple = eqx.field(static=True)
    frequencies: jax.Array
    weights: jax.Array

    def __init__(self, lattice: Lattice, horizon: float, frequencies: int = 6, time_bumps: int = 8,
                 time_floor: float | None = None, field_scale=(1.0,), *, key: jax.Array | None = None):
        if not isinstance(lattice, Lattice):
            raise InvalidModelError(f"lattice must be a Lattice, got {type(lattice).__name__}")
        horizon = float(horizon)
        if not math.isfinite(horizon) or horizon <= 0:
            raise InvalidModelError(f"the flow's horizon T must be a finite time > 0, got {horizon}")
        if isinstance(frequencies, bool) or int(frequencies) != frequencies or frequencies < 0:
            raise InvalidModelError(f"frequencies must be an integer >= 0, got {frequencies!r}")
        if isinstance(time_bumps, bool) or int(time_bumps) != time_bumps or time_bumps < 1:
            raise InvalidModelError(f"time_bumps must be an integer >= 1, got {time_bumps!r}")
        t0 = 1.0 / lattice.cutoff**2 if time_floor is None else float(time_floor)
        if not math.isfinite(t0) or t0 <= 0:
            raise InvalidModelError(f"time_floor must be > 0, got {time_floor}")
        scale = tuple(float(x) for x in np.atleast_1d(np.asarray(field_scale, dtype=np.float64)))
        if not scale or not all(math.isfinite(x) and x > 0 for x in scale):
            raise InvalidModelError(f"field_scale must be positive finite numbers, got {field_scale!r}")
        self.lattice = lattice
        self.horizon = horizon
        self.time_floor = t0
        self.field_scale = scale
        k = int(frequencies)
        # spread over the scale of u = phi / sigma ~ 1; learned
        self.frequencies = jnp.linspace(0.5, 3.0, k) if k else jnp.zeros((0,))
        n_classes, _ = lattice_orbits(lattice.dim, lattice.size)
        self.weights = jnp.zeros((int(time_bumps), k + 1, n_classes))

    # description ----------------------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "model": "cnf",
            "lattice": self.lattice.describe(),
            "horizon": self.horizon,
            "frequencies": int(self.frequencies.shape[0]),
            "time_bumps": int(self.weights.shape[0]),
            "time_floor": self.time_floor,
            "field_scale": list(self.field_scale),
        }

    # volume transfer ------------------------------------------------------------------------------
    def on_lattice(self, lattice: Lattice) -> "ContinuousFlow":
        """The same flow on a larger lattice of the same spacing (the transfer of Gerdes et al. [4]).

        The vector field is a convolution whose kernel K_{s,k}(r) is learned per displacement
        class, so a flow trained on a small, cheap lattice is also a flow on a large one: the
        new kernel is the old one at every displacement the old lattice holds (|r_i| <= N_old / 2
        for all i) and zero beyond. A displacement with |r_i| = N_old / 2 is one site of the old
        lattice but two of the new (+r_i and -r_i), so its weight is shared between them and the
        kernel's sum over r, the zero mode's rate, is unchanged. The infrared is still that of
        the small volume and needs training at the new size (benchmark line, N = 20, reverse KL:
        150 steps at N = 8 and 300 at N = 20 gave the IMH acceptance and tau_int(|M|) of 300
        steps at N = 20 alone, 0.50 and 1.6 +- 0.2 against 0.49 and 1.7 +- 0.2; 300 at N = 8 and
        100 at N = 20 gave 0.50 but tau_int 3.8 +- 0.7). Time, field scale and sine
        frequencies are kept. Raises `InvalidModelError` unless `lattice` has the same dimension
        and spacing and at least as many sites per side.
        """
        old = self.lattice
        if not isinstance(lattice, Lattice) or lattice.dim != old.dim or lattice.size < old.size \
                or not math.isclose(lattice.spacing, old.spacing, rel_tol=1e-12):
            raise InvalidModelError(f"a flow on {old.describe()} moves only to a lattice of the same dimension and "
                                    f"spacing with at least {old.size} sites per side, got "
                                    f"{lattice.describe() if isinstance(lattice, Lattice) else lattice!r}")
        n_old, classes_old = lattice_orbits(old.dim, old.size)
        n_new, classes_new = lattice_orbits(lattice.dim, lattice.size)
        norm_old, norm_new = class_normalization(old), class_normalization(lattice)
        # K_new(r) = K_old(r) / shared(r) in class weights: W_new = W_old @ transfer
        transfer = np.zeros((n_old, n_new))
        for c, site in zip(*np.unique(classes_new.reshape(-1), return_index=True)):
            r = np.unravel_index(site, lattice.shape)
            comp = np.minimum(r, lattice.size - np.asarray(r))
            if np.any(2 * comp > old.size):
                continue
            shared = 2.0 ** np.count_nonzero(2 * comp == old.size)
            transfer[classes_old[tuple(comp)], c] = norm_old[classes_old[tuple(comp)]] / (norm_new[c] * shared)
        weights = jnp.tensordot(self.weights, jnp.asarray(transfer, self.weights.dtype), axes=1)
        moved = ContinuousFlow(lattice, self.horizon, self.frequencies.shape[0], self.weights.shape[0], self.time_floor,
                               self.field_scale)
        return eqx.tree_at(lambda f: (f.frequencies, f.weights), moved, (self.frequencies, weights))

    # time --------------------------------------------------------------------------------------
    @property
    def log_time(self) -> LogTime:
        """The log-time s(t) = log(1 + t / t0) / log(1 + T / t0) (`rgdiff.rg.LogTime`)."""
        return LogTime(self.horizon, self.time_floor)

    @property
    def log_span(self) -> float:
        """Lambda = log(1 + T / t0): s = log(1 + t / t0) / Lambda."""
        return self.log_time.log_span

    def s_of_t(self, t):
        return self.log_time.s_of_t(t)

    def t_of_s(self, s):
        return self.log_time.t_of_s(s)

    def time_basis(self, s) -> jax.Array:
        """c_b(s): B Gaussian bumps centred on an even grid of [0, 1], width the grid spacing."""
        return gaussian_time_basis(s, self.weights.shape[0], self.weights.dtype)

    def scale(self, s) -> jax.Array:
        values = jnp.asarray(self.field_scale, dtype=self.weights.dtype)
        if values.shape[0] == 1:
            return values[0]
        nodes = jnp.linspace(0.0, 1.0, values.shape[0], dtype=self.weights.dtype)
        return jnp.interp(s, nodes, values)

    # the vector field ---------------------------------------------------------------------------
    def kernels(self, s) -> jax.Array:
        """K_{s,k}(r) in position space, shape (K + 1, *lattice.shape)."""
        _, classes = lattice_orbits(self.lattice.dim, self.lattice.size)
        w = jnp.tensordot(self.time_basis(s), self.weights, axes=1)  # (K + 1, classes)
        return (w * jnp.asarray(class_normalization(self.lattice), w.dtype))[:, classes]

    def velocity(self, phi: jax.Array, s: jax.Array) -> jax.Array:
        """g_theta(phi, s) = d phi / ds, shape `lattice.shape`."""
        axes = self.lattice.axes
        sigma = self.scale(s)
        feats, _ = odd_sine_features(phi / sigma, self.frequencies)
        w = jnp.tensordot(self.time_basis(s), self.weights, axes=1)  # (K + 1, classes)
        khat = jnp.tensordot(w, jnp.asarray(class_spectra(self.lattice), w.dtype), axes=1)
        fhat = jnp.fft.rfftn(feats, axes=axes)
        out = jnp.fft.irfftn(jnp.sum(as_complex(khat, fhat) * fhat, axis=0), s=self.lattice.shape, axes=axes)
        return (sigma * out).astype(phi.dtype)

    def divergence(self, phi: jax.Array, s: jax.Array) -> jax.Array:
        """div_phi g_theta(phi, s) = sum_x sum_k K_{s,k}(0) F_k'(u(x)) (exact, O(V x K))."""
        sigma = self.scale(s)
        _, dfeats = odd_sine_features(phi / sigma, self.frequencies)
        centre_norm = jnp.asarray(class_normalization(self.lattice)[0], self.weights.dtype)
        centre = jnp.tensordot(self.time_basis(s), self.weights[:, :, 0], axes=1) * centre_norm
        return jnp.sum(centre.reshape((-1,) + (1,) * self.lattice.dim) * dfeats).astype(phi.dtype)

    def __call__(self, phi: jax.Array, s: jax.Array) -> jax.Array:
        return self.velocity(phi, s)
