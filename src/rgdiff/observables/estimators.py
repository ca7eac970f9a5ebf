"""Observables and estimators of lattice phi^4 (conventions page; paper [7.5]-[7.11]).

Per configuration we record the magnetization M = mean_n phi(n) = phi~(0), its powers, the unit
Fourier modes phi~(e_i) and max_n |phi(n)|. Ensemble estimators are then functions of means of
these series, with errors by the Gamma method (`rgdiff.observables.stats`):

- abs_magnetization <|M|>; chi = V <M^2>; chi_conn = V (<M^2> - <|M|>^2);
  binder U4 = 1 - <M^4> / (3 <M^2>^2)
- G2(p) = L^d (<|phi~(p)|^2> - |<phi~(p)>|^2); G2_p1 averages the d unit momenta e_i
- m_R^2 = |phat_1|^2 / (G2(0)/G2(p1) - 1)   (second-moment mass, [7.8]); null if the ratio <= 1
- Z = m_R^2 G2(0)   [7.9]
- lambda_R = -Z^2 G4c(0) / G2(0)^4 with G4c(0) = L^{3d} k4(phi~(0))   [7.10]; g_R = lambda_R / m_R^(4-d)
- max_abs_phi = < max_n |phi(n)| >   [7.11]

Broken phase: if no chain ever changes the sign of M, every configuration is mapped to the M > 0
vacuum (phi -> sign(M) phi, an exact symmetry) before measuring ("vacuum": "mapped").
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.observables.stats import UNDEFINED, Estimate, derived, evaluate, primaries
from rgdiff.theory.gaussian import free_field_spectrum

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import autograd.numpy as anp  # pyerrors differentiates derived observables with autograd
    from pyerrors import derived_observable as dobs

OBSERVABLES = (
    "abs_magnetization",
    "chi",
    "chi_conn",
    "binder",
    "G2_0",
    "G2_p1",
    "m_R",
    "Z",
    "lambda_R",
    "g_R",
    "max_abs_phi",
)

DESCRIPTIONS = {
    "abs_magnetization": "<|M|>",
    "chi": "V <M^2>",
    "chi_conn": "V (<M^2> - <|M|>^2)",
    "binder": "1 - <M^4>/(3 <M^2>^2)",
    "G2_0": "L^d (<M^2> - <M>^2)",
    "G2_p1": "L^d <|phi~(e_i)|^2> (avg over i)",
    "m_R": "second-moment mass [7.8]",
    "Z": "m_R^2 G2(0) [7.9]",
    "lambda_R": "-Z^2 G4c(0)/G2(0)^4 [7.10]",
    "g_R": "lambda_R / m_R^(4-d)",
    "max_abs_phi": "<max_n |phi(n)|> [7.11]",
}


@dataclasses.dataclass(frozen=True)
class Measurement:
    observables: dict[str, Estimate]
    meta: dict

    def as_json(self) -> dict:
        return {
            "observables": {k: v.as_dict() for k, v in self.observables.items()},
            "meta": self.meta,
        }


def magnetization(fields: np.ndarray, lattice: Lattice) -> np.ndarray:
    return np.mean(fields, axis=lattice.axes)


def unit_modes(fields: np.ndarray, lattice: Lattice) -> np.ndarray:
    """phi~(e_i) for i = 1..d, shape (*batch, d), complex [4.26]."""
    n = lattice.size
    phase = np.exp(-2j * np.pi * np.arange(n) / n) / n
    out = []
    for i, ax in enumerate(lattice.axes):
        others = tuple(a for a in lattice.axes if a != ax)
        profile = np.mean(fields, axis=others) if others else fields  # (*batch, N)
        out.append(profile @ phase)
    return np.stack(out, axis=-1)


def tunnels(m: np.ndarray) -> bool:
    """Whether any chain (rows of m, shape (chains, samples)) changes the sign of M."""
    s = np.sign(m)
    return bool(np.any(s != s[:, :1]))


def maps_vacuum(m: np.ndarray, *, markov: bool) -> bool:
    """The conventions page's rule: map to one vacuum when M never changes sign.

    Markov chains (rows of m) are mapped when no chain tunnels; independent samples when all
    share one sign.
    """
    if markov:
        return not tunnels(m)
    return not bool(np.any(np.sign(m) != np.sign(m.flat[0])))


def configuration_series(fields: np.ndarray, lattice: Lattice, *, signs: np.ndarray | None = None) -> dict:
    """Per-configuration series, each of shape (chains, samples).

    `signs` (shape (chains, samples), entries +-1) maps configurations to one vacuum first.
    """
    fields = np.asarray(fields)
    m = magnetization(fields, lattice)
    modes = unit_modes(fields, lattice)
    if signs is not None:
        m = m * signs
        modes = modes * signs[..., None]
    series = {
        "M": m,
        "absM": np.abs(m),
        "M2": m**2,
        "M3": m**3,
        "M4": m**4,
        "max_abs_phi": np.max(np.abs(fields), axis=lattice.axes),
    }
    for i in range(lattice.dim):
        series[f"re{i}"] = modes[..., i].real
        series[f"im{i}"] = modes[..., i].imag
        series[f"p2_{i}"] = np.abs(modes[..., i]) ** 2
    return series


def _ratio_above_one(values) -> bool:
    g0, g1 = values
    return g1 > 0 and g0 / g1 > 1


def measure(
    fields: np.ndarray,
    lattice: Lattice,
    *,
    markov: bool = True,
    vacuum: str = "auto",
    signs: np.ndarray | None = None,
) -> Measurement:
    """All estimators of the conventions page on an ensemble.

    **Arguments:**

    - `fields`: shape (chains, samples, *lattice). For `markov=False` (independent samples)
      the chain axis carries no meaning and plain standard errors are used.
    - `vacuum`: "auto" maps to the M > 0 vacuum when no chain tunnels, "raw" never maps,
      "mapped" always maps (with `signs` if given, else sign(M) per configuration).
    """
    fields = np.asarray(fields, dtype=np.float64)
    lattice.check_field(fields, "ensemble")
    if fields.ndim != lattice.dim + 2:
        raise ValueError(f"fields must have shape (chains, samples, *lattice), got {fields.shape}")
    m = magnetization(fields, lattice)
    if vacuum == "auto":
        vacuum = "mapped" if maps_vacuum(m, markov=markov) else "raw"
    if vacuum == "mapped" and signs is None:
        signs = np.where(m >= 0, 1.0, -1.0)
    if vacuum == "raw":
        signs = None
    series = configuration_series(fields, lattice, signs=signs)
    obs = primaries(series, markov=markov)
    d, V, Ld = lattice.dim, lattice.sites, lattice.volume
    p1 = lattice.phat1_sq

    def g2_0(x):
        return Ld * (x[1] - x[0] ** 2)

    def g2_p1(x):
        # x = [re0, im0, p2_0, re1, im1, p2_1, ...]
        tot = 0.0
        for i in range(d):
            tot = tot + x[3 * i + 2] - x[3 * i] ** 2 - x[3 * i + 1] ** 2
        return Ld * tot / d

    def k4(x):
        m1, m2_, m3, m4 = x
        mu2 = m2_ - m1**2
        mu4 = m4 - 4 * m3 * m1 + 6 * m2_ * m1**2 - 3 * m1**4
        return mu4 - 3 * mu2**2

    mode_obs = [obs[f"{k}{i}"] for i in range(d) for k in ("re", "im", "p2_")]
    moment_obs = [obs["M"], obs["M2"], obs["M3"], obs["M4"]]
    # pyerrors also evaluates each derived quantity on per-replica means, where e.g. the
    # m_R ratio can dip below 1: those NaNs are harmless for the error, so are not warned about.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G0 = dobs(lambda x, **kw: g2_0(x), [obs["M"], obs["M2"]])
        G1 = dobs(lambda x, **kw: g2_p1(x), mode_obs)
        G4c = dobs(lambda x, **kw: Ld**3 * k4(x), moment_obs)

        def msq(x):
            return p1 / (x[0] / x[1] - 1.0)

        out: dict[str, Estimate] = {}
        out["abs_magnetization"] = evaluate(obs["absM"], markov=markov)
        out["chi"] = derived(lambda o: V * o, [obs["M2"]], markov=markov)
        out["chi_conn"] = derived(lambda a, b: V * (b - a * a), [obs["absM"], obs["M2"]], markov=markov)
        out["binder"] = derived(
            lambda m2_, m4: dobs(lambda x, **kw: 1.0 - x[1] / (3.0 * x[0] ** 2), [m2_, m4]),
            [obs["M2"], obs["M4"]],
            markov=markov,
        )
        out["G2_0"] = evaluate(G0, markov=markov)
        out["G2_p1"] = evaluate(G1, markov=markov)
        ok = _ratio_above_one([G0.value, G1.value])
        if ok:
            mR = dobs(lambda x, **kw: anp.sqrt(msq(x)), [G0, G1])
            Z = dobs(lambda x, **kw: msq(x) * x[0], [G0, G1])
            lamR = dobs(lambda x, **kw: -((msq(x) * x[0]) ** 2) * x[2] / x[0] ** 4, [G0, G1, G4c])
            gR = dobs(
                lambda x, **kw: -((msq(x) * x[0]) ** 2) * x[2] / x[0] ** 4 / msq(x) ** ((4 - d) / 2),
                [G0, G1, G4c],
            )
            out["m_R"] = evaluate(mR, markov=markov)
            out["Z"] = evaluate(Z, markov=markov)
            out["lambda_R"] = evaluate(lamR, markov=markov)
            out["g_R"] = evaluate(gR, markov=markov)
        else:
            for k in ("m_R", "Z", "lambda_R", "g_R"):
                out[k] = UNDEFINED
        out["max_abs_phi"] = evaluate(obs["max_abs_phi"], markov=markov)

    chains, samples = fields.shape[:2]
    meta = {
        "vacuum": vacuum,
        "chains": int(chains),
        "samples_per_chain": int(samples),
        "error_method": "gamma (pyerrors, chains as replicas)" if markov else "standard error (independent samples)",
        "lattice": lattice.describe(),
    }
    return Measurement({k: out[k] for k in OBSERVABLES}, meta)


def free_field_expectations(m2: float, lattice: Lattice) -> dict[str, float]:
    """Exact values for the free field (lam = 0, m2 > 0): G2 is the free propagator [7.2]
    (`free_field_spectrum`), so m_R^2 = m2 [7.8], Z = 1 [7.9] and lambda_R = 0 [7.10]."""
    spectrum = np.asarray(free_field_spectrum(lattice, m2, half=True))
    unit = (0,) * (lattice.dim - 1) + (1,)  # e_d on the rfftn half grid; every e_i has the same |phat|^2
    return {
        "G2_0": float(spectrum[(0,) * lattice.dim]),
        "G2_p1": float(spectrum[unit]),
        "m_R": math.sqrt(m2),
        "Z": 1.0,
        "lambda_R": 0.0,
        "chi": lattice.sites / (lattice.volume * m2),
    }
