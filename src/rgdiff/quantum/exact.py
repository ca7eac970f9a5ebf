"""Exact and closed-form references for the ground state of the lattice Hamiltonian [6.9].

- `free_ground_energy`: E0 = 1/2 sum_p sqrt(|phat|^2 + m2), the sum over all N^d momenta (lam = 0).
- `gaussian_state`: the energy of a Gaussian state |Psi|^2 = free-field ground state of mass M
  (mode variances <|phi~(p)|^2> = 1/(2 L^d omega_p), omega_p = sqrt(|phat|^2 + M^2)), in closed form:
      E(M) = 1/4 sum_p [ omega_p + (|phat|^2 + m2)/omega_p ] + eps^d lam/8 N^d <phi^2>^2,
      <phi^2> = L^-d sum_p 1/(2 omega_p).
- `gaussian_mode_energy`: the same for any translation-invariant covariance (mode by mode).
- `best_gaussian`: its minimum. The stationarity condition over *all* translation-invariant
  covariances is the gap equation M^2 = m2 + lam/2 <phi^2>, whose unique solution has the free-field
  shape, so optimising M is optimising the full translation-invariant Gaussian (the Hartree state).
- `harmonic_lower_bound`: a rigorous lower bound on E0 for every lattice (phi^4 >= 2 a phi^2 - a^2).
- `exact_diagonalization`: the ground state of H for <= 4 sites in a product harmonic-oscillator
  basis (canonical q = eps^(d/2) phi), and `converged_ground_energy` which grows the basis until
  the energy stops moving.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rgdiff.errors import InvalidTheoryError
from rgdiff.quantum.hamiltonian import Hamiltonian

ED_MAX_SITES = 4
ED_TOLERANCE = {1: 1e-9, 2: 1e-9, 3: 1e-9, 4: 1e-7}  # relative; 4 sites x 16 levels is 65536 states
ED_MAX_LEVELS = {1: 60, 2: 40, 3: 24, 4: 16}


def free_ground_energy(h: Hamiltonian) -> float:
    """E0 = 1/2 sum_p sqrt(|phat|^2 + m2) of the free field (lam = 0), over all N^d momenta."""
    if h.m2 <= 0:
        raise InvalidTheoryError("the free-field ground energy needs m2 > 0")
    return float(0.5 * np.sum(h.omega()))


@dataclasses.dataclass(frozen=True)
class GaussianState:
    """A free-field-shaped Gaussian ground-state ansatz of mass^2 `mass_sq` and its exact energy."""

    mass_sq: float
    energy: float
    phi_sq: float  # <phi(n)^2>
    g2: np.ndarray  # L^d <|phi~(p)|^2> = 1/(2 omega_p) on the FFT grid

    def as_dict(self) -> dict:
        return {"mass_sq": self.mass_sq, "energy": self.energy, "phi_sq": self.phi_sq}


def _phi_sq(h: Hamiltonian, omega: np.ndarray) -> float:
    """<phi(n)^2> = L^-d sum_p 1/(2 omega_p) of the free-field-shaped Gaussian with frequencies omega."""
    return float(np.sum(1.0 / (2.0 * omega)) / h.length**h.dim)


def gaussian_state(h: Hamiltonian, mass_sq: float) -> GaussianState:
    """Exact energy of |Psi|^2 = the free ground state of mass^2 `mass_sq` > 0 (see module doc)."""
    if not mass_sq > 0:
        raise InvalidTheoryError(f"the Gaussian state needs M^2 > 0, got {mass_sq}")
    k = h.phat_sq() + h.m2
    w = h.omega(mass_sq)
    phi_sq = _phi_sq(h, w)
    energy = 0.25 * np.sum(w + k / w) + h.cell * h.lam / 8.0 * h.sites * phi_sq**2
    return GaussianState(float(mass_sq), float(energy), phi_sq, 1.0 / (2.0 * w))


def gaussian_mode_energy(h: Hamiltonian, variances) -> float:
    """Exact energy of a zero-mean translation-invariant Gaussian |Psi|^2 with position-space
    covariance eigenvalues c_p (FFT grid, c_p = c_-p):

        E = eps^-d/8 sum_p 1/c_p + eps^d/2 sum_p (|phat|^2 + m2) c_p + eps^d lam/8 N^d C(0)^2,

    C(0) = <phi(n)^2> = N^-d sum_p c_p (the quartic term by Wick: <phi^4> = 3 C(0)^2).
    """
    c = np.asarray(variances, dtype=np.float64).reshape(h.shape)
    k = h.phat_sq() + h.m2
    c0 = np.sum(c) / h.sites
    return float(np.sum(1.0 / c) / (8.0 * h.cell) + 0.5 * h.cell * np.sum(k * c) + h.cell * h.lam / 8.0 * h.sites * c0**2)


def best_gaussian(h: Hamiltonian) -> GaussianState:
    """The lowest-energy Gaussian (Hartree) state: solve M^2 = m2 + lam/2 <phi^2>(M) by bisection.

    g(M^2) = M^2 - m2 - lam/2 <phi^2>(M^2) increases monotonically from -inf (the zero mode makes
    <phi^2> diverge as M -> 0) to +inf, so the root is unique; at lam = 0 it is M^2 = m2.
    """
    if h.lam == 0:
        return gaussian_state(h, h.m2)
    def gap(log_m2):
        m2 = math.exp(log_m2)
        return m2 - h.m2 - 0.5 * h.lam * _phi_sq(h, h.omega(m2))

    return gaussian_state(h, _solve_gap(gap))


def _solve_gap(gap) -> float:
    """The mass M^2 where a gap equation, increasing in log M^2, crosses zero (bisection in log M^2)."""
    lo, hi = -60.0, 2.0
    while gap(hi) < 0:
        hi += 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gap(mid) < 0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def harmonic_lower_bound(h: Hamiltonian) -> float:
    """A rigorous lower bound on the ground energy, for every lattice (m2 > 0 or not, any lam >= 0).

    (phi^2 - a)^2 >= 0 gives phi^4 >= 2 a phi^2 - a^2 for every real a, so as operators
    H >= H_free(M^2) - eps^d N^d lam a^2 / 24 with M^2 = m2 + lam a / 6, whose ground energy is

        f(M^2) = 1/2 sum_p sqrt(|phat|^2 + M^2) - eps^d N^d lam a^2 / 24    (any M^2 > 0).

    Every M^2 > 0 gives a bound; f is concave in a, maximal where a = <phi^2>(M^2) = L^-d sum_p
    1/(2 omega_p) (the gap equation with lam/6 in place of the Hartree lam/2), solved by bisection.
    At lam = 0 it is the free-field E0.
    """
    if h.lam == 0:
        return free_ground_energy(h)

    def bound(m2):
        a = 6.0 * (m2 - h.m2) / h.lam
        return float(0.5 * np.sum(h.omega(m2)) - h.cell * h.sites * h.lam * a**2 / 24.0)

    def gap(log_m2):
        m2 = math.exp(log_m2)
        return m2 - h.m2 - h.lam / 6.0 * _phi_sq(h, h.omega(m2))

    return bound(_solve_gap(gap))


# exact diagonalization -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EDResult:
    energy: float
    phi_sq: float  # <phi(n)^2> in the ground state, site-averaged
    basis: int  # oscillator levels per site
    frequency: float  # oscillator frequency of the basis

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def exact_diagonalization(h: Hamiltonian, levels: int, frequency: float | None = None) -> EDResult:
    """Lowest eigenvalue of H on <= ED_MAX_SITES (4) sites in a product oscillator basis of `levels` states per site.

    In q = eps^(d/2) phi: H = sum_n p_n^2/2 + 1/2 q.K q + g sum_n q_n^4 with g = lam/(24 eps^d). The
    basis frequency defaults to the Hartree on-site frequency sqrt(K_nn - m2 + M_H^2); matrices of q
    are built `levels + 4` deep before truncation so q^2, q^4, p^2 are exact within the basis.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    if h.sites > ED_MAX_SITES:
        raise InvalidTheoryError(f"exact diagonalization is for <= {ED_MAX_SITES} sites, got {h.sites}")
    K = h.stiffness_matrix()
    if frequency is None:
        frequency = math.sqrt(K[0, 0] - h.m2 + best_gaussian(h).mass_sq)
    w = float(frequency)
    big = levels + 4
    a = np.diag(np.sqrt(np.arange(1, big)), 1)
    q_big = (a + a.T) / math.sqrt(2.0 * w)
    p_big = 1j * math.sqrt(w / 2.0) * (a.T - a)
    q = q_big[:levels, :levels]
    q2 = (q_big @ q_big)[:levels, :levels]
    q4 = np.linalg.matrix_power(q_big, 4)[:levels, :levels]
    p2 = np.real(p_big @ p_big)[:levels, :levels]
    g = h.lam / (24.0 * h.cell)
    eye = sp.identity(levels, format="csr")

    def on_site(op, n):
        out = None
        for m in range(h.sites):
            f = sp.csr_matrix(op) if m == n else eye
            out = f if out is None else sp.kron(out, f, format="csr")
        return out

    H = None
    for n in range(h.sites):
        term = on_site(0.5 * p2 + 0.5 * K[n, n] * q2 + g * q4, n)
        H = term if H is None else H + term
    for n in range(h.sites):
        for m in range(n + 1, h.sites):
            if K[n, m] != 0:
                H = H + K[n, m] * (on_site(q, n) @ on_site(q, m))
    if H.shape[0] <= 400:
        vals, vecs = np.linalg.eigh(H.toarray())
    else:
        vals, vecs = eigsh(H, k=1, which="SA", tol=1e-12)
    i = int(np.argmin(vals))
    psi = vecs[:, i]
    phi_sq = float(np.mean([psi @ (on_site(q2, n) @ psi) for n in range(h.sites)])) / h.cell
    return EDResult(float(vals[i]), phi_sq, levels, w)


def converged_ground_energy(h: Hamiltonian, tol: float | None = None, start: int = 12, step: int = 4,
                            max_levels: int = 60) -> EDResult:
    """Grow the per-site basis until the ground energy changes by less than `tol` (relative;
    default `ED_TOLERANCE` by the number of sites). The truncated basis is variational, so the
    result lies above E0 by about the last change."""
    if tol is None:
        tol = ED_TOLERANCE.get(h.sites, 1e-9)
    prev = exact_diagonalization(h, start)
    levels = start + step
    max_levels = min(max_levels, ED_MAX_LEVELS.get(h.sites, max_levels))
    change = math.inf
    while levels <= max_levels:
        cur = exact_diagonalization(h, levels)
        change = abs(cur.energy - prev.energy)
        if change <= tol * max(1.0, abs(cur.energy)):
            return cur
        prev, levels = cur, levels + step
    raise InvalidTheoryError(
        f"exact diagonalization did not converge to {tol:g} within {max_levels} levels per site "
        f"(last change {change:.2e}); the coupling may be too strong for this basis"
    )
