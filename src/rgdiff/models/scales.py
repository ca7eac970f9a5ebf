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

from ..lattice import Lattice
from ..theory import Phi4


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
    comp = (2.0 * lat.size / lat.length) * np.sin(np.pi * np.arange(lat.size) / lat.size)
    grids = np.meshgrid(*([comp**2] * lat.dim), indexing="ij")
    w = sum(grids).reshape(-1)[1:] + m2_eff  # |phat|^2 + m2_eff over p != 0 [4.27]
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
