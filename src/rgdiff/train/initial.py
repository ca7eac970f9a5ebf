"""Fresh score models for training: where a renormalizing diffusion model starts.

A model learns s_theta(phi, t) ~ grad log p_t [5.23] under a scheme with a stationary law p_inf
(Carosso-M, kernel [5.20]). It starts at the score of p_inf, knowing nothing of the UV, with
its field scale following the exact flow of the data's per-site variance ([5.32]: a linear
kernel pushes the power spectrum forward as G_t = a_t^2 G_0 + v_t).
"""

from __future__ import annotations

import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.models._errors import InvalidModelError
from rgdiff.models.convnet import ConvScore
from rgdiff.models.eft import EFTScore
from rgdiff.models.scales import field_scale_flow_terms
from rgdiff.objectives.score_matching import hyvarinen_couplings
from rgdiff.rg import flowed_site_variance

SCALE_TOLERANCE = 0.05  # relative error of the exponential field-scale fit that is still used
ZERO_MODE_FEATURES = 8  # tanh features of the EFT model's zero-mode (constraint potential) term


def prior_couplings(scheme, lattice: Lattice) -> tuple[float, float, float]:
    """(f_1, f_2, f_3) of the EFT score [5.26] of the scheme's stationary law p_inf.

    p_inf is Gaussian with spectrum G_inf(p) (`mode_prior_spectrum`); Carosso-M's ([5.20] as
    t -> inf) is noise / (|phat|^2 + M^2), a free field, whose score eps^d (1/G_inf) acting as
    (|phat|^2 + M^2) / noise is (eps^d / noise) (Delta phi - M^2 phi). Read off G_inf at p = 0 and
    at the unit momentum: f_1 = eps^d (1/G(p1) - 1/G(0)) / |phat1|^2, f_2 = -eps^d / G(0).
    """
    e = lattice.spacing**lattice.dim
    g0 = float(scheme.mode_prior_spectrum(0.0, lattice))
    g1 = float(scheme.mode_prior_spectrum(lattice.phat1_sq, lattice))
    return (e * (1.0 / g1 - 1.0 / g0) / lattice.phat1_sq, -e / g0, 0.0)


def _probe_time(lattice: Lattice) -> float:
    """A time short against every mode's decay, where -log a_t(p) / t is the rate r(p)."""
    return 1e-2 / lattice.cutoff**2


def _decay_rates(scheme, lattice: Lattice) -> np.ndarray:
    """r(p) with a_t(p) = exp(-r(p) t) on the full grid (Carosso-M [5.20]: s (|phat|^2 + M^2))."""
    probe = _probe_time(lattice)
    a_probe, _ = scheme.kernel(probe, lattice, half=False)
    return -np.log(np.asarray(a_probe)) / probe


def _uv_couplings(flat: np.ndarray, lattice: Lattice, scheme):
    """The EFT model's t-dependent starting couplings: the closed-form score-matching estimate on
    the data at t = 0 (`hyvarinen_couplings`), relaxing to the stationary law's at the rate 2 r_0
    at which the slowest mode forgets the UV (a_t^2 = exp(-2 r_0 t)). Gradient descent alone
    finds the t = 0 couplings slowly in a broken phase, where phi ~ v on every site makes phi and
    phi^3 nearly collinear (paper point: m2(0) = -0.31 for the bare -2 after 1500 steps).
    (None, 1.0) (constant start at the stationary law) if the estimate is not a usable score."""
    try:
        uv = hyvarinen_couplings(flat, lattice)
    except np.linalg.LinAlgError:
        return None, 1.0
    rate = 2.0 * float(np.min(_decay_rates(scheme, lattice)))
    if not (all(np.isfinite(uv)) and uv[0] > 0 and np.isfinite(rate) and rate > 0):
        return None, 1.0
    return uv, rate


def _field_scale(scheme, lattice: Lattice, flat: np.ndarray, horizon: float) -> tuple[float, list]:
    """(sigma(0), flow terms) of the model's field scale sigma(t).

    sigma(t)^2 is the exact per-site variance of p_t, L^-d sum_p [a_t(p)^2 P0(p) + v_t(p)] [5.32]
    with P0 the data's power spectrum, written as a few exponentials (`field_scale_flow_terms`;
    exact for an Ornstein-Uhlenbeck scheme such as Carosso-M, where v_t = G_inf (1 - a_t^2) and
    a_t = exp(-r t)). Where that form misses the exact variance by more than `SCALE_TOLERANCE`
    at a few times up to `horizon`, the scale is the constant rms of the data.
    """
    constant = (float(np.sqrt(np.mean(flat**2))), [])
    if not scheme.has_prior:
        return constant
    power = lattice.power_spectrum(flat, half=False)
    prior = np.asarray(scheme.prior_spectrum(lattice, half=False))
    rates = _decay_rates(scheme, lattice)
    if not np.all(rates > 0):
        return constant
    sigma0, terms = field_scale_flow_terms(lattice, power, prior, rates)
    power_half = lattice.power_spectrum(flat)

    def fitted(t):
        return sigma0**2 + sum(c * np.expm1(-2.0 * r * t) for c, r in terms)

    checks = [0.0, _probe_time(lattice), 1.0 / max(scheme.mass, 1e-12) ** 2, horizon]
    for t in checks:
        exact = flowed_site_variance(scheme, lattice, power_half, t)
        if abs(fitted(t) - exact) > SCALE_TOLERANCE * exact:
            return constant
    return sigma0, terms


def _zero_mode_scale(scheme, lattice: Lattice, flat: np.ndarray) -> tuple[float, list]:
    """(sigma_M(0), flow terms) of the zero mode M = phi~(0): sigma_M(t)^2 = a_t(0)^2 <M_0^2> + v_t(0) / L^d,
    one exponential for an Ornstein-Uhlenbeck scheme (Carosso-M: v_t = G_inf (1 - a_t^2)), none
    without a stationary law (then sigma_M stays at its UV value)."""
    second = float(np.mean(np.mean(flat, axis=lattice.axes) ** 2))
    if not scheme.has_prior:
        return float(np.sqrt(second)), []
    stationary = float(scheme.mode_prior_spectrum(0.0, lattice)) / lattice.volume
    rate = float(np.asarray(_decay_rates(scheme, lattice)).reshape(-1)[0])
    return float(np.sqrt(second)), [[second - stationary, rate]]


def initial_model(kind: str, lattice: Lattice, scheme, fields: np.ndarray, horizon: float, *, key):
    """A fresh score model ("eft-score" or "score") for training on UV `fields` under `scheme`,
    starting at the score of the scheme's stationary law (`prior_couplings`), its field scale
    following the exact flow of the data's variance [5.32]; the EFT model's couplings start at
    the data's t = 0 estimate and relax to the stationary law's, and it has a zero-mode
    (constraint potential) term scaled by the exact flow of <M^2>."""
    flat = np.asarray(fields, dtype=np.float64).reshape(-1, *lattice.shape)
    sigma, flow = _field_scale(scheme, lattice, flat, horizon)
    prior_f = prior_couplings(scheme, lattice)
    if kind == "eft-score":
        uv, rate = _uv_couplings(flat, lattice, scheme)
        zero_scale, zero_flow = _zero_mode_scale(scheme, lattice, flat)
        return EFTScore(lattice, time_scale=horizon, field_scale=sigma, field_scale_flow=flow, coupling_init=prior_f,
                        coupling_init_uv=uv, coupling_init_rate=rate, zero_mode_features=ZERO_MODE_FEATURES,
                        zero_mode_scale=zero_scale, zero_mode_scale_flow=zero_flow, key=key)
    if kind == "score":
        return ConvScore(lattice, time_scale=horizon, field_scale=sigma, field_scale_flow=flow, prior=prior_f, key=key)
    raise InvalidModelError(f"unknown score model {kind!r}; choose one of score, eft-score")
