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
- correlators (`correlators`): the position-space two-point function along an axis
  G(x) = <phi(n) phi(n + x e_i)> - <M>^2, the time-slice correlator
  C(t) = L^(d-1) (<S(tau) S(tau + t)> - <M>^2) of the slice means S along an axis (averaged over
  tau, the d axes and both directions), and the cosh effective mass
  m_eff(t) = arccosh[(C(t - eps) + C(t + eps)) / (2 C(t))] / eps; `effective_mass` is m_eff at the
  separation t* = eps max(1, floor(N/4)) (`effective_mass_separation`)

Broken phase: if no chain ever changes the sign of M, every configuration is mapped to the M > 0
vacuum (phi -> sign(M) phi, an exact symmetry) before measuring ("vacuum": "mapped").
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.errors import RgdiffError
from rgdiff.precision import warn_unless_float64
from rgdiff.observables.stats import (
    MIN_SAMPLES_PER_CHAIN,
    UNDEFINED,
    Estimate,
    assess,
    blocked_jackknife,
    chain_diagnostics,
    evaluate,
    jackknife_blocks,
    linearized_series,
    primaries,
    window_exhausted,
)
from rgdiff.observables.stats import BIAS_FRACTION, MAX_RHAT, MIN_EFFECTIVE_SAMPLES
from rgdiff.theory.gaussian import free_field_spectrum

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import autograd.numpy as anp  # pyerrors differentiates derived observables with autograd
    from pyerrors import derived_observable as dobs

from rgdiff.errors import ImpossibleResultError  # noqa: E402
from rgdiff.observables.sanity import flag_estimates  # noqa: E402


class InsufficientSamplesError(RgdiffError):
    """An ensemble too short to measure with the Gamma method."""


def check_measurable(chains: int, samples: int, *, markov: bool = True, source: str = "the ensemble") -> None:
    """Refuse (`InsufficientSamplesError`) an ensemble too small to measure: fewer than
    `MIN_SAMPLES_PER_CHAIN` samples per chain (Markov chains) or in all (independent samples)."""
    per_replica = samples if markov else chains * samples
    if per_replica < MIN_SAMPLES_PER_CHAIN:
        what = "samples per chain" if markov else "samples"
        raise InsufficientSamplesError(
            f"{source} has {per_replica} {what}; measuring needs at least {MIN_SAMPLES_PER_CHAIN} "
            "(the Gamma method's autocorrelation window); sample more"
        )


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
    "effective_mass",
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
    "effective_mass": "cosh effective mass of C(t) at t = eps max(1, N//4)",
}


@dataclasses.dataclass(frozen=True)
class Measurement:
    """The estimates of `measure`, its metadata and, where computed, the correlators (`correlators`)."""

    observables: dict[str, Estimate]
    meta: dict
    correlators: dict | None = None

    def as_json(self) -> dict:
        out = {
            "observables": {k: v.as_dict() for k, v in self.observables.items()},
            "meta": self.meta,
        }
        if self.correlators is not None:
            out["correlators"] = self.correlators
        return out


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
    # the slice products of the effective mass at t* - eps, t*, t* + eps (sign-invariant)
    n = effective_mass_separation(lattice)
    products = slice_products(fields, lattice, (n - 1, n, n + 1))
    for key, j in zip(EFFECTIVE_MASS_KEYS, range(3)):
        series[key] = products[..., j]
    return series


EFFECTIVE_MASS_KEYS = ("slice_before", "slice_at", "slice_after")


def effective_mass_separation(lattice: Lattice) -> int:
    """The separation, in lattice steps, at which `effective_mass` is reported: max(1, floor(N/4))."""
    return max(1, lattice.size // 4)


def slice_means(fields: np.ndarray, lattice: Lattice) -> list[np.ndarray]:
    """S_i(tau): the mean of the field over the slice at coordinate tau of axis i, for each axis i;
    each of shape (*batch, N)."""
    out = []
    for ax in lattice.axes:
        others = tuple(a for a in lattice.axes if a != ax)
        out.append(np.mean(fields, axis=others) if others else np.asarray(fields))
    return out


def slice_products(fields: np.ndarray, lattice: Lattice, separations) -> np.ndarray:
    """T(n) = N^-1 sum_tau S(tau) S(tau + n), averaged over the d axes, per configuration, at the
    given separations n (lattice steps, taken mod N); shape (*batch, len(separations))."""
    fields = np.asarray(fields, dtype=np.float64)
    out = np.zeros(fields.shape[: fields.ndim - lattice.dim] + (len(separations),))
    for s in slice_means(fields, lattice):
        for j, n in enumerate(separations):
            out[..., j] += np.mean(s * np.roll(s, -(int(n) % lattice.size), axis=-1), axis=-1)
    return out / lattice.dim


def _periodic_autocorrelation(x: np.ndarray, axis: int) -> np.ndarray:
    """sum_tau x(tau) x(tau + n) / N along `axis` for n = 0..N//2 (by FFT), the axis kept in place."""
    n = x.shape[axis]
    f = np.fft.rfft(x, axis=axis)
    ac = np.fft.irfft(f * np.conj(f), n=n, axis=axis) / n
    return np.take(ac, np.arange(n // 2 + 1), axis=axis)


def correlator_series(fields: np.ndarray, lattice: Lattice, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per configuration, at the separations n = 0..N//2 along an axis (averaged over the d axes
    and both directions): g(n) = V^-1 sum_x phi(x) phi(x + n e_i) and T(n) = N^-1 sum_tau S(tau) S(tau + n)
    (`slice_products`). Each of shape (*batch, N//2 + 1); sign-invariant (phi -> -phi)."""
    fields = np.asarray(fields, dtype=np.float64)
    lead = fields.shape[: fields.ndim - lattice.dim]
    flat = fields.reshape(-1, *lattice.shape)
    k = lattice.size // 2 + 1
    g = np.zeros((flat.shape[0], k))
    t = np.zeros((flat.shape[0], k))
    for start in range(0, flat.shape[0], chunk):
        block = flat[start : start + chunk]
        rows = slice(start, start + block.shape[0])
        for ax, s in zip(lattice.axes, slice_means(block, lattice)):
            ac = np.moveaxis(_periodic_autocorrelation(block, ax), ax, -1)  # (b, ..., N//2 + 1)
            g[rows] += ac.reshape(block.shape[0], -1, k).mean(axis=1)
            t[rows] += _periodic_autocorrelation(s, -1)
    return (g / lattice.dim).reshape(*lead, k), (t / lattice.dim).reshape(*lead, k)


def estimators_of_means(x: dict, lattice: Lattice, names=None) -> dict:
    """Every estimator of the conventions page as a function of the primary means `x` (names of
    `configuration_series`): the one definition that both the Gamma method (pyerrors, which
    differentiates it with autograd) and the blocked jackknife evaluate. Entries may be arrays
    (one value per jackknife sample). `names`: the estimators wanted (default all); the effective
    mass is computed only when wanted and its slice series are in `x`."""
    d, V, Ld = lattice.dim, lattice.sites, lattice.volume
    M, M2, M3, M4 = x["M"], x["M2"], x["M3"], x["M4"]
    G0 = Ld * (M2 - M**2)
    G1 = 0.0
    for i in range(d):
        G1 = G1 + x[f"p2_{i}"] - x[f"re{i}"] ** 2 - x[f"im{i}"] ** 2
    G1 = Ld * G1 / d
    mu2 = M2 - M**2
    k4 = M4 - 4 * M3 * M + 6 * M2 * M**2 - 3 * M**4 - 3 * mu2**2
    G4c = Ld**3 * k4
    msq = lattice.phat1_sq / (G0 / G1 - 1.0)  # [7.8]
    Z = msq * G0  # [7.9]
    lam = -(Z**2) * G4c / G0**4  # [7.10]
    out = {
        "chi": V * M2,
        "chi_conn": V * (M2 - x["absM"] ** 2),
        "binder": 1.0 - M4 / (3.0 * M2**2),
        "G2_0": G0,
        "G2_p1": G1,
        "m_R": anp.sqrt(msq),
        "Z": Z,
        "lambda_R": lam,
        "g_R": lam / msq ** ((4 - d) / 2),
    }
    wanted = names is None or "effective_mass" in names  # its warnings must not flag the other estimators
    if wanted and EFFECTIVE_MASS_KEYS[1] in x:  # series of `configuration_series` from this version on
        before, at, after = (x[k] - M**2 for k in EFFECTIVE_MASS_KEYS)  # C(t) up to the factor L^(d-1)
        out["effective_mass"] = cosh_effective_mass(before, at, after, lattice.spacing)
    return out


def cosh_effective_mass(before, at, after, spacing: float):
    """arccosh[(C(t - eps) + C(t + eps)) / (2 C(t))] / eps: exact for C(t) = A cosh(E (t - L/2)) / eps,
    the correlator of a single state on a periodic lattice; NaN where the ratio is below 1."""
    return anp.arccosh((before + after) / (2.0 * at)) / spacing


PRIMARY = {"abs_magnetization": "absM", "max_abs_phi": "max_abs_phi"}  # plain means
RATIO = ("m_R", "Z", "lambda_R", "g_R")  # defined only where G2(0)/G2(p1) > 1


def measure(
    fields: np.ndarray,
    lattice: Lattice,
    *,
    markov: bool = True,
    vacuum: str = "auto",
    signs: np.ndarray | None = None,
    correlators: bool = True,
) -> Measurement:
    """All estimators of the conventions page on an ensemble, each with its error, tau_int (and
    its error), chain diagnostics and a reliability verdict (`rgdiff.observables.stats`).

    **Arguments:**

    - `fields`: shape (chains, samples, *lattice). For `markov=False` (independent samples)
      the chain axis carries no meaning and plain standard errors are used.
    - `vacuum`: "auto" maps to the M > 0 vacuum when no chain tunnels, "raw" never maps,
      "mapped" always maps (with `signs` if given, else sign(M) per configuration).
    - `correlators`: also measure G(x), C(t) and m_eff(t) (`correlators`; in
      `Measurement.correlators`).
    """
    warn_unless_float64("rgdiff.observables.measure")
    fields = np.asarray(fields, dtype=np.float64)
    lattice.check_field(fields, "ensemble")
    if fields.ndim != lattice.dim + 2:
        raise ValueError(f"fields must have shape (chains, samples, *lattice), got {fields.shape}")
    chains, samples = fields.shape[:2]
    check_measurable(chains, samples, markov=markov)
    check_magnitude(fields, lattice)
    m = magnetization(fields, lattice)
    if vacuum == "auto":
        vacuum = "mapped" if maps_vacuum(m, markov=markov) else "raw"
    if vacuum == "mapped" and signs is None:
        signs = np.where(m >= 0, 1.0, -1.0)
    if vacuum == "raw":
        signs = None
    series = configuration_series(fields, lattice, signs=signs)
    obs = primaries(series, markov=markov)
    keys = list(series)
    n_total = chains * samples

    def of_means(name):
        return lambda xs, **kw: estimators_of_means(dict(zip(keys, xs)), lattice, names=(name,))[name]

    with np.errstate(all="ignore"):  # undefined entries are judged just below
        values = estimators_of_means({k: np.float64(np.mean(v)) for k, v in series.items()}, lattice)  # NumPy: 0/0 is NaN
    ratio_defined = values["G2_p1"] > 0 and values["G2_0"] / values["G2_p1"] > 1
    results, messages, final_obs = {}, {}, {}
    for name in OBSERVABLES:
        if name in RATIO and not ratio_defined:
            continue
        if name == "effective_mass" and not math.isfinite(values[name]):
            continue
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn", under="ignore"):
            warnings.simplefilter("always")
            o = obs[PRIMARY[name]] if name in PRIMARY else dobs(of_means(name), [obs[k] for k in keys])
        final_obs[name] = o
        messages[name] = [str(w.message) for w in caught]
    exhausted = {}
    for name, o in final_obs.items():
        results[name] = evaluate(o, markov=markov, warnings_seen=messages[name])
        exhausted[name] = window_exhausted(o, markov)

    # chain diagnostics of each observable's (linearized) per-configuration series
    defined = [n for n in final_obs if results[n].defined]
    diag = {}
    if markov and defined:
        stacked = np.stack([linearized_series(final_obs[n], chains, samples) for n in defined], axis=-1)
        d = chain_diagnostics(stacked)
        diag = {n: {k: d[k][i] for k in d} for i, n in enumerate(defined)}
    # blocked jackknife of the nonlinear estimators, blocks of >= 4 tau_int of the slowest of them
    derived_names = [n for n in defined if n not in PRIMARY]
    jk, blocks = {}, None
    if derived_names:
        tau_max = max(results[n].tau_int or 0.5 for n in derived_names) if markov else 0.5
        jk_series = series if markov else {k: v.reshape(1, -1) for k, v in series.items()}
        per_chain = jackknife_blocks(jk_series["M"].shape[0], jk_series["M"].shape[1], tau_max)
        jk, blocks = blocked_jackknife(lambda x: estimators_of_means(x, lattice), jk_series, per_chain)

    out: dict[str, Estimate] = {}
    for name in OBSERVABLES:
        if name not in results or not results[name].defined:
            out[name] = UNDEFINED
            continue
        out[name] = assess(
            results[name], n_total=n_total, markov=markov, diagnostics=diag.get(name),
            warnings_seen=messages[name], window_exhausted=exhausted[name],
            jackknife=jk.get(name) if name not in PRIMARY else None, blocks=blocks,
        )

    meta = {
        "vacuum": vacuum,
        "chains": int(chains),
        "samples_per_chain": int(samples),
        "error_method": "gamma (pyerrors, chains as replicas)" if markov else "standard error (independent samples)",
        "reliability": {
            "min_effective_samples": MIN_EFFECTIVE_SAMPLES, "max_rhat": MAX_RHAT,
            "nonlinear": f"blocked jackknife ({blocks} blocks), bias-corrected where |bias| > {BIAS_FRACTION} error",
        },
        "lattice": lattice.describe(),
        "effective_mass_separation": effective_mass_separation(lattice) * lattice.spacing,
    }
    if markov:
        meta["vacuum_changes"] = vacuum_changes(m)
    flagged = flag_estimates(out)  # a non-finite estimate or error is flagged, never a number
    if flagged:
        meta["impossible"] = flagged
    corr = correlator_estimates(fields, lattice, markov=markov, signs=signs) if correlators else None
    return Measurement({k: out[k] for k in OBSERVABLES}, meta, corr)


def _value_error(obs, markov: bool) -> tuple[float | None, float | None]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # an undefined point is reported as null
        est = evaluate(obs, markov=markov)
    if not est.defined or est.error is None or not math.isfinite(est.error):
        return None, None
    return est.value, est.error


def correlator_estimates(fields: np.ndarray, lattice: Lattice, *, markov: bool = True,
                         signs: np.ndarray | None = None) -> dict:
    """The correlators along an axis at the separations x = n eps, n = 0..N//2 (conventions page),
    with Gamma-method errors (plain errors for independent samples), as JSON-ready lists:

    - `G_x`: G(x) = <phi(n) phi(n + x e_i)> - <M>^2 (averaged over n, i and +-x);
    - `C_t`: C(t) = L^(d-1) (<S(tau) S(tau + t)> - <M>^2), S the slice means along an axis: the
      zero-transverse-momentum correlator, eps sum_t C(t) = G2(0);
    - `m_eff`: the cosh effective mass arccosh[(C(t - eps) + C(t + eps)) / (2 C(t))] / eps at
      t = eps..(N//2) eps (null where the ratio is below 1), in 1/length.

    `signs` (+-1 per configuration) maps to one vacuum, as in `measure` (only <M> changes).
    Returns {"separation", "separation_sites", "G_x", "C_t", "m_eff", "effective_mass_separation"},
    each correlator {"value": [...], "error": [...]} (m_eff with its own "separation").
    """
    fields = np.asarray(fields, dtype=np.float64)
    m = magnetization(fields, lattice)
    if signs is not None:
        m = m * signs
    g, t = correlator_series(fields, lattice)
    if not markov:
        m, g, t = m.reshape(1, -1), g.reshape(1, -1, g.shape[-1]), t.reshape(1, -1, t.shape[-1])
    k = lattice.size // 2 + 1
    series = {"M": m, **{f"g{n}": g[..., n] for n in range(k)}, **{f"t{n}": t[..., n] for n in range(k)}}
    obs = primaries(series, markov=markov)
    ld1 = lattice.volume / lattice.length  # L^(d-1)

    def connected(name, factor):
        return dobs(lambda xs, **kw: factor * (xs[0] - xs[1] ** 2), [obs[name], obs["M"]])

    out = {"G_x": {"value": [], "error": []}, "C_t": {"value": [], "error": []}}
    c_obs = []
    for n in range(k):
        for key, o in (("G_x", connected(f"g{n}", 1.0)), ("C_t", connected(f"t{n}", ld1))):
            v, e = _value_error(o, markov)
            out[key]["value"].append(v)
            out[key]["error"].append(e)
            if key == "C_t":
                c_obs.append(o)
    meff = {"separation": [], "value": [], "error": []}
    for n in range(1, k):
        before, at = c_obs[n - 1], c_obs[n]
        after = c_obs[(n + 1) if n + 1 < k else lattice.size - n - 1]  # C(N - n) = C(n)
        meff["separation"].append(n * lattice.spacing)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ratio = (before.value + after.value) / (2.0 * at.value)
            o = (dobs(lambda xs, **kw: cosh_effective_mass(xs[0], xs[1], xs[2], lattice.spacing), [before, at, after])
                 if math.isfinite(ratio) and ratio > 1 else None)
        v, e = _value_error(o, markov) if o is not None else (None, None)
        meff["value"].append(v)
        meff["error"].append(e)
    return {
        "separation": [n * lattice.spacing for n in range(k)],
        "separation_sites": list(range(k)),
        **out,
        "m_eff": meff,
        "effective_mass_separation": effective_mass_separation(lattice) * lattice.spacing,
        "definition": "G(x) = <phi(n) phi(n + x e_i)> - <M>^2; C(t) = L^(d-1) (<S(tau) S(tau + t)> - <M>^2), "
                      "S the slice mean; m_eff(t) = arccosh[(C(t - eps) + C(t + eps)) / (2 C(t))] / eps",
    }


def check_magnitude(fields: np.ndarray, lattice: Lattice) -> None:
    """Refuse fields whose fourth powers (the Binder ratio's <M^4>, lambda_R's connected four-point
    function, summed over V^2 pairs) overflow float64: an impossible measurement, not a crash."""
    big = float(np.max(np.abs(fields))) if np.size(fields) else 0.0
    limit = (1e300 / float(lattice.sites) ** 2) ** 0.25
    if not big <= limit:
        raise ImpossibleResultError(
            f"field values up to {big:.3g} cannot be measured in float64 (their fourth powers overflow beyond "
            f"|phi| = {limit:.3g} on {lattice.sites} sites); the ensemble is not a sensible phi^4 ensemble"
        )


def chain_summary(fields: np.ndarray, lattice: Lattice) -> dict:
    """Diagnostics of Markov chains (fields (chains, samples, *lattice)) that travel with an
    ensemble: for M, |M| and max|phi| the rank-normalized split R-hat, bulk and tail ESS, tau_int
    and its error; the vacuum changes per chain. M's R-hat is large when chains sit in different
    vacua of a broken phase (as they should); |M|'s is the convergence check there."""
    fields = np.asarray(fields, dtype=np.float64)
    m = magnetization(fields, lattice)
    series = {"M": m, "abs_M": np.abs(m), "max_abs_phi": np.max(np.abs(fields), axis=lattice.axes)}
    diag = chain_diagnostics(np.stack(list(series.values()), axis=-1))
    out = {"vacuum_changes": vacuum_changes(m)}
    for i, (name, x) in enumerate(series.items()):
        entry = {k: (float(diag[k][i]) if np.isfinite(diag[k][i]) else None) for k in diag}
        if x.shape[1] >= MIN_SAMPLES_PER_CHAIN:
            est = evaluate(primaries({name: x}, markov=True)[name], markov=True)
            entry.update(tau_int=est.tau_int, tau_int_error=est.tau_int_error)
        out[name] = entry
    return out


def vacuum_changes(m: np.ndarray) -> list[int]:
    """Vacuum changes per chain (rows of m, shape (chains, samples)): crossings between M > c and
    M < -c with the hysteresis c = median |M| / 2 of the chain, so that fluctuations about M = 0
    in the symmetric phase are not counted one by one as tunnelling."""
    m = np.asarray(m, dtype=np.float64)
    out = []
    for row in m:
        c = 0.5 * float(np.median(np.abs(row)))
        side = np.where(row > c, 1, np.where(row < -c, -1, 0))
        side = side[side != 0]
        out.append(int(np.count_nonzero(np.diff(side))) if side.size else 0)
    return out


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
