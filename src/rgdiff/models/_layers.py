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


def odd_sine_features(x: jax.Array, frequencies: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-site odd features F = (x, sin(omega_1 x), ..., sin(omega_K x)) and their derivatives F'(x).

    Shared by the kernel-on-features layers of `EFTScore` and `ContinuousFlow` (as in Gerdes et
    al.): odd features keep the layer Z2-equivariant, and F' gives its exact divergence.

    **Returns:** `(F, F')`, each of shape `(K + 1, *x.shape)`.
    """
    w = frequencies.reshape((-1,) + (1,) * x.ndim)
    xs = x[None]
    f = jnp.concatenate([xs, jnp.sin(w * xs)])
    df = jnp.concatenate([jnp.ones_like(xs), w * jnp.cos(w * xs)])
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
