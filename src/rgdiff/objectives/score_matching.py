"""Denoising score matching on the exact RG kernel (paper [5.23]).

    L(theta) = E_t E_{phi_0 ~ p_0} E_{phi_t ~ p_{t|0}} || s_theta(phi_t, t) - grad log p_{t|0}(phi_t | phi_0) ||^2_{lambda}

The conditional score is exact (the kernel is Gaussian per Fourier mode). Weighting: per mode,

    lambda_t(p) = L^d v_t(p) / eps^{2d},

i.e. the norm is taken in Fourier space with each mode whitened by the conditional score's own
standard deviation (the "noise-prediction" weighting of Song et al., per mode). Any weighting
that is a fixed positive operator at each t keeps the minimizer at the true score of p_t; this one
makes every (t, p) contribute O(1), so a zero model has loss ~ 1.

Time sampling: t = t_min + (T - t_min) u^4 with u stratified-uniform on [0, 1) per batch
(low discrepancy), dense at small t where the couplings run fastest.

Zero mode (`zero_mode_m0`). The zero mode M = phi~(0) carries the observables the learned flow is
judged by (<|M|>, G2(0), m_R), yet it is one mode in V: its share of the whitened loss is 1/V and
its DSM target, one noisy number per configuration, barely moves the parameters that only it
constrains (measured at the paper's point: the learned zero-mode score 2x too weak between the
vacua at t = 3 after 1500 steps). Under a linear scheme its law is known exactly from the UV
ensemble: M_t = a_t(0) M_0 + noise of variance v_t(0) / L^d, so p_t(M) is the mixture
mean_i N(M; a_t(0) M_0^i, v_t(0) / L^d) and its score (`zero_mode_marginal_score`) is
E[conditional score | M_t] exactly. With `zero_mode_m0` (the UV magnetizations, symmetrized) the
zero-mode component of the target is replaced by that score (Rao-Blackwellized over M_0 given
M_t): the same minimizer wherever the other modes of phi_t say nothing more about M_0 than M_t
does (every mode that has relaxed), and a noiseless target.

Anchor at t = 0. The DSM target degenerates at t -> 0 (v_t -> 0: the conditional score is pure
noise of variance 1/v_t, whitened away by lambda_t), so DSM alone pins the score at t = 0, and with
it the bare-coupling estimates f_i(0) of [5.26], only through its continuity in t: measured on the
benchmark line (N = 8, m2 = -4, lam = 36.05), 2000 DSM steps gave m2(0) = -3.07 and lam(0) = 27.5.
For models with an exact divergence we add implicit (Hyvarinen) score matching on the UV data,

    L_0(theta) = E_{phi ~ p_0} [ |s_theta(phi, 0)|^2 + 2 div s_theta(phi, 0) ] / F,

which equals E |s_theta - grad log p_0|^2 / F up to a theta-independent constant (integration by
parts on the periodic lattice), so it has the same minimizer as [5.23] and needs no noise. The
scale F = eps^d sum_p |phat|^2 (= 2 d V eps^(d-2)) is the kinetic part of the free field's Fisher
information, so L_0 is O(1) like the DSM loss. On its own, L_0 restricted to the EFT terms is the
classic score-matching estimator of (Z, m2, lam): on 32000 NUTS fields of the point above it gives
m2 = -3.99 +- 0.02 and lam = 35.9 +- 0.1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.models.eft import eft_basis, eft_basis_divergence

WEIGHTING = "lambda_t(p) = L^d v_t(p) / eps^(2d) per Fourier mode (whitened conditional score)"
ANCHOR = "implicit score matching at t = 0 on the UV data, E[|s|^2 + 2 div s] / (eps^d sum_p |phat|^2)"
ZERO_MODE_TARGET = "the zero mode's target is the exact marginal score of M_t (mixture over the symmetrized UV magnetizations)"
TIME_SAMPLING = "t = t_min + (T - t_min) u^4, u stratified uniform in [0, 1)"


def sample_times(key, batch: int, horizon: float, t_min: float, dtype) -> jax.Array:
    u = (jnp.arange(batch, dtype=dtype) + jax.random.uniform(key, (), dtype)) / batch
    return t_min + (horizon - t_min) * u**4


def whitened_mode_error(lattice: Lattice, residual: jax.Array, v: jax.Array) -> jax.Array:
    """sum_p lambda_t(p) |residual~(p)|^2 / V over the full grid; residual (B, *lattice)."""
    modes = lattice.rfourier(residual)
    weight = jnp.asarray(lattice.half_multiplicity(), v.dtype) * lattice.volume * v / lattice.spacing ** (2 * lattice.dim)
    return jnp.sum(weight * jnp.abs(modes) ** 2, axis=lattice.axes) / lattice.sites


MIXTURE_CHUNK = 4096  # UV zero modes per step of the running sum in `zero_mode_marginal_score`


def zero_mode_marginal_score(m_t: jax.Array, m0: jax.Array, a: jax.Array, var: jax.Array, *,
                             chunk: int = MIXTURE_CHUNK) -> jax.Array:
    """d/dM log p_t(M) at `m_t` (B,) for the mixture p_t(M) = mean_i N(M; a_i M0_i, var_i) over the
    UV zero modes `m0` (n,): the exact marginal score of M_t = a_t(0) M_0 + noise of variance
    `var` = v_t(0) / L^d under a linear scheme (`a`, `var` of shape (B,), one time each).

    The softmax over the n components is a running (max-shifted) sum over blocks of `chunk` UV
    values, so the temporaries are (B, chunk) and not (B, n): with the whole `rgdiff run --full`
    ensemble (n = 320000 symmetrized) and B = 2000 they were 5 GB each, the 19 GB peak of that run.
    """
    dtype = jnp.result_type(m_t, m0, a, var)
    m_t, m0, a, var = (jnp.asarray(x, dtype) for x in (m_t, m0, a, var))
    n = m0.shape[0]
    chunk = max(1, min(int(chunk), n))
    pad = -n % chunk
    blocks = jnp.concatenate([m0, jnp.zeros((pad,), dtype)]).reshape(-1, chunk)
    valid = (jnp.arange(n + pad) < n).reshape(-1, chunk)

    def add_block(carry, xs):
        top, total, first = carry  # running max of log w, sum of w and of w * d, both scaled by exp(-top)
        block, ok = xs
        d = m_t[:, None] - a[:, None] * block[None, :]
        log_w = jnp.where(ok[None, :], -0.5 * d**2 / var[:, None], -jnp.inf)
        new_top = jnp.maximum(top, jnp.max(log_w, axis=1))
        shrink = jnp.exp(top - new_top)
        w = jnp.exp(log_w - new_top[:, None])
        return (new_top, total * shrink + jnp.sum(w, axis=1), first * shrink + jnp.sum(w * d, axis=1)), None

    zeros = jnp.zeros(m_t.shape, dtype)
    (_, total, first), _ = jax.lax.scan(add_block, (jnp.full(m_t.shape, -jnp.inf, dtype), zeros, zeros), (blocks, valid))
    return -(first / total) / var


def dsm_loss_at(model, scheme, lattice: Lattice, phi0: jax.Array, t: jax.Array, key, zero_mode_m0=None) -> jax.Array:
    """The weighted DSM loss [5.23] at given per-configuration times t (B,); phi0 (B, *lattice).

    For the exact score of p_t its expectation is mean_p (1 - v_t(p) / G_t(p)) over the full grid,
    G_t the spectrum of p_t (the part of the conditional score that no function of phi_t explains).
    With `zero_mode_m0` the zero mode's target is its exact marginal score (module docstring).
    """
    phi_t = jax.lax.stop_gradient(scheme.push_forward(key, phi0, t, lattice))
    target = jax.lax.stop_gradient(scheme.conditional_score(phi_t, phi0, t, lattice))
    a, v = scheme.kernel(t, lattice, phi0.dtype)
    if zero_mode_m0 is not None:
        origin = (slice(None),) + (0,) * lattice.dim
        exact = zero_mode_marginal_score(jnp.mean(phi_t, axis=lattice.axes), zero_mode_m0, a[origin],
                                         v[origin] / lattice.volume)
        shift = exact / lattice.sites - jnp.mean(target, axis=lattice.axes)  # s~(0) = sum_n s(n) / V
        target = target + jax.lax.stop_gradient(shift).reshape((-1,) + (1,) * lattice.dim)
    pred = jax.vmap(model)(phi_t, t)
    return jnp.mean(whitened_mode_error(lattice, pred - target, jax.lax.stop_gradient(v)))


def dsm_loss(model, scheme, lattice: Lattice, phi0: jax.Array, key, horizon: float, t_min: float,
             zero_mode_m0=None) -> jax.Array:
    """The weighted denoising score-matching loss [5.23] with t drawn by `sample_times`."""
    k_t, k_noise = jax.random.split(key)
    t = sample_times(k_t, phi0.shape[0], horizon, t_min, phi0.dtype)
    return dsm_loss_at(model, scheme, lattice, phi0, t, k_noise, zero_mode_m0)


def fisher_scale(lattice: Lattice) -> float:
    """F = eps^d sum_p |phat|^2 = 2 d V eps^(d - 2): the normalization of `anchor_loss`."""
    return 2.0 * lattice.dim * lattice.sites * lattice.spacing ** (lattice.dim - 2)


def anchor_loss(model, lattice: Lattice, phi0: jax.Array) -> jax.Array:
    """Implicit score matching at t = 0 (Hyvarinen): mean over phi0 (B, *lattice) of
    (|s(phi, 0)|^2 + 2 div s(phi, 0)) / F. Needs an `AbstractExactScoreModel`."""
    t = jnp.zeros(phi0.shape[0], phi0.dtype)
    score, div = jax.vmap(model.score_and_divergence)(phi0, t)
    per_config = jnp.sum(score**2, axis=lattice.axes) + 2.0 * div
    return jnp.mean(per_config) / fisher_scale(lattice)


def training_loss(
    model, scheme, lattice: Lattice, phi0: jax.Array, key, horizon: float, t_min: float, anchor_weight: float = 0.0,
    zero_mode_m0=None,
) -> jax.Array:
    """`dsm_loss` plus `anchor_weight` x `anchor_loss` (the anchor only where it is > 0)."""
    loss = dsm_loss(model, scheme, lattice, phi0, key, horizon, t_min, zero_mode_m0)
    if anchor_weight > 0:
        loss = loss + anchor_weight * anchor_loss(model, lattice, phi0)
    return loss


def hyvarinen_couplings(fields, lattice: Lattice) -> tuple[float, float, float]:
    """The (f_1, f_2, f_3) that minimize `anchor_loss` for the pure EFT score
    f_1 Delta phi + f_2 phi + f_3 phi^3 on UV `fields` (..., *lattice): a 3 x 3 linear solve,
    sum_j <g_i . g_j> f_j = -<div g_i> (g = `eft_basis`, [5.26]), the classic score-matching
    estimator of (Z, m2, lam). Computed in float64 NumPy."""
    phi = np.asarray(fields, dtype=np.float64).reshape(-1, *lattice.shape)
    g = np.stack(eft_basis(phi, lattice), axis=1).reshape(phi.shape[0], 3, -1)
    gram = np.einsum("nix,njx->ij", g, g) / phi.shape[0]
    div = np.array([np.mean(d) for d in eft_basis_divergence(phi, lattice)])
    return tuple(float(x) for x in np.linalg.solve(gram, -div))
