"""A generic periodic convolutional score network (no exact divergence).

    s_theta(phi, t) = c_1 Delta phi + c_2 phi + c_3 phi^3 + rho * net(phi / sigma(t), t)

- sigma(t): constant (`field_scale`) or following the RG flow (`field_scale_flow`, as in
  `EFTScore`): sigma(t)^2 = sigma(0)^2 + sum_k c_k (exp(-2 r_k t) - 1).

- The optional fixed prior c = (c_1, c_2, c_3) (not trained; default 0) lets the network learn only
  a correction, e.g. to the UV score with c = `scales.phi4_couplings(theory)`.
- net: `num_layers` hidden layers of `channels` channels, then a 1-channel output layer. Each
  layer is a periodic convolution (circular padding by `jnp.pad(mode="wrap")` and
  `lax.conv_general_dilated`, channels-last layout) with a `kernel_size`^d stencil, plus a
  global term (the site-mean of the layer's input times a C_in x C_out matrix, so long-range /
  zero-mode information reaches every site), plus a bias and a time shift (a learned linear map
  of `time_mlp(h(t))`, added per channel); SiLU activations, residual connections between hidden
  layers. Stencil weights are shared within each orbit of the hypercubic group (sorted |offset|
  components), so the network is equivariant under translations, reflections and axis
  permutations of the periodic lattice. d = 1, 2, 3.
- With `z2_odd=True`, net(x) is replaced by (net(x) - net(-x)) / 2, so s(-phi) = -s(phi).
- The output layer starts at zero: at initialization the model equals the prior exactly.

It is an `AbstractScoreModel` without an exact divergence: likelihoods need an estimator (e.g.
Hutchinson) elsewhere.
"""

from __future__ import annotations

import math
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4
from rgdiff.models._checks import check_inputs, count, positive, resolve_dtype, triple
from rgdiff.models._errors import InvalidModelError
from rgdiff.models._layers import MLP, numpy_rng, to_array
from rgdiff.lattice.symmetry import stencil_orbits
from rgdiff.models.base import AbstractScoreModel
from rgdiff.models.eft import eft_basis
from rgdiff.models.embedding import TimeEmbedding
from rgdiff.models.scales import check_field_scale_flow, field_scale_at, phi4_couplings, phi4_field_scale
from rgdiff.models.scales import score_scale as _default_score_scale

_DIMENSION_NUMBERS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}


class ConvScore(AbstractScoreModel):
    """A translation-, reflection- and permutation-equivariant periodic conv net score model.

    **Arguments:**

    - `lattice`: the `Lattice` (d = 1, 2 or 3).
    - `time_scale`: T > 0, the end of the RG time interval (sets the time embedding).
    - `field_scale`: sigma(0) > 0; the network sees x = phi / sigma(t), which should be O(1)
      (`scales.phi4_field_scale(theory)`, or the rms of the training data).
    - `field_scale_flow`: [(c_k, r_k), ...], r_k >= 0: sigma(t)^2 = sigma(0)^2 +
      sum_k c_k (exp(-2 r_k t) - 1); default () keeps sigma constant (see `EFTScore`).
    - `score_scale`: rho > 0, the network's output scale; default `scales.score_scale(lattice)`
      = eps^(d/2-1).
    - `prior`: fixed couplings (c_1, c_2, c_3) of the untrained term c_1 Delta phi + c_2 phi +
      c_3 phi^3; default (0, 0, 0).
    - `channels`: hidden channels C.
    - `num_layers`: hidden convolution layers (>= 1), followed by the output layer.
    - `kernel_size`: odd stencil width (3: nearest neighbours and diagonals).
    - `num_time_basis`, `time_warp`: the `TimeEmbedding` (default warp T * Lambda_0^2).
    - `mlp_width`: width of the time MLP h(t) -> R^mlp_width (one hidden layer).
    - `z2_odd`: antisymmetrize the network in phi.
    - `dtype`: parameter dtype (default: JAX's default float); output is cast to `phi.dtype`.
    - `key`: a JAX PRNG key (keyword-only).

    **Shapes:** `model(phi, t)` takes `phi` of shape `lattice.shape` and a scalar `t`, and returns
    the score of shape `lattice.shape`; use `jax.vmap` for batches.
    """

    lattice: Lattice = eqx.field(static=True)
    time_scale: float = eqx.field(static=True)
    field_scale: float = eqx.field(static=True)
    field_scale_flow: tuple[tuple[float, float], ...] = eqx.field(static=True)
    field_scale_floor: float = eqx.field(static=True)
    score_scale: float = eqx.field(static=True)
    prior: tuple[float, float, float] = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    num_layers: int = eqx.field(static=True)
    kernel_size: int = eqx.field(static=True)
    mlp_width: int = eqx.field(static=True)
    z2_odd: bool = eqx.field(static=True)
    embedding: TimeEmbedding
    time_mlp: MLP
    time_proj: jax.Array
    conv_weights: tuple[jax.Array, ...]
    global_weights: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]

    def __init__(
        self,
        lattice: Lattice,
        *,
        time_scale: float,
        field_scale: float = 1.0,
        field_scale_flow=(),
        score_scale: float | None = None,
        prior: tuple[float, float, float] = (0.0, 0.0, 0.0),
        channels: int = 32,
        num_layers: int = 3,
        kernel_size: int = 3,
        num_time_basis: int = 16,
        time_warp: float | None = None,
        mlp_width: int = 32,
        z2_odd: bool = False,
        dtype=None,
        key: jax.Array,
    ):
        if not isinstance(lattice, Lattice):
            raise InvalidModelError(f"lattice must be a rgdiff Lattice, got {type(lattice).__name__}")
        if lattice.dim not in _DIMENSION_NUMBERS:
            raise InvalidModelError(f"ConvScore supports d = 1, 2, 3, got d = {lattice.dim}")
        dtype = resolve_dtype(dtype)
        self.lattice = lattice
        self.time_scale = positive("time_scale", time_scale)
        self.field_scale = positive("field_scale", field_scale)
        self.field_scale_flow, self.field_scale_floor = check_field_scale_flow(self.field_scale, field_scale_flow)
        self.score_scale = positive(
            "score_scale", _default_score_scale(lattice) if score_scale is None else score_scale
        )
        self.prior = triple("prior", prior)
        self.channels = count("channels", channels, 1)
        self.num_layers = count("num_layers", num_layers, 1)
        self.kernel_size = count("kernel_size", kernel_size, 1)
        if self.kernel_size % 2 != 1:
            raise InvalidModelError(f"kernel_size must be odd, got {kernel_size}")
        self.mlp_width = count("mlp_width", mlp_width, 1)
        if not isinstance(z2_odd, bool):
            raise InvalidModelError(f"z2_odd must be True or False, got {z2_odd!r}")
        self.z2_odd = z2_odd
        if time_warp is None:
            time_warp = self.time_scale * lattice.cutoff**2
        self.embedding = TimeEmbedding(self.time_scale, count("num_time_basis", num_time_basis, 2), time_warp)

        c = self.channels
        num_orbits, _ = stencil_orbits(lattice.dim, self.kernel_size)
        taps = self.kernel_size**lattice.dim
        rng = numpy_rng(key)
        self.time_mlp = MLP(
            (self.embedding.size, self.mlp_width, self.mlp_width), final_activation=True, dtype=dtype, rng=rng
        )
        self.time_proj = to_array(
            rng.standard_normal((self.num_layers, self.mlp_width, c)) / math.sqrt(self.mlp_width), dtype
        )
        conv, glob, bias = [], [], []
        for layer in range(self.num_layers):
            c_in = 1 if layer == 0 else c
            conv.append(to_array(rng.standard_normal((num_orbits, c_in, c)) / math.sqrt(c_in * taps), dtype))
            glob.append(to_array(0.5 * rng.standard_normal((c_in, c)) / math.sqrt(c_in), dtype))
            bias.append(to_array(np.zeros((c,)), dtype))
        conv.append(to_array(np.zeros((num_orbits, c, 1)), dtype))  # output layer starts at zero
        glob.append(to_array(np.zeros((c, 1)), dtype))
        bias.append(to_array(np.zeros((1,)), dtype))
        self.conv_weights = tuple(conv)
        self.global_weights = tuple(glob)
        self.biases = tuple(bias)

    @classmethod
    def from_theory(
        cls, theory: Phi4, *, time_scale: float, key: jax.Array, uv_prior: bool = False, **kwargs
    ) -> ConvScore:
        """A `ConvScore` scaled for `theory`: `field_scale = phi4_field_scale(theory)` and, with
        `uv_prior=True`, `prior = phi4_couplings(theory)` (start at the exact UV score), unless
        given in `kwargs` (the other constructor arguments)."""
        kwargs.setdefault("field_scale", phi4_field_scale(theory))
        if uv_prior:
            kwargs.setdefault("prior", phi4_couplings(theory))
        return cls(theory.lattice, time_scale=time_scale, key=key, **kwargs)

    @property
    def dtype(self):
        """The parameter dtype."""
        return self.time_proj.dtype

    def sigma(self, t: jax.Array) -> jax.Array:
        """The network's field scale sigma(t) (a scalar of t's dtype)."""
        return field_scale_at(t, self.field_scale, self.field_scale_flow, self.field_scale_floor)

    def _conv(self, h: jax.Array, weights: jax.Array) -> jax.Array:
        """Periodic convolution of h (B, *lattice, C_in) with the symmetric stencil -> (B, *lattice, C_out)."""
        d = self.lattice.dim
        _, index = stencil_orbits(d, self.kernel_size)
        kernel = weights[index]  # (k,)*d + (C_in, C_out)
        r = self.kernel_size // 2
        padded = jnp.pad(h, [(0, 0)] + [(r, r)] * d + [(0, 0)], mode="wrap")
        return lax.conv_general_dilated(
            padded, kernel, (1,) * d, "VALID", dimension_numbers=_DIMENSION_NUMBERS[d]
        )

    def _layer(self, h: jax.Array, i: int, shift: jax.Array | None) -> jax.Array:
        d = self.lattice.dim
        lattice_axes = tuple(range(1, d + 1))
        mean = jnp.mean(h, axis=lattice_axes, keepdims=True)
        out = self._conv(h, self.conv_weights[i]) + mean @ self.global_weights[i]
        bias = self.biases[i]
        if shift is not None:
            bias = bias + shift
        return out + bias.reshape((1,) * (d + 1) + (-1,))

    def _net(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """The network on a stack x of shape (B, *lattice) -> (B, *lattice)."""
        temb = self.time_mlp(self.embedding(t))
        h = x[..., None]
        for i in range(self.num_layers):
            a = jax.nn.silu(self._layer(h, i, temb @ self.time_proj[i]))
            h = a if i == 0 else h + a
        return self._layer(h, self.num_layers, None)[..., 0]

    def __call__(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        """**Arguments:**

        - `phi`: one configuration, shape `lattice.shape`.
        - `t`: a scalar RG time.

        **Returns:**

        s_theta(phi, t), shape `lattice.shape`, dtype of `phi`.
        """
        phi = check_inputs(self.lattice, phi, t, "ConvScore")
        p = phi.astype(self.dtype)
        t = jnp.asarray(t).astype(self.dtype)
        x = p / self.sigma(t)
        if self.z2_odd:
            both = self._net(jnp.stack([x, -x]), t)
            net = 0.5 * (both[0] - both[1])
        else:
            net = self._net(x[None], t)[0]
        out = self.score_scale * net
        # the fixed prior sum_i c_i g_i on the EFT basis [5.26]; zero couplings add nothing
        for c, g in zip(self.prior, eft_basis(p, self.lattice)):
            if c != 0.0:
                out = out + c * g
        return out.astype(phi.dtype)

    def describe(self) -> dict:
        """All hyperparameters (JSON-serializable); `build_model` rebuilds the skeleton."""
        return {
            "model": "score",
            "lattice": self.lattice.describe(),
            "time_scale": self.time_scale,
            "field_scale": self.field_scale,
            "field_scale_flow": [list(term) for term in self.field_scale_flow],
            "score_scale": self.score_scale,
            "prior": list(self.prior),
            "channels": self.channels,
            "num_layers": self.num_layers,
            "kernel_size": self.kernel_size,
            "num_time_basis": self.embedding.num_basis,
            "time_warp": self.embedding.warp,
            "mlp_width": self.mlp_width,
            "z2_odd": self.z2_odd,
            "dtype": jnp.dtype(self.dtype).name,
        }
