"""Normalization constants for score models: from a lattice, or from a phi^4 theory.

Scores of different theories differ by orders of magnitude (e.g. L = 1, N = 20: eps^d = 0.0025 and
phi ~ 84 in the broken phase, versus lattice units), so the models take explicit scales that make
their trainable parts O(1). The helpers here give sensible defaults:

- `score_scale(lattice)` = eps^(d/2 - 1): the per-site size of the score
  eps^d (-Delta + M^2) phi of a lattice-cutoff Gaussian field (whose per-site variance is
  ~ eps^(2-d)); it is 1 in lattice units.
- `coupling_scale(lattice, coupling_init, field_scale)`: per-g scales of the EFT couplings [5.26].
- `phi4_couplings(theory)`: the exact UV couplings (eps^d, -eps^d m2, -eps^d lam/6), i.e. the score
  eps^d (Delta phi - m2 phi - lam/6 phi^3) at t = 0.
- `phi4_field_scale(theory)`: a rough rms field of the theory.
"""

from __future__ import annotations

import math

import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4


def score_scale(lattice: Lattice) -> float:
    """eps^(d/2 - 1), the typical per-site score of a lattice-cutoff Gaussian field."""
    return lattice.spacing ** (lattice.dim / 2.0 - 1.0)


def coupling_scale(
    lattice: Lattice, coupling_init: tuple[float, float, float], field_scale: float
) -> tuple[float, float, float]:
    """Default scales (s_1, s_2, s_3) of the EFT couplings f_i = f_init_i + s_i * (MLP output)_i.

    With e = eps^d and |phat_1|^2 the smallest non-zero lattice momentum squared:

    - s_1 = max(|f_init_1|, e): wave-function renormalization changes by O(1) relative amounts;
    - s_2 = max(|f_init_2|, e |phat_1|^2): the mass term moves by at least the infrared scale;
    - s_3 = max(|f_init_3|, s_2 / sigma^2): a change of f_3 of size s_3 changes the score at the
      field scale sigma as much as a change s_2 of the mass term.
    """
    e = lattice.spacing**lattice.dim
    f1, f2, f3 = (abs(float(f)) for f in coupling_init)
    s1 = max(f1, e)
    s2 = max(f2, e * lattice.phat1_sq)
    s3 = max(f3, s2 / float(field_scale) ** 2)
    return (s1, s2, s3)


def phi4_couplings(theory: Phi4) -> tuple[float, float, float]:
    """The UV couplings (f_1, f_2, f_3) = (eps^d, -eps^d m2, -eps^d lam/6) of `theory`.

    `theory.score(phi)` equals f_1 Delta phi + f_2 phi + f_3 phi^3 with these values.
    """
    lat = theory.lattice
    e = lat.spacing**lat.dim
    return (e, -e * theory.m2, -e * theory.lam / 6.0)


def phi4_field_scale(theory: Phi4) -> float:
    """A rough rms field sqrt(<phi(n)^2>) of `theory`, for `field_scale`.

    Non-zero modes are treated as free with mass squared m2 (symmetric phase) or -2 m2 (the
    curvature at the classical broken minimum), giving L^-d sum_{p != 0} 1/(|phat|^2 + m2_eff);
    the zero mode M = mean phi is given its exact single-mode law
    exp(-L^d (m2 M^2 / 2 + lam M^4 / 24)), whose <M^2> is integrated numerically. In the broken
    phase this is ~ the vacuum value sqrt(-6 m2 / lam) (84.0 at the paper's point m2 = -2).
    Prefer the rms of the training data where it is known.
    """
    lat = theory.lattice
    vol = lat.volume
    m2, lam = theory.m2, theory.lam
    m2_eff = m2 if m2 >= 0 else -2.0 * m2
    w = lat.phat_sq_np().reshape(-1)[1:] + m2_eff  # |phat|^2 + m2_eff over p != 0 [4.27]
    nonzero = float(np.sum(1.0 / w)) / vol if w.size else 0.0

    if lam == 0.0:
        zero = 1.0 / (vol * m2)
    else:

        def u(x):
            return vol * (0.5 * m2 * x**2 + lam / 24.0 * x**4)

        x_min = math.sqrt(max(-6.0 * m2 / lam, 0.0))
        u_min = u(x_min)
        hi = max(2.0 * x_min, 1.0)
        while u(hi) - u_min < 60.0:
            hi *= 2.0
        lo = x_min
        for _ in range(200):  # bisect for U(x) - U_min = 60 beyond the minimum
            mid = 0.5 * (lo + hi)
            if u(mid) - u_min < 60.0:
                lo = mid
            else:
                hi = mid
        x = np.linspace(0.0, hi, 200_001)
        weight = np.exp(-(u(x) - u_min))
        zero = float(np.sum(x**2 * weight) / np.sum(weight))
    return math.sqrt(nonzero + zero)


# --- a field scale that follows the RG flow ---------------------------------------------------
#
# Along a linear scheme the per-site variance of p_t changes by orders of magnitude (Carosso-M in
# the broken phase: the zero mode shrinks from the vacuum, ~84 at the paper's point, to the prior's
# O(1) as exp(-M^2 t)), so a residual that sees phi / sigma with one constant sigma sees a vanishing
# input at the times where p_t is most non-Gaussian. The models therefore accept a time-dependent
# scale written as a short sum of exponentials,
#
#     sigma(t)^2 = sigma(0)^2 + sum_k c_k (exp(-2 r_k t) - 1),      r_k >= 0,
#
# so sigma(0) is the UV field scale and sigma(inf)^2 = sigma(0)^2 - sum_{r_k > 0} c_k. For a
# time-homogeneous Ornstein-Uhlenbeck scheme with a stationary law (Carosso-M), a_t(p) = exp(-r(p) t)
# and v_t(p) = G_inf(p) (1 - a_t(p)^2), so the exact per-site variance of p_t given the data's
# power spectrum P0(p) = L^d <|phi~_0(p)|^2> is
#
#     sigma(t)^2 = L^-d sum_p [a_t(p)^2 P0(p) + v_t(p)] = sigma_inf^2 + L^-d sum_p (P0 - G_inf) e^{-2 r(p) t},
#
# of that form with one term per distinct rate; `field_scale_flow_terms` builds it and merges rates
# into a few terms.


def check_field_scale_flow(field_scale: float, flow) -> tuple[tuple[tuple[float, float], ...], float]:
    """Validate `flow` = [(c_k, r_k), ...] for `field_scale` sigma(0).

    **Returns:** the terms as a tuple of float pairs and a floor for sigma(t)^2 (a quarter of its
    smallest value on a dense time grid; evaluations are clipped there so round-off never gives a
    non-positive scale). Raises `InvalidModelError` unless every r_k >= 0, every c_k is finite and
    sigma(t)^2 > 0 for all t >= 0 (checked at t = 0, t = inf and on the grid).
    """
    from rgdiff.models._errors import InvalidModelError

    try:
        terms = tuple((float(c), float(r)) for c, r in flow)
    except (TypeError, ValueError):
        raise InvalidModelError(
            f"field_scale_flow must be a list of (coefficient, rate) pairs, got {flow!r}"
        ) from None
    for c, r in terms:
        if not (math.isfinite(c) and math.isfinite(r) and r >= 0.0):
            raise InvalidModelError(f"field_scale_flow needs finite coefficients and rates >= 0, got {(c, r)}")
    sigma0_sq = float(field_scale) ** 2
    if not terms:
        return terms, 0.25 * sigma0_sq
    rates = np.array([r for _, r in terms])
    coefs = np.array([c for c, _ in terms])
    positive_rates = rates[rates > 0]
    grid = np.array([0.0])
    if positive_rates.size:
        grid = np.concatenate([grid, np.geomspace(1e-3 / positive_rates.max(), 30.0 / positive_rates.min(), 2001)])
    values = sigma0_sq + np.sum(coefs[:, None] * np.expm1(-2.0 * rates[:, None] * grid[None, :]), axis=0)
    limit = sigma0_sq - float(np.sum(coefs[rates > 0]))
    smallest = min(float(np.min(values)), limit)
    if not smallest > 0.0:
        raise InvalidModelError(
            f"field_scale_flow {list(terms)} with field_scale {field_scale} gives sigma(t)^2 <= 0 "
            f"(minimum {smallest:.4g}); sigma(t)^2 = field_scale^2 + sum_k c_k (exp(-2 r_k t) - 1) must stay > 0"
        )
    return terms, 0.25 * smallest


def field_scale_at(t, field_scale: float, flow: tuple[tuple[float, float], ...], floor_sq: float):
    """sigma(t) (a JAX scalar of t's dtype) for validated `flow` terms; see `check_field_scale_flow`."""
    import jax.numpy as jnp

    t = jnp.asarray(t)
    if not flow:
        return jnp.asarray(field_scale, t.dtype)
    var = jnp.asarray(float(field_scale) ** 2, t.dtype)
    for c, r in flow:
        if r > 0.0 and c != 0.0:
            var = var + c * jnp.expm1(-2.0 * r * t)
    return jnp.sqrt(jnp.maximum(var, floor_sq))


def field_scale_flow_terms(
    lattice: Lattice, power, prior, rates, *, max_terms: int = 6
) -> tuple[float, list[list[float]]]:
    """(sigma(0), flow terms) for an Ornstein-Uhlenbeck scheme, from spectra on the full FFT grid.

    **Arguments:**

    - `power`: P0(p) = L^d <|phi~_0(p)|^2>, the data's power spectrum (zero-mode mean included).
    - `prior`: G_inf(p), the stationary spectrum (`scheme.prior_spectrum(lattice, half=False)`).
    - `rates`: r(p) with a_t(p) = exp(-r(p) t) (e.g. `-log a_1(p)`; Carosso-M: speed (|phat|^2 + M^2)).
    - `max_terms`: modes are grouped by rate into at most this many terms: the slowest rate (the
      zero mode for Carosso-M) exactly, the others in log-spaced rate bins, each bin's rate the
      |c|-weighted geometric mean of its members.

    **Returns:** sigma(0) = sqrt(L^-d sum_p P0) and [[c_k, r_k], ...] (JSON-ready) such that
    sigma(t)^2 = sigma(0)^2 + sum_k c_k (exp(-2 r_k t) - 1) is the exact per-site variance of p_t
    when each bin holds one rate (and a close approximation otherwise).
    """
    power = np.asarray(power, np.float64).reshape(-1)
    prior = np.asarray(prior, np.float64).reshape(-1)
    rates = np.asarray(rates, np.float64).reshape(-1)
    if not (power.shape == prior.shape == rates.shape):
        raise ValueError("power, prior and rates must be given on the same (full) grid")
    if not (np.all(np.isfinite(power)) and np.all(np.isfinite(prior)) and np.all(rates > 0)):
        raise ValueError("field_scale_flow_terms needs finite spectra and positive rates")
    vol = lattice.volume
    sigma0 = math.sqrt(float(np.sum(power)) / vol)
    coef = (power - prior) / vol
    slowest = rates.min()
    is_slow = np.isclose(rates, slowest, rtol=1e-9, atol=0.0)
    terms = [[float(np.sum(coef[is_slow])), float(slowest)]]
    rest_r, rest_c = rates[~is_slow], coef[~is_slow]
    if rest_r.size:
        bins = max(int(max_terms) - 1, 1)
        edges = np.geomspace(rest_r.min(), rest_r.max() * (1 + 1e-12), bins + 1)
        which = np.clip(np.searchsorted(edges, rest_r, side="right") - 1, 0, bins - 1)
        for b in range(bins):
            sel = which == b
            if not np.any(sel):
                continue
            c, r = rest_c[sel], rest_r[sel]
            weight = np.abs(c)
            log_r = np.sum(weight * np.log(r)) / np.sum(weight) if np.sum(weight) > 0 else float(np.mean(np.log(r)))
            terms.append([float(np.sum(c)), float(np.exp(log_r))])
    return sigma0, terms
