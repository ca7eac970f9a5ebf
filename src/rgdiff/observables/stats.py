"""Error analysis: one result type, `Estimate`, and the Gamma method via pyerrors.

Markov-chain data (shape (chains, samples)) are analysed with the Gamma method (Wolff 2004),
each chain a replica of one ensemble, so errors include autocorrelations and tau_int is reported.
Independent samples (e.g. from a generative model) use the plain standard error, tau_int = 1/2.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable

import numpy as np

with warnings.catch_warnings():
    # pyerrors pulls in pandas/autograd, which warn on import under recent numpy.
    warnings.simplefilter("ignore")
    import pyerrors as pe


ENSEMBLE = "rgdiff"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A number with its statistical error and integrated autocorrelation time.

    `value` and `error` are None where the estimator is undefined (e.g. m_R when
    G2(0)/G2(p1) <= 1): that is a result, not a crash.
    """

    value: float | None
    error: float | None
    tau_int: float | None

    @property
    def defined(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict:
        return {"value": self.value, "error": self.error, "tau_int": self.tau_int}

    def __str__(self) -> str:
        if self.value is None:
            return "undefined"
        return format_value_error(self.value, self.error)


UNDEFINED = Estimate(None, None, None)


def format_value_error(value: float, error: float | None) -> str:
    """`1.2345(67)`-style string with two significant digits of error."""
    if error is None or not math.isfinite(error) or error <= 0:
        return f"{value:.6g}"
    digits = max(0, 1 - int(math.floor(math.log10(error))))
    if digits > 12 or abs(value) >= 1e7 or (value != 0 and abs(value) < 1e-4):
        return f"{value:.4e} ± {error:.2e}"
    return f"{value:.{digits}f} ± {error:.{digits}f}"


def primaries(data: dict[str, np.ndarray], *, markov: bool) -> dict[str, "pe.Obs"]:
    """pyerrors Obs for each per-configuration series of shape (chains, samples)."""
    out = {}
    for name, series in data.items():
        series = np.asarray(series, dtype=np.float64)
        if series.ndim != 2:
            raise ValueError(f"series {name!r} must have shape (chains, samples), got {series.shape}")
        if markov:
            reps = [series[c] for c in range(series.shape[0])]
            names = [f"{ENSEMBLE}|r{c}" for c in range(series.shape[0])]
        else:
            # Independent samples: one replica; the Gamma method with S = 0 gives the plain error.
            reps = [series.reshape(-1)]
            names = [ENSEMBLE]
        out[name] = pe.Obs(reps, names)
    return out


def evaluate(obs: "pe.Obs", *, markov: bool) -> Estimate:
    """Value, error and tau_int of a primary or derived observable."""
    value = float(obs.value)
    if not math.isfinite(value):
        return UNDEFINED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if markov:
            obs.gamma_method()
        else:
            obs.gamma_method(S=0)
    error = float(obs.dvalue)
    tau = obs.e_tauint.get(ENSEMBLE, 0.5)
    return Estimate(value, error, float(tau))


def derived(fn: Callable, obs: list, *, markov: bool, defined: Callable[[list[float]], bool] | None = None) -> Estimate:
    """Estimate fn(*obs) with linear error propagation; UNDEFINED where `defined` says so."""
    if defined is not None and not defined([float(o.value) for o in obs]):
        return UNDEFINED
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fn(*obs)
    return evaluate(result, markov=markov)


def tau_int(series: np.ndarray) -> Estimate:
    """Gamma-method mean, error and tau_int of one observable, shape (chains, samples)."""
    obs = primaries({"x": series}, markov=True)["x"]
    return evaluate(obs, markov=True)
