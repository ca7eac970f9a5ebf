"""Translation-invariant Gaussian fields on the lattice, given their continuum-normalized spectrum.

A real, translation-invariant Gaussian field with mean mu(n) is fixed by its spectrum ::

    G(p) = L^d < |phi~(p) - mu~(p)|^2 >,      phi~ = fftn(phi) / N^d   [4.26],

the normalization of the conventions page (two-point function [7.5]): the free field of mass
squared m2 has G(p) = 1 / (|phat|^2 + m2) [7.2]. All functions take G on the `rfftn` half grid
(shape `lattice.shape[:-1] + (N//2 + 1,)`), and it must be even, G(p) = G(-p), and positive.

Facts used below (C is the position-space covariance, V = N^d, eps^d = L^d / V):

- C is circulant with eigenvalue G(p) / eps^d on the plane wave of momentum p, so
  (phi - mu)^T C^-1 (phi - mu) = L^d sum_p |phi~(p) - mu~(p)|^2 / G(p), and
  log det(2 pi C) = sum_p log(2 pi G(p) / eps^d). This is the exact density of phi(n) itself:
  the Jacobian between phi(n) and the independent real Fourier coordinates is already in it.
- grad log p = -C^-1 (phi - mu) is the Fourier multiplier -eps^d / G(p).
- Exact samples: independent modes. A pair {p, -p} gets one complex normal number with real and
  imaginary parts of variance G / (2 L^d); a self-conjugate mode p = -p (mod N) gets one real
  normal number of variance G / L^d.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidTheoryError, require_finite
from rgdiff.lattice.geometry import Lattice

__all__ = [
    "as_complex",
    "colour_half_spectrum_noise",
    "free_field_spectrum",
    "gaussian_field_log_prob",
    "gaussian_field_score",
    "gaussian_modes_log_prob",
    "gaussian_modes_score",
    "half_spectrum_noise_parts",
    "noise_key_pair",
    "sample_gaussian_field",
    "standard_half_spectrum_noise",
    "two_point_function",
    "unit_complex_normal",
]


def as_complex(multiplier, modes):
    """A real Fourier multiplier cast to the complex dtype of `modes` (strict dtype promotion)."""
    return jnp.asarray(multiplier).astype(jnp.asarray(modes).dtype)


def _reflect_leading_axes(z: jnp.ndarray, lattice: Lattice) -> jnp.ndarray:
    """z(p) -> z(-p mod N) along every lattice axis except the last."""
    for ax in lattice.axes[:-1]:
        z = jnp.roll(jnp.flip(z, axis=ax), 1, axis=ax)
    return z


MAX_NOISE_HASHES = 2**32  # the threefry counter is one uint32 word
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 hash (20 rounds; Salmon et al. 2011), bitwise `jax.extend.random.threefry_2x32`.

    Written out in elementwise uint32 arithmetic so that XLA fuses it with whatever consumes the
    words (JAX's CPU lowering of the same hash is a rolled loop that stores both words to memory
    after every four rounds). Integer arithmetic: the same bits on every backend.
    """
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def noise_key_pair(key) -> jnp.ndarray:
    """The threefry key pair (uint32[2]) behind all Gaussian noise of the package, from any JAX
    PRNG key (typed, of any implementation, or a raw legacy uint32 key) by one draw of two words.

    The same key always gives the same pair, hence the same noise: a run resumed from a stored
    key draws what the uninterrupted run draws.
    """
    return jax.random.bits(key, (2,), jnp.uint32)


def _words(pair, counter, lane: int):
    """The two uint32 words of the threefry hash of the counters (counter, lane)."""
    return _threefry2x32(pair[0], pair[1], counter, jnp.full(counter.shape, lane, jnp.uint32))


def _symmetric_unit(words, dtype) -> jnp.ndarray:
    """Uniform numbers on the symmetric midpoint grid of (-1, 1), from one (float32) or two
    (float64) uint32 words per number (`words` has them on its last axis).

    |v| = (m + 1/2) 2^-b with m a b-bit integer (b = 23 in float32, 52 in float64, exact in the
    dtype) and the sign from an independent bit, so v is exactly symmetric, never +-1, and
    |v| <= 1 - 2^-(b+1).
    """
    if dtype == jnp.float64:
        hi, lo = words[..., 0], words[..., 1]
        m = hi.astype(dtype) * np.asarray(2.0**20, dtype) + (lo >> 12).astype(dtype)
        bits, sign_word = 52, lo
    else:
        w = words[..., 0]
        m, bits, sign_word = (w >> 9).astype(dtype), 23, w
    magnitude = (m + np.asarray(0.5, dtype)) * np.asarray(2.0**-bits, dtype)
    return jnp.where((sign_word & 1) == 1, -magnitude, magnitude)


def _complex_normal_at(pair, counter, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(Re z, Im z) of the standard complex normal number at each counter (elementwise)."""
    w0, w1 = _words(pair, counter, 0)
    if dtype == jnp.float64:
        v0, v1 = _words(pair, counter, 1)
        w0, w1 = jnp.stack([w0, v0], -1), jnp.stack([w1, v1], -1)
    else:
        w0, w1 = w0[..., None], w1[..., None]
    return jax.lax.erf_inv(_symmetric_unit(w0, dtype)), jax.lax.erf_inv(_symmetric_unit(w1, dtype))


def _counters(shape: tuple[int, ...]) -> jnp.ndarray:
    count = math.prod(shape)
    if count > MAX_NOISE_HASHES:
        raise ValueError(f"one noise draw is limited to {MAX_NOISE_HASHES} numbers, asked for {count}: split the batch")
    return jax.lax.iota(jnp.uint32, count).reshape(shape)


def unit_complex_normal(key, shape: tuple[int, ...], dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(Re z, Im z) of standard complex normal numbers: independent N(0, 1/2) parts, E|z|^2 = 1.

    The number with flat index c is a function of (key, c) alone: the threefry-2x32 hash
    (`_threefry2x32`) of the counter (c, 0) under `noise_key_pair(key)`, both 32-bit outputs
    used (and of (c, 1) too in float64). Each part is erf^-1(v) with v uniform on (-1, 1)
    (`_symmetric_unit`): P(erf^-1(v) < x) = (1 + erf(x)) / 2 is the law N(0, 1/2). The grid of v
    truncates the tails at |part| <= erf^-1(1 - 2^-24) = 3.9 (5.5 standard deviations) in float32
    and beyond any double-precision relevance in float64. Integer hashing: the same numbers on
    every backend, independent of `jax_enable_x64`.
    """
    return _complex_normal_at(noise_key_pair(key), _counters(tuple(shape)), jnp.dtype(dtype))


def standard_half_spectrum_noise(key, lattice: Lattice, batch_shape=(), dtype=jnp.float64) -> jnp.ndarray:
    """Unit-variance Hermitian noise on the `rfftn` half grid.

    Each pair {p, -p} carries one complex number with independent real and imaginary parts of
    variance 1/2 (so E|z|^2 = 1); each self-conjugate mode p = -p (mod N) carries a real number of
    variance 1. The half grid stores both p and -p on the planes q = 0 and q = N/2 of the last
    axis; there the two entries are made exact complex conjugates, so the array is the half
    spectrum of a real field and `irfftn` inverts `rfftn` on it without silently projecting.
    The numbers come from `unit_complex_normal` (`noise_words`): the same key gives the same
    noise, on every backend.

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `lattice`: the lattice.
    - `batch_shape`: leading batch axes.
    - `dtype`: the real dtype; the result has the matching complex dtype.

    **Returns:** complex array of shape `batch_shape + lattice.shape[:-1] + (N//2 + 1,)`.
    """
    return _standard_half_spectrum_noise(key, lattice, tuple(batch_shape), jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("batch_shape", "dtype"))
def _standard_half_spectrum_noise(key, lattice, batch_shape, dtype):
    return jax.lax.complex(*half_spectrum_noise_parts(key, lattice, batch_shape, dtype))


def half_spectrum_noise_parts(key, lattice: Lattice, batch_shape: tuple[int, ...], dtype):
    """(Re z, Im z) of `standard_half_spectrum_noise`, for callers that fuse the noise into their
    own jitted arithmetic (real parts: no complex-by-complex products)."""
    re, im = unit_complex_normal(key, tuple(batch_shape) + lattice.half_shape, dtype)
    # On the stored-twice planes, (z(p) + conj z(-p)) / sqrt 2 keeps variance 1/2 per part for
    # pairs and gives a real number of variance 1 where p = -p. Only those (at most 2) planes are
    # reflected: symmetrizing the whole array cost four extra passes over memory (rgdiff bench).
    # (Recomputing the planes from reflected counters and concatenating, so that everything is
    # one fused loop, measured 3-7x slower on the CPU: the fused loop no longer vectorizes.)
    planes_idx = np.flatnonzero(lattice.self_conjugate_planes())
    scale = np.asarray(math.sqrt(0.5), dtype)
    re_p, im_p = re[..., planes_idx], im[..., planes_idx]
    re = re.at[..., planes_idx].set((re_p + _reflect_leading_axes(re_p, lattice)) * scale)
    im = im.at[..., planes_idx].set((im_p - _reflect_leading_axes(im_p, lattice)) * scale)
    return re, im


def sample_gaussian_field(key, lattice: Lattice, spectrum_half, batch_shape=(), dtype=jnp.float64) -> jnp.ndarray:
    """Exact samples of the zero-mean real Gaussian field with spectrum G(p) = L^d <|phi~(p)|^2>.

    Noise is drawn directly on the `rfftn` half grid (see `standard_half_spectrum_noise`),
    multiplied by sqrt(G / L^d) and sent through one `irfftn`.

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `lattice`: the lattice.
    - `spectrum_half`: G on the half grid, broadcastable to `(*batch, *half_grid)`; even in p.
    - `batch_shape`: leading batch axes (broadcast with any batch axes of `spectrum_half`).
    - `dtype`: real dtype of the samples.

    **Returns:** real array of shape `(*batch, *lattice.shape)`.
    """
    spectrum_half = jnp.asarray(spectrum_half)
    extra = spectrum_half.shape[: max(spectrum_half.ndim - lattice.dim, 0)]
    batch = jnp.broadcast_shapes(tuple(batch_shape), extra)
    # the noise is compiled once per (lattice, batch, dtype) and shared by every spectrum and scheme
    z = standard_half_spectrum_noise(key, lattice, batch, dtype)
    return colour_half_spectrum_noise(z, lattice, spectrum_half)


@jax.jit
def colour_half_spectrum_noise(z, lattice: Lattice, spectrum_half) -> jnp.ndarray:
    """The real field F^-1[sqrt(G / L^d) z] from unit Hermitian half-spectrum noise z."""
    dtype = jnp.real(z).dtype
    amplitude = jnp.sqrt(jnp.asarray(spectrum_half).astype(dtype) / lattice.volume)
    return lattice.inverse_rfourier(as_complex(amplitude, z) * z).astype(dtype)


def _log_normalizer_weights(lattice: Lattice, dtype) -> jnp.ndarray:
    return jnp.asarray(lattice.half_multiplicity(), dtype)


@jax.jit
def gaussian_modes_log_prob(residual_half, lattice: Lattice, spectrum_half) -> jnp.ndarray:
    """log N(phi; mu, C) from the half-grid residual r~ = phi~ - mu~ (position-space density).

    log p = -1/2 sum_p [ L^d |r~(p)|^2 / G(p) + log(2 pi G(p) / eps^d) ], the sum over the full
    grid, evaluated on the half grid with `lattice.half_multiplicity()` weights.

    **Returns:** array of the batch shape of the broadcast inputs.
    """
    dtype = jnp.real(residual_half).dtype
    spectrum_half = jnp.asarray(spectrum_half, dtype)
    weights = _log_normalizer_weights(lattice, dtype)
    eps_d = lattice.spacing**lattice.dim
    quadratic = lattice.volume * jnp.abs(residual_half) ** 2 / spectrum_half
    log_det = jnp.log((2.0 * math.pi / eps_d) * spectrum_half)
    terms = weights * (quadratic + log_det)
    return -0.5 * jnp.sum(terms, axis=lattice.axes)


@jax.jit
def gaussian_modes_score(residual_half, lattice: Lattice, spectrum_half) -> jnp.ndarray:
    """grad_phi log N(phi; mu, C) = -C^-1 (phi - mu) from the half-grid residual r~ = phi~ - mu~.

    C^-1 is the Fourier multiplier eps^d / G(p), so the score is -F^-1[eps^d r~ / G].

    **Returns:** real array of shape `(*batch, *lattice.shape)`.
    """
    dtype = jnp.real(residual_half).dtype
    spectrum_half = jnp.asarray(spectrum_half, dtype)
    eps_d = lattice.spacing**lattice.dim
    return -lattice.inverse_rfourier(as_complex(eps_d / spectrum_half, residual_half) * residual_half).astype(dtype)


@jax.jit
def _field_log_prob(phi, lattice, spectrum_half, mean):
    residual = lattice.rfourier(phi if mean is None else phi - mean)
    return gaussian_modes_log_prob(residual, lattice, spectrum_half)


@jax.jit
def _field_score(phi, lattice, spectrum_half, mean):
    residual = lattice.rfourier(phi if mean is None else phi - mean)
    return gaussian_modes_score(residual, lattice, spectrum_half)


def gaussian_field_log_prob(phi, lattice: Lattice, spectrum_half, mean=None) -> jnp.ndarray:
    """Exact normalized log density of a real field phi(n) under the Gaussian with spectrum G.

    **Arguments:**

    - `phi`: real array `(*batch, *lattice.shape)`.
    - `lattice`: the lattice.
    - `spectrum_half`: G(p) = L^d <|phi~(p) - mu~(p)|^2> on the half grid (broadcastable), > 0.
    - `mean`: optional mean field mu(n), broadcastable to `phi`.

    **Returns:** array of shape `batch`.
    """
    lattice.check_field(phi)
    return _field_log_prob(jnp.asarray(phi), lattice, jnp.asarray(spectrum_half), mean)


def gaussian_field_score(phi, lattice: Lattice, spectrum_half, mean=None) -> jnp.ndarray:
    """grad_phi of `gaussian_field_log_prob`, in closed form: -F^-1[eps^d (phi~ - mu~) / G].

    **Returns:** real array of the shape of `phi`.
    """
    lattice.check_field(phi)
    return _field_score(jnp.asarray(phi), lattice, jnp.asarray(spectrum_half), mean)


def two_point_function(lattice: Lattice, spectrum_half) -> jnp.ndarray:
    """C(r) = <phi(n) phi(n + r)> (connected) of the field with spectrum G, for every r.

    C(r) = L^-d sum_p G(p) exp(2 pi i p.r / N), i.e. the inverse transform of G / L^d.

    **Returns:** real array `(*batch, *lattice.shape)`, indexed by the separation r.
    """
    spectrum_half = jnp.asarray(spectrum_half)
    return lattice.inverse_rfourier(spectrum_half / lattice.volume)


def free_field_spectrum(lattice: Lattice, m2: float, dtype=jnp.float64, half: bool = True) -> jnp.ndarray:
    """G(p) = 1 / (|phat|^2 + m2), the free field of mass squared m2 [7.2] (needs m2 > 0).

    The one closed form of the free propagator (`Phi4.free_propagator` is this on the full grid);
    on the `rfftn` half grid by default, on the full FFT grid with `half=False`.
    """
    m2 = require_finite("m2", m2)
    if m2 <= 0:
        raise InvalidTheoryError(f"the free field needs m2 > 0 (the zero mode is not normalizable), got {m2}")
    phat_sq = lattice.phat_sq_half(dtype) if half else lattice.phat_sq(dtype)
    return 1.0 / (phat_sq + m2)
