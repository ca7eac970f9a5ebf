"""The EFT-structured score model of paper [5.26], with an exact divergence.

    s_theta(phi, t) = f_1(t) Delta phi + f_2(t) phi + f_3(t) phi^3 + rho * r_perp(phi / sigma(t), t)

- g = (g_1, g_2, g_3) = (Delta phi, phi, phi^3): the phi-gradients of the kinetic, mass and quartic
  terms of the effective action (Delta the lattice Laplacian in physical units, eps^-2).
- sigma(t): the field scale the residual normalizes by; constant (`field_scale`) or following
  the RG flow, sigma(t)^2 = sigma(0)^2 + sum_k c_k (exp(-2 r_k t) - 1) (`field_scale_flow`; e.g.
  the exact per-site variance of p_t, see `scales.field_scale_flow_terms`), so x stays O(1) while
  the flow shrinks the field by orders of magnitude (the broken phase's zero mode).
- f_i(t) = f_init_i + s_i(t) * MLP(h(t))_i: the learned running couplings, with h(t) the
  `TimeEmbedding` and s_i(t) = s_i (sigma(0) / sigma(t))^k_i (`coupling_scale_powers` k, default
  (0, 0, 2): a change of f_3 of size s_3(t) moves the score at the field scale sigma(t) as much as
  a change s_2 of the mass term, at every t). At t = 0 the exact UV score eps^d (Delta phi - m2 phi - lam/6 phi^3) has
  f = (eps^d, -eps^d m2, -eps^d lam/6) (`scales.phi4_couplings`), so f_i(0) estimate the bare
  couplings, and `effective_parameters(t)` reads them as (Z_t, m2_t, lam_t).
- r: a "kernel-on-features" layer (as in Gerdes et al., continuous-flow-lft). With x = phi/sigma
  and per-site features F_k(x) = (x, sin(omega_j x), tanh(omega'_j x)) with learned frequencies,

      r(n) = sum_k sum_y K_{t,k}(n - y) F_k(x(y)),

  a full-lattice periodic convolution (done with rfftn). K_{t,k}(n) depends on the displacement n
  only through its hypercubic orbit (sorted |minimum-image| components), so r is equivariant
  under translations, reflections and axis permutations; its value on each orbit is a linear map
  of h(t). All features are odd, so s(-phi) = -s(phi) (the Z2 symmetry of phi^4 and of every
  linear RG scheme).
- r_perp = r - sum_i c_i(x) ghat_i(x): r projected orthogonally to span{g_1, g_2, g_3} per
  configuration, with ghat = (Delta_lat x, x, x^3) (the same span, normalized to O(1);
  Delta_lat = eps^2 Delta) and c = G^-1 <ghat, r> from the 3x3 Gram matrix G. G is solved in
  correlation form D^-1 G D^-1 + ridge * 1, D = sqrt(diag G + V eps_mach^2), by an explicit 3x3
  Cholesky factorization followed by one step of iterative refinement. The ridge (default
  1e-10, at least 100 eps_mach so float32 round-off cannot break positivity) makes a degenerate
  span (phi = 0; a constant phi, where Delta phi = 0 and phi^3 || phi) give finite, bounded
  coefficients and no NaN; with the refinement step the solve along an eigendirection of
  eigenvalue l is exact up to a relative (ridge / (l + ridge))^2, so in float64
  <g_i, r_perp> / (|g_i| |r_perp|) stays at round-off level even in the broken phase, where
  phi ~ const makes phi and phi^3 nearly parallel.

Zero mode (`zero_mode_features` > 0): a constraint effective potential of the magnetization
M = mean_n phi(n),

    s += (1/V) g(M, t) (on every site),     g = (sigma_M(t) / sigma_M(inf)^2) sum_k c_k(t) F_k(M / sigma_M(t)),

with F = (x, tanh(omega_k x)) (odd, learned omega_k) and c(t) a linear map (zero at
initialization) of a time embedding warped at the zero mode's own relaxation rate. g is the
derivative along the uniform direction of an added log-density -V U_t(M): the part of the zero
mode's law that a local quartic cannot give. In a broken phase the flowed zero mode is a mixture
of two narrow peaks at +-a_t(0) <|M|>, whose score has a steep repulsion between the peaks that a
cubic f_2 M + f_3 M^3 misses by orders of magnitude once the peaks are a few widths apart; the
residual cannot supply it, being projected off phi (~ the uniform direction there). sigma_M(t)
follows the exact second moment of M_t, a_t(0)^2 <M_0^2> + v_t(0) / L^d.

Exact divergence in O(V x features) (`divergence`):

    div s = -2d V / eps^2 f_1 + V f_2 + 3 f_3 sum_n phi(n)^2 + (rho / sigma(t)) div_x r_perp + g'(M) / V,
    div_x r_perp = sum_n sum_k K_{t,k}(0) F_k'(x(n)) - sum_i [ c_i div_x ghat_i + ghat_i . grad_x c_i ],

with div_x ghat = (-2d V, V, 3 sum x^2) (sigma(t) is one scalar per evaluation, so the chain
rule through x = phi / sigma(t) only contributes the factor 1 / sigma(t)); only the kernel's centre K(0) touches the diagonal, and
each ghat_i . grad c_i is one forward-mode jvp of the scalar function c_i along ghat_i (three
in one vmap): no Hutchinson estimator and no Jacobian.

At initialization the MLP's last layer and the kernel weights are zero, so the model is exactly
sum_i f_init_i g_i (e.g. the UV score when f_init = `phi4_couplings(theory)`).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4
from rgdiff.models._checks import check_inputs, count, positive, resolve_dtype, triple
from rgdiff.models._errors import InvalidModelError
from rgdiff.models._layers import MLP, numpy_rng, odd_sine_features, to_array
from rgdiff.lattice.symmetry import lattice_orbits
from rgdiff.models.base import AbstractExactScoreModel
from rgdiff.models.embedding import TimeEmbedding
from rgdiff.models.scales import check_field_scale_flow, field_scale_at, phi4_couplings, phi4_field_scale
from rgdiff.models.scales import coupling_scale as _default_coupling_scale
from rgdiff.models.scales import score_scale as _default_score_scale


def eft_basis(phi, lattice: Lattice, *, lattice_units: bool = False) -> tuple:
    """g = (Delta phi, phi, phi^3): the phi-gradients of the kinetic, mass and quartic terms [5.26].

    The EFT score is f_1 g_1 + f_2 g_2 + f_3 g_3. With `lattice_units=True` the first entry is
    eps^2 Delta phi (the same span, O(1) on O(1) fields). Acts on the last `dim` axes (batch axes
    kept); a NumPy `phi` stays NumPy (float64 host estimators such as `hyvarinen_couplings`).
    """
    laplacian = lattice.lattice_laplacian(phi) if lattice_units else lattice.laplacian(phi)
    return laplacian, phi, phi**3


def eft_basis_divergence(phi, lattice: Lattice, *, lattice_units: bool = False) -> tuple:
    """div_phi g_i = sum_n d g_i(n) / d phi(n) of `eft_basis` [5.26]: (-2 d V / eps^2, V, 3 sum_n phi^2).

    With `lattice_units=True` the first entry is -2 d V (that of eps^2 Delta phi). The constants
    are Python floats; the last entry has `phi`'s batch shape (NumPy for a NumPy `phi`).
    """
    v = float(lattice.sites)
    kinetic = -2.0 * lattice.dim * v
    if not lattice_units:
        kinetic = kinetic / lattice.spacing**2
    total = np.sum if isinstance(phi, np.ndarray) else jnp.sum
    return kinetic, v, 3.0 * total(phi**2, axis=lattice.axes)


def _cholesky_solver_3x3(a: jax.Array):
    """b -> a^-1 b for a symmetric positive definite 3x3 `a`, by an explicit Cholesky
    factorization (a few scalar ops: cheap to compile, differentiate and batch, unlike a LAPACK
    call). Pivots are floored at the smallest normal number so round-off cannot give NaN."""
    floor = float(jnp.finfo(a.dtype).tiny)
    l11 = jnp.sqrt(jnp.maximum(a[0, 0], floor))
    l21 = a[1, 0] / l11
    l31 = a[2, 0] / l11
    l22 = jnp.sqrt(jnp.maximum(a[1, 1] - l21**2, floor))
    l32 = (a[2, 1] - l31 * l21) / l22
    l33 = jnp.sqrt(jnp.maximum(a[2, 2] - l31**2 - l32**2, floor))

    def solve(b):
        y1 = b[0] / l11
        y2 = (b[1] - l21 * y1) / l22
        y3 = (b[2] - l31 * y1 - l32 * y2) / l33
        x3 = y3 / l33
        x2 = (y2 - l32 * x3) / l22
        x1 = (y1 - l21 * x2 - l31 * x3) / l11
        return jnp.stack([x1, x2, x3])

    return solve


class EFTScore(AbstractExactScoreModel):
    """The EFT-structured score [5.26] with an exact O(V x features) divergence.

    See the module docstring for the parameterization
    s = f_1(t) Delta phi + f_2(t) phi + f_3(t) phi^3 + rho r_perp(phi / sigma, t).

    **Arguments:**

    - `lattice`: the `Lattice`.
    - `time_scale`: T > 0, the end of the RG time interval (sets the time embedding).
    - `field_scale`: sigma(0) > 0; the residual sees x = phi / sigma(t), which should be O(1)
      (`scales.phi4_field_scale(theory)`, or the rms of the training data).
    - `field_scale_flow`: [(c_k, r_k), ...] with r_k >= 0: sigma(t)^2 = sigma(0)^2 +
      sum_k c_k (exp(-2 r_k t) - 1) (must stay > 0); default () keeps sigma constant.
      `scales.field_scale_flow_terms` gives the exact per-site variance of p_t under Carosso-M.
    - `coupling_init`: f_init = (f_1, f_2, f_3), the couplings at initialization (all t);
      default (eps^d, 0, 0), the massless free score. Use `scales.phi4_couplings(theory)` to start
      at the exact UV score.
    - `coupling_scale`: (s_1, s_2, s_3) > 0, f_i = f_init_i + s_i * MLP output_i; default
      `scales.coupling_scale(lattice, coupling_init, field_scale)`; these are the t = 0 values.
    - `coupling_scale_powers`: (k_1, k_2, k_3): s_i(t) = s_i (sigma(0) / sigma(t))^k_i; default
      (0, 0, 2) (only matters with a `field_scale_flow`).
    - `coupling_init_uv`, `coupling_init_rate`: if given, the initialization is t-dependent,
      f_init(t) = coupling_init + (coupling_init_uv - coupling_init) exp(-rate t): the UV
      couplings at t = 0 (e.g. `rgdiff.objectives.hyvarinen_couplings` of the data) relaxing to
      the stationary law's. Default None: f_init(t) = coupling_init.
    - `residual_scale`: rho >= 0, the residual's output scale (0 gives the pure EFT ansatz);
      default `scales.score_scale(lattice)` = eps^(d/2-1).
    - `num_time_basis`: K, the number of time basis functions of the `TimeEmbedding`.
    - `time_warp`: the embedding's logarithmic warp w; default T * Lambda_0^2.
    - `mlp_width`, `mlp_depth`: the coupling MLP h(t) -> 3 (SiLU activations).
    - `num_sin`, `num_tanh`: numbers of sin(omega x) and tanh(omega x) site features (plus x).
    - `ridge`: > 0, the ridge of the normalized Gram solve; at run time at least 100 times the
      machine epsilon of the parameter dtype (1.2e-5 in float32).
    - `zero_mode_features`: K_M, the tanh features of the zero-mode term (0, the default: no term).
    - `zero_mode_scale`, `zero_mode_scale_flow`: sigma_M(0) = sqrt(<M_0^2>) and its flow terms
      (the form of `field_scale_flow`), so that sigma_M(t)^2 = a_t(0)^2 <M_0^2> + v_t(0) / L^d.
    - `zero_mode_rate`: the warp of the zero mode's time embedding (w = T x rate; default: the
      field-scale flow's slowest rate, else 1 / T).
    - `dtype`: parameter dtype (default: JAX's default float). Inputs are computed in this dtype
      and the output is cast back to `phi.dtype`.
    - `key`: a JAX PRNG key (keyword-only).

    **Shapes:** `model(phi, t)` takes `phi` of shape `lattice.shape` and a scalar `t`, and returns
    the score of shape `lattice.shape`; use `jax.vmap` for batches.
    """

    lattice: Lattice = eqx.field(static=True)
    time_scale: float = eqx.field(static=True)
    field_scale: float = eqx.field(static=True)
    field_scale_flow: tuple[tuple[float, float], ...] = eqx.field(static=True)
    field_scale_floor: float = eqx.field(static=True)
    coupling_scale_powers: tuple[float, float, float] = eqx.field(static=True)
    coupling_init: tuple[float, float, float] = eqx.field(static=True)
    coupling_scale: tuple[float, float, float] = eqx.field(static=True)
    coupling_init_uv: tuple[float, float, float] | None = eqx.field(static=True)
    coupling_init_rate: float = eqx.field(static=True)
    residual_scale: float = eqx.field(static=True)
    mlp_width: int = eqx.field(static=True)
    mlp_depth: int = eqx.field(static=True)
    num_sin: int = eqx.field(static=True)
    num_tanh: int = eqx.field(static=True)
    ridge: float = eqx.field(static=True)
    zero_mode_features: int = eqx.field(static=True)
    zero_mode_scale: float = eqx.field(static=True)
    zero_mode_scale_flow: tuple[tuple[float, float], ...] = eqx.field(static=True)
    zero_mode_floor: float = eqx.field(static=True)
    zero_mode_rate: float = eqx.field(static=True)
    embedding: TimeEmbedding
    coupling_mlp: MLP
    frequencies: jax.Array
    kernel_weights: jax.Array
    zero_mode_embedding: TimeEmbedding | None
    zero_mode_frequencies: jax.Array | None
    zero_mode_weights: jax.Array | None

    def __init__(
        self,
        lattice: Lattice,
        *,
        time_scale: float,
        field_scale: float = 1.0,
        field_scale_flow=(),
        coupling_init: tuple[float, float, float] | None = None,
        coupling_scale: tuple[float, float, float] | None = None,
        coupling_scale_powers: tuple[float, float, float] = (0.0, 0.0, 2.0),
        coupling_init_uv: tuple[float, float, float] | None = None,
        coupling_init_rate: float = 1.0,
        residual_scale: float | None = None,
        num_time_basis: int = 16,
        time_warp: float | None = None,
        mlp_width: int = 32,
        mlp_depth: int = 2,
        num_sin: int = 8,
        num_tanh: int = 4,
        ridge: float = 1e-10,
        zero_mode_features: int = 0,
        zero_mode_scale: float = 1.0,
        zero_mode_scale_flow=(),
        zero_mode_rate: float | None = None,
        dtype=None,
        key: jax.Array,
    ):
        if not isinstance(lattice, Lattice):
            raise InvalidModelError(f"lattice must be a rgdiff Lattice, got {type(lattice).__name__}")
        dtype = resolve_dtype(dtype)
        self.lattice = lattice
        self.time_scale = positive("time_scale", time_scale)
        self.field_scale = positive("field_scale", field_scale)
        self.field_scale_flow, self.field_scale_floor = check_field_scale_flow(self.field_scale, field_scale_flow)
        self.coupling_scale_powers = triple("coupling_scale_powers", coupling_scale_powers)
        eps_d = lattice.spacing**lattice.dim
        self.coupling_init = triple("coupling_init", (eps_d, 0.0, 0.0) if coupling_init is None else coupling_init)
        if coupling_scale is None:
            coupling_scale = _default_coupling_scale(lattice, self.coupling_init, self.field_scale)
        self.coupling_scale = triple("coupling_scale", coupling_scale)
        for i, s in enumerate(self.coupling_scale):
            positive(f"coupling_scale[{i}]", s)
        self.coupling_init_uv = None if coupling_init_uv is None else triple("coupling_init_uv", coupling_init_uv)
        self.coupling_init_rate = positive("coupling_init_rate", coupling_init_rate)
        self.residual_scale = positive(
            "residual_scale",
            _default_score_scale(lattice) if residual_scale is None else residual_scale,
            allow_zero=True,
        )
        if time_warp is None:
            time_warp = self.time_scale * lattice.cutoff**2
        self.embedding = TimeEmbedding(self.time_scale, count("num_time_basis", num_time_basis, 2), time_warp)
        self.mlp_width = count("mlp_width", mlp_width, 1)
        self.mlp_depth = count("mlp_depth", mlp_depth, 0)
        self.num_sin = count("num_sin", num_sin, 0)
        self.num_tanh = count("num_tanh", num_tanh, 0)
        self.ridge = positive("ridge", ridge)

        rng = numpy_rng(key)
        sizes = (self.embedding.size,) + (self.mlp_width,) * self.mlp_depth + (3,)
        self.coupling_mlp = MLP(sizes, zero_last=True, dtype=dtype, rng=rng)
        self.frequencies = to_array(
            np.concatenate([rng.uniform(0.5, 3.0, self.num_sin), rng.uniform(0.5, 2.0, self.num_tanh)]), dtype
        )
        num_orbits, _ = lattice_orbits(lattice.dim, lattice.size)
        self.kernel_weights = to_array(np.zeros((num_orbits, self.num_features, self.embedding.size)), dtype)

        self.zero_mode_features = count("zero_mode_features", zero_mode_features, 0)
        self.zero_mode_scale = positive("zero_mode_scale", zero_mode_scale)
        self.zero_mode_scale_flow, self.zero_mode_floor = check_field_scale_flow(self.zero_mode_scale, zero_mode_scale_flow)
        if zero_mode_rate is None:
            rates = [r for _, r in self.zero_mode_scale_flow if r > 0]
            zero_mode_rate = min(rates) if rates else 1.0 / self.time_scale
        self.zero_mode_rate = positive("zero_mode_rate", zero_mode_rate)
        if self.zero_mode_features > 0:
            self.zero_mode_embedding = TimeEmbedding(self.time_scale, count("num_time_basis", num_time_basis, 2),
                                                     self.time_scale * self.zero_mode_rate)
            self.zero_mode_frequencies = to_array(np.geomspace(0.5, 20.0, self.zero_mode_features), dtype)
            self.zero_mode_weights = to_array(np.zeros((self.zero_mode_features + 1, self.zero_mode_embedding.size)), dtype)
        else:
            self.zero_mode_embedding = self.zero_mode_frequencies = self.zero_mode_weights = None

    @classmethod
    def from_theory(cls, theory: Phi4, *, time_scale: float, key: jax.Array, **kwargs) -> EFTScore:
        """An `EFTScore` that starts at the exact UV score of `theory`.

        Sets `coupling_init = phi4_couplings(theory)` and `field_scale = phi4_field_scale(theory)`
        unless given in `kwargs` (the other constructor arguments).
        """
        kwargs.setdefault("coupling_init", phi4_couplings(theory))
        kwargs.setdefault("field_scale", phi4_field_scale(theory))
        return cls(theory.lattice, time_scale=time_scale, key=key, **kwargs)

    # --- small pieces -------------------------------------------------------------------
    @property
    def dtype(self):
        """The parameter dtype."""
        return self.kernel_weights.dtype

    @property
    def num_features(self) -> int:
        """Per-site features: x, num_sin sines, num_tanh tanh's."""
        return 1 + self.num_sin + self.num_tanh

    def sigma(self, t: jax.Array) -> jax.Array:
        """The residual's field scale sigma(t) (a scalar of t's dtype; see `field_scale_flow`)."""
        return field_scale_at(t, self.field_scale, self.field_scale_flow, self.field_scale_floor)

    @property
    def field_scale_ir(self) -> float:
        """sigma(t -> infinity)."""
        return math.sqrt(self.field_scale**2 - sum(c for c, r in self.field_scale_flow if r > 0))

    def _couplings(self, t: jax.Array) -> jax.Array:
        out = self.coupling_mlp(self.embedding(t))
        init = jnp.asarray(self.coupling_init, self.dtype)
        if self.coupling_init_uv is not None:
            uv = jnp.asarray(self.coupling_init_uv, self.dtype)
            init = init + (uv - init) * jnp.exp(-self.coupling_init_rate * t)
        scale = jnp.asarray(self.coupling_scale, self.dtype)
        if self.field_scale_flow and any(k != 0.0 for k in self.coupling_scale_powers):
            ratio = jnp.asarray(self.field_scale, self.dtype) / self.sigma(t)
            scale = scale * ratio ** jnp.asarray(self.coupling_scale_powers, self.dtype)
        return init + scale * out

    def _features(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """F_k(x) and F_k'(x), each of shape (num_features, *lattice.shape)."""
        odd, d_odd = odd_sine_features(x, self.frequencies[: self.num_sin])
        wt = self.frequencies[self.num_sin :].reshape((-1,) + (1,) * self.lattice.dim)
        th = jnp.tanh(wt * x[None])
        return jnp.concatenate([odd, th]), jnp.concatenate([d_odd, wt * (1.0 - th**2)])

    def _kernel(self, h: jax.Array) -> jax.Array:
        """K_{t,k}(n), shape (num_features, *lattice.shape); symmetric under the hypercubic group."""
        lat = self.lattice
        _, index = lattice_orbits(lat.dim, lat.size)
        per_orbit = jnp.einsum("ofe,e->fo", self.kernel_weights, h) / math.sqrt(self.num_features)
        return per_orbit[:, index]

    def _convolve(self, kernel: jax.Array, features: jax.Array) -> jax.Array:
        """r(n) = sum_k sum_y K_k(n - y) F_k(y), periodic, via rfftn."""
        d = self.lattice.dim
        axes = tuple(range(1, d + 1))
        prod = jnp.fft.rfftn(kernel, axes=axes) * jnp.fft.rfftn(features, axes=axes)
        return jnp.fft.irfftn(jnp.sum(prod, axis=0), s=self.lattice.shape, axes=tuple(range(d)))

    def _basis(self, x: jax.Array) -> jax.Array:
        """ghat = (eps^2 Delta x, x, x^3), shape (3, *lattice.shape): spans the same space as g."""
        return jnp.stack(eft_basis(x, self.lattice, lattice_units=True))

    def _coefficients(self, x: jax.Array, r: jax.Array) -> jax.Array:
        """c ~ G^-1 <ghat, r>, shape (3,): the ridge solve of the correlation form, refined once."""
        g = self._basis(x).reshape(3, -1)
        gram = g @ g.T
        proj = g @ r.reshape(-1)
        machine_eps = float(jnp.finfo(x.dtype).eps)
        tiny = self.lattice.sites * machine_eps**2
        ridge = max(self.ridge, 100.0 * machine_eps)  # stays positive definite despite round-off
        norm = jnp.sqrt(jnp.diagonal(gram) + tiny)
        corr = gram / (norm[:, None] * norm[None, :])
        regularized = corr + ridge * jnp.eye(3, dtype=x.dtype)
        rhs = proj / norm
        solve = _cholesky_solver_3x3(regularized)
        a = solve(rhs)
        a = a + solve(rhs - corr @ a)  # one step of iterative refinement
        return a / norm

    def _raw_residual(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        f, _ = self._features(x)
        return self._convolve(kernel, f)

    def _residual_x(self, x: jax.Array, h: jax.Array) -> jax.Array:
        """r_perp(x, t) (before the output scale rho)."""
        r = self._raw_residual(x, self._kernel(h))
        c = self._coefficients(x, r)
        return r - jnp.tensordot(c, self._basis(x), axes=1)

    def _residual_and_divergence_x(self, x: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(r_perp, div_x r_perp), exactly (see the module docstring)."""
        lat = self.lattice
        kernel = self._kernel(h)

        def coefficients(xx):
            return self._coefficients(xx, self._raw_residual(xx, kernel))

        f, df = self._features(x)
        r = self._convolve(kernel, f)
        c = self._coefficients(x, r)
        g = self._basis(x)
        centre = kernel[(slice(None),) + (0,) * lat.dim]  # K_k(0), shape (num_features,)
        div_raw = jnp.sum(centre @ df.reshape(self.num_features, -1))
        div_g = jnp.stack([jnp.asarray(d, x.dtype) for d in eft_basis_divergence(x, lat, lattice_units=True)])
        # dc[i, j] = ghat_i . grad c_j: one jvp per direction ghat_i; keep the diagonal.
        dc = jax.vmap(lambda tangent: jax.jvp(coefficients, (x,), (tangent,))[1])(g)
        div = div_raw - jnp.dot(c, div_g) - jnp.trace(dc)
        return r - jnp.tensordot(c, g, axes=1), div

    def _zero_mode_term(self, p: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(g(M, t), dg/dM) of the zero-mode term (see the module docstring); scalars."""
        sigma = field_scale_at(t, self.zero_mode_scale, self.zero_mode_scale_flow, self.zero_mode_floor)
        sigma_ir = math.sqrt(self.zero_mode_scale**2 - sum(c for c, r in self.zero_mode_scale_flow if r > 0))
        x = jnp.mean(p) / sigma
        th = jnp.tanh(self.zero_mode_frequencies * x)
        features = jnp.concatenate([x[None], th])
        slopes = jnp.concatenate([jnp.ones((1,), p.dtype), self.zero_mode_frequencies * (1.0 - th**2)])
        c = self.zero_mode_weights @ self.zero_mode_embedding(t)
        scale = sigma / sigma_ir**2  # a zero-mode score of width ~ sigma_inf at the scale sigma_M(t)
        return scale * jnp.dot(c, features), jnp.dot(c, slopes) / sigma_ir**2

    def _prepare(self, phi, t):
        phi = check_inputs(self.lattice, phi, t, "EFTScore")
        p = phi.astype(self.dtype)
        t = jnp.asarray(t).astype(self.dtype)
        return phi, p, t

    def _eft_part(self, p: jax.Array, f: jax.Array) -> jax.Array:
        g = eft_basis(p, self.lattice)
        return f[0] * g[0] + f[1] * g[1] + f[2] * g[2]

    def _eft_divergence(self, p: jax.Array, f: jax.Array) -> jax.Array:
        d = eft_basis_divergence(p, self.lattice)
        return f[0] * d[0] + f[1] * d[1] + f[2] * d[2]

    # --- public API ---------------------------------------------------------------------
    def __call__(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        """**Arguments:**

        - `phi`: one configuration, shape `lattice.shape`.
        - `t`: a scalar RG time.

        **Returns:**

        s_theta(phi, t), shape `lattice.shape`, dtype of `phi`.
        """
        phi, p, t = self._prepare(phi, t)
        f = self._couplings(t)
        out = self._eft_part(p, f)
        if self.residual_scale != 0.0:
            h = self.embedding(t)
            out = out + self.residual_scale * self._residual_x(p / self.sigma(t), h)
        if self.zero_mode_features > 0:
            out = out + self._zero_mode_term(p, t)[0] / self.lattice.sites
        return out.astype(phi.dtype)

    def divergence(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        """The exact divergence sum_n d s(n) / d phi(n) (a scalar, dtype of `phi`)."""
        return self.score_and_divergence(phi, t)[1]

    def score_and_divergence(self, phi: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """`(model(phi, t), model.divergence(phi, t))`, sharing the work (for [6.14])."""
        phi, p, t = self._prepare(phi, t)
        f = self._couplings(t)
        score = self._eft_part(p, f)
        div = self._eft_divergence(p, f)
        if self.residual_scale != 0.0:
            h = self.embedding(t)
            sigma = self.sigma(t)
            r, div_r = self._residual_and_divergence_x(p / sigma, h)
            score = score + self.residual_scale * r
            div = div + (self.residual_scale / sigma) * div_r
        if self.zero_mode_features > 0:
            g, dg = self._zero_mode_term(p, t)
            score = score + g / self.lattice.sites
            div = div + dg / self.lattice.sites  # sum_n d(g(M)/V)/d phi(n) = g'(M) / V
        return score.astype(phi.dtype), div.astype(phi.dtype)

    def residual(self, phi: jax.Array, t: jax.Array) -> jax.Array:
        """The projected residual rho * r_perp(phi / sigma, t), orthogonal to Delta phi, phi and
        phi^3; shape `lattice.shape`, dtype of `phi`."""
        phi, p, t = self._prepare(phi, t)
        h = self.embedding(t)
        return (self.residual_scale * self._residual_x(p / self.sigma(t), h)).astype(phi.dtype)

    def couplings(self, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The learned running couplings (f_1(t), f_2(t), f_3(t)) of [5.26].

        **Arguments:**

        - `t`: times of any shape (vectorized).

        **Returns:**

        Three arrays of the shape of `t` (parameter dtype). At t = 0 the exact UV score has
        f = (eps^d, -eps^d m2, -eps^d lam/6).
        """
        t = jnp.asarray(t).astype(self.dtype)
        f = jax.vmap(self._couplings)(t.reshape(-1)).reshape(t.shape + (3,))
        return f[..., 0], f[..., 1], f[..., 2]

    def effective_parameters(self, t: jax.Array) -> dict[str, jax.Array]:
        """The couplings read as an effective phi^4 score eps^d Z (Delta phi - m2 phi - lam/6 phi^3).

        **Returns:**

        `{"z": f_1 / eps^d, "m2": -f_2 / f_1, "lam": -6 f_3 / f_1}`, each of the shape of `t`;
        at t = 0 the UV theory has z = 1 and its bare m2, lam.
        """
        f1, f2, f3 = self.couplings(t)
        eps_d = self.lattice.spacing**self.lattice.dim
        return {"z": f1 / eps_d, "m2": -f2 / f1, "lam": -6.0 * f3 / f1}

    def describe(self) -> dict:
        """All hyperparameters (JSON-serializable); `build_model` rebuilds the skeleton."""
        return {
            "model": "eft-score",
            "lattice": self.lattice.describe(),
            "time_scale": self.time_scale,
            "field_scale": self.field_scale,
            "field_scale_flow": [list(term) for term in self.field_scale_flow],
            "coupling_init": list(self.coupling_init),
            "coupling_scale": list(self.coupling_scale),
            "coupling_scale_powers": list(self.coupling_scale_powers),
            "coupling_init_uv": None if self.coupling_init_uv is None else list(self.coupling_init_uv),
            "coupling_init_rate": self.coupling_init_rate,
            "residual_scale": self.residual_scale,
            "num_time_basis": self.embedding.num_basis,
            "time_warp": self.embedding.warp,
            "mlp_width": self.mlp_width,
            "mlp_depth": self.mlp_depth,
            "num_sin": self.num_sin,
            "num_tanh": self.num_tanh,
            "ridge": self.ridge,
            "zero_mode_features": self.zero_mode_features,
            "zero_mode_scale": self.zero_mode_scale,
            "zero_mode_scale_flow": [list(term) for term in self.zero_mode_scale_flow],
            "zero_mode_rate": self.zero_mode_rate,
            "dtype": jnp.dtype(self.dtype).name,
        }
