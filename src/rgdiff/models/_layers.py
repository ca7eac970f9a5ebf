"""Small building blocks: a NumPy generator seeded from a JAX key, a plain MLP, odd site features.

Parameters are drawn on the host with NumPy (from a generator seeded by the JAX key, so models
are still a deterministic function of `key`): eager `jax.random` calls compile one kernel per
array shape and dtype, which made building a small model take seconds.
"""

from __future__ import annotations

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator determined by the JAX PRNG `key` (typed or raw uint32)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng([int(v) for v in np.asarray(data).ravel()])


def to_array(x: np.ndarray, dtype) -> jax.Array:
    """A host array as a JAX array of `dtype` (converted on the host: no compilation)."""
    return jnp.asarray(np.asarray(x).astype(dtype))


# sin and cos in float32 by Cody-Waite reduction modulo pi/2 (pi/2 split in three parts whose
# products with the quadrant number are exact in float32) and Cephes' sinf/cosf minimax polynomials
_PIO2_SPLIT = (np.float32(1.5703125), np.float32(4.837512969970703125e-4), np.float32(7.54978995489188216e-8))
_SIN_POLY = (np.float32(-1.6666654611e-1), np.float32(8.3321608736e-3), np.float32(-1.9515295891e-4))
_COS_POLY = (np.float32(4.166664568298827e-2), np.float32(-1.388731625493765e-3), np.float32(2.443315711809948e-5))


def sincos(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sin x, cos x), elementwise; in float32 without XLA's sine.

    XLA on a CPU evaluates float32 sin and cos one element at a time: 9-10 ns per element on
    the 2-core CI machine, against 0.5 ns for exp, so the sine features cost 2.7x the FFTs of a
    CNF evaluation at N = 32 (stop 28). Here both come from one range reduction and two
    polynomials, which XLA fuses and vectorizes: 1.9 ns per element for the pair, within
    1.0e-7 of the float64 values for |x| <= 200 (XLA's float32 sin: 3.3e-8; float32's spacing
    at 1 is 1.2e-7), degrading slowly beyond |x| ~ 1e4 where the reduction loses bits. Other
    dtypes use `jnp.sin` and `jnp.cos`.
    """
    if x.dtype != jnp.float32:
        return jnp.sin(x), jnp.cos(x)
    k = jnp.round(x * np.float32(2 / np.pi))
    r = x
    for part in _PIO2_SPLIT:
        r = r - k * part
    r2 = r * r
    s1, s2, s3 = _SIN_POLY
    c1, c2, c3 = _COS_POLY
    s = r + r * r2 * (s1 + r2 * (s2 + r2 * s3))
    c = np.float32(1) - np.float32(0.5) * r2 + r2 * r2 * (c1 + r2 * (c2 + r2 * c3))
    quadrant = k.astype(jnp.int32) & 3
    sin = jnp.where(quadrant == 0, s, jnp.where(quadrant == 1, c, jnp.where(quadrant == 2, -s, -c)))
    cos = jnp.where(quadrant == 0, c, jnp.where(quadrant == 1, -s, jnp.where(quadrant == 2, -c, s)))
    return sin, cos


def odd_sine_features(x: jax.Array, frequencies: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-site odd features F = (x, sin(omega_1 x), ..., sin(omega_K x)) and their derivatives F'(x).

    Shared by the kernel-on-features layers of `EFTScore` and `ContinuousFlow` (as in Gerdes et
    al.): odd features keep the layer Z2-equivariant, and F' gives its exact divergence (to the
    dtype's rounding: in float32 `sincos`'s cos is the derivative of its sin within 2e-7).

    **Returns:** `(F, F')`, each of shape `(K + 1, *x.shape)`.
    """
    w = frequencies.reshape((-1,) + (1,) * x.ndim)
    xs = x[None]
    sin, cos = sincos(w * xs)
    f = jnp.concatenate([xs, sin])
    df = jnp.concatenate([jnp.ones_like(xs), w * cos])
    return f, df


class MLP(eqx.Module):
    """x -> W_n silu(... silu(W_1 x + b_1) ...) + b_n, with an optional final SiLU.

    **Arguments:**

    - `sizes`: (in, hidden..., out).
    - `final_activation`: apply SiLU to the output too.
    - `zero_last`: start the last layer at zero (the MLP outputs 0 at initialization).
    - `dtype`, `rng`: parameter dtype and a NumPy generator (see `numpy_rng`).

    Weights use the usual fan-in uniform initialization U(-1/sqrt(in), 1/sqrt(in)).
    Acts on one vector of shape (in,); returns shape (out,).
    """

    weights: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    final_activation: bool = eqx.field(static=True)

    def __init__(self, sizes, *, final_activation: bool = False, zero_last: bool = False, dtype, rng):
        weights, biases = [], []
        pairs = list(itertools.pairwise(sizes))
        for i, (n_in, n_out) in enumerate(pairs):
            bound = 1.0 / math.sqrt(n_in)
            if zero_last and i == len(pairs) - 1:
                w, b = np.zeros((n_out, n_in)), np.zeros((n_out,))
            else:
                w = rng.uniform(-bound, bound, (n_out, n_in))
                b = rng.uniform(-bound, bound, (n_out,))
            weights.append(to_array(w, dtype))
            biases.append(to_array(b, dtype))
        self.weights = tuple(weights)
        self.biases = tuple(biases)
        self.final_activation = final_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = w @ x + b
            if i < last or self.final_activation:
                x = jax.nn.silu(x)
        return x
