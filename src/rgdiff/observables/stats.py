"""Error analysis: one result type, `Estimate`, the Gamma method via pyerrors, chain diagnostics
(ArviZ's rank-normalized split R-hat and bulk/tail ESS) and a blocked jackknife for nonlinear
estimators, combined into a verdict on whether an error bar can be trusted.

Markov-chain data (shape (chains, samples)) are analysed with the Gamma method (Wolff 2004),
each chain a replica of one ensemble, so errors include autocorrelations and tau_int is reported
with its own error. Independent samples (e.g. from a generative model) use the plain standard
error, tau_int = 1/2.

When an error bar is trustworthy (`Estimate.reliable`): linear error propagation (the Gamma
method of a derived observable) needs many effective samples and a function that is close to
linear over the spread of its arguments; a ratio of cumulants estimated from ~100 effective
samples is neither. An estimate is flagged unreliable, with the reason, when

- it has fewer than `MIN_EFFECTIVE_SAMPLES` effective samples N / (2 tau_int);
- the chains disagree: rank-normalized split R-hat above `MAX_RHAT` (Vehtari et al. 2021);
- the Gamma method's automatic window ran to the end of the chains (tau_int undetermined);
- pyerrors (or NumPy inside it) warned, e.g. the estimator is undefined on one chain's mean;
- the blocked jackknife has fewer than `MIN_BLOCKS` blocks of at least 4 tau_int, or its error
  and the Gamma error differ by more than a factor `MAX_ERROR_RATIO`.

Where the jackknife's estimate of the nonlinear bias exceeds `BIAS_FRACTION` of the error, the
bias-corrected jackknife value and error are reported instead of the linearized ones
(`method = "jackknife"`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from typing import Callable

import numpy as np

with warnings.catch_warnings():
    # pyerrors pulls in pandas/autograd, which warn on import under recent numpy.
    warnings.simplefilter("ignore")
    import pyerrors as pe


ENSEMBLE = "rgdiff"
MIN_SAMPLES_PER_CHAIN = 8  # the Gamma method needs a few samples per replica to define a window
MIN_EFFECTIVE_SAMPLES = 100
MAX_RHAT = 1.01
JACKKNIFE_BLOCKS = 64  # target number of jackknife blocks over all chains
MIN_BLOCKS = 16
BIAS_FRACTION = 0.5
MAX_ERROR_RATIO = 2.0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A number with its statistical error, integrated autocorrelation time and diagnostics.

    `value` and `error` are None where the estimator is undefined (e.g. m_R when
    G2(0)/G2(p1) <= 1): that is a result, not a crash. `reliable` is None where it was not
    assessed; False comes with a `reason`. `method` says how the error was computed.
    """

    value: float | None
    error: float | None
    tau_int: float | None
    tau_int_error: float | None = None
    rhat: float | None = None
    ess_bulk: float | None = None
    ess_tail: float | None = None
    reliable: bool | None = None
    reason: str | None = None
    method: str | None = None

    @property
    def defined(self) -> bool:
        return self.value is not None

    def as_dict(self) -> dict:
        return {
            "value": self.value,
            "error": self.error,
            "tau_int": self.tau_int,
            "tau_int_error": self.tau_int_error,
            "rhat": self.rhat,
            "ess_bulk": self.ess_bulk,
            "ess_tail": self.ess_tail,
            "reliable": self.reliable,
            "reason": self.reason,
            "method": self.method,
        }

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


def _warning_reason(messages: list[str]) -> str | None:
    if not messages:
        return None
    unique = list(dict.fromkeys(messages))
    if any("invalid value" in m or "divide" in m for m in unique):
        return "undefined on the mean of at least one chain (too few samples per chain)"
    return "pyerrors: " + "; ".join(unique)


def window_exhausted(obs: "pe.Obs", markov: bool) -> bool:
    """Whether the Gamma method's automatic window ran to the end of the chains (after
    `evaluate`): tau_int is then not determined by the data."""
    if not markov or ENSEMBLE not in getattr(obs, "e_windowsize", {}):
        return False
    lengths = [len(obs.deltas[r]) for r in obs.e_content.get(ENSEMBLE, [])]
    w_max = max(lengths) // 2 if lengths else 0
    return w_max > 2 and obs.e_windowsize[ENSEMBLE] >= w_max - 1


def evaluate(obs: "pe.Obs", *, markov: bool, warnings_seen: list[str] | None = None) -> Estimate:
    """Value, error, tau_int and its error of a primary or derived observable (Gamma method), not
    yet assessed (`assess` adds the diagnostics and the verdict). Warnings raised on the way are
    appended to `warnings_seen` (given) for `assess`, never silenced."""
    value = float(obs.value)
    if not math.isfinite(value):
        return UNDEFINED
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn", under="ignore"):
        warnings.simplefilter("always")
        if markov:
            obs.gamma_method()
        else:
            obs.gamma_method(S=0)
    if warnings_seen is not None:
        warnings_seen.extend(str(w.message) for w in caught)
    tau = obs.e_tauint.get(ENSEMBLE, 0.5)
    dtau = obs.e_dtauint.get(ENSEMBLE, 0.0)
    return Estimate(value, float(obs.dvalue), float(tau), float(dtau),
                    method="gamma" if markov else "standard error")


def tau_int(series: np.ndarray) -> Estimate:
    """Gamma-method mean, error and tau_int of one observable, shape (chains, samples)."""
    obs = primaries({"x": series}, markov=True)["x"]
    return evaluate(obs, markov=True)


# chain diagnostics ---------------------------------------------------------------------------


def chain_diagnostics(series: np.ndarray) -> dict[str, np.ndarray]:
    """Rank-normalized split R-hat and bulk / tail ESS (ArviZ, Vehtari et al. 2021) of each
    observable, `series` of shape (chains, samples, observables). NaN where undefined (fewer than
    4 samples per chain, a constant or non-finite series). A single chain is split into its two
    halves first, so one long chain has an R-hat too.

    ArviZ works on NumPy arrays, so no compilation per array shape (Blackjax's JAX versions of the
    same estimators give the same numbers but compile for every new shape).
    """
    series = np.asarray(series, dtype=np.float64)
    n_obs = series.shape[2]
    out = {k: np.full(n_obs, np.nan) for k in ("rhat", "ess_bulk", "ess_tail")}
    if series.shape[0] == 1 and series.shape[1] >= 8:
        # one chain: its two halves as two chains (ArviZ needs two; split R-hat splits them again)
        half = series.shape[1] // 2
        series = series[0, : 2 * half].reshape(2, half, n_obs)
    if series.shape[1] < 4 or series.shape[0] < 2:
        return out
    az = _arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"), _quiet_arviz_log(az):
        warnings.simplefilter("ignore")  # a constant series gives NaN, reported as None
        for i in range(n_obs):
            x = series[:, :, i]
            if not np.all(np.isfinite(x)):
                continue
            out["rhat"][i] = float(az.rhat(x, method="rank"))
            out["ess_bulk"][i] = float(az.ess(x, method="bulk"))
            out["ess_tail"][i] = float(az.ess(x, method="tail"))
    return out


@contextlib.contextmanager
def _quiet_arviz_log(az):
    """ArviZ logs "Shape validation failed" for one chain (R-hat needs two; NaN, reported as
    None): not a line for the user's terminal."""
    import logging

    log = getattr(az, "_log", None)  # ArviZ's own Logger("arviz"), not registered with logging.getLogger
    if not isinstance(log, logging.Logger):
        log = logging.getLogger("arviz")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@functools.cache
def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # import-time deprecation notices of its dependencies
        import arviz

    return arviz


def linearized_series(obs: "pe.Obs", chains: int, samples: int) -> np.ndarray:
    """The per-configuration series of an observable, shape (chains, samples): for a primary the
    data, for a derived one its linearization f(replica mean) + grad f . (x - replica mean) that
    the Gamma method analyses."""
    out = np.full((chains, samples), np.nan)
    for c, name in enumerate(obs.e_content.get(ENSEMBLE, [])):
        out[c] = obs.r_values[name] + obs.deltas[name]
    return out


# blocked jackknife ---------------------------------------------------------------------------


def jackknife_blocks(chains: int, samples: int, tau: float) -> int:
    """Blocks per chain: about `JACKKNIFE_BLOCKS` in all, each at least 4 tau_int long."""
    per_chain = max(1, math.ceil(JACKKNIFE_BLOCKS / chains))
    longest = max(1, samples // max(1, math.ceil(4.0 * tau)))
    return max(1, min(per_chain, longest, samples))


def blocked_jackknife(estimator: Callable[[dict], dict], series: dict[str, np.ndarray], blocks_per_chain: int):
    """Bias-corrected blocked jackknife of every output of `estimator` (a function of the means
    of the primary `series`, each (chains, samples), returning {name: value}).

    Blocks never straddle chains. **Returns:** {name: (value, error, bias)} with the
    bias-corrected value n f - (n - 1) mean_i f_(i), the error sqrt((n-1)/n sum_i (f_(i) - f.)^2)
    and the bias estimate (n - 1)(f. - f), and the number of blocks n.
    """
    names = list(series)
    first = np.asarray(series[names[0]])
    chains, samples = first.shape
    edges = np.linspace(0, samples, blocks_per_chain + 1).astype(int)
    sums, counts = {}, np.diff(edges).astype(np.float64)
    for k in names:
        x = np.asarray(series[k], dtype=np.float64)
        sums[k] = np.add.reduceat(x, edges[:-1], axis=1).reshape(-1)  # (chains * blocks,)
    n_counts = np.tile(counts, chains)
    if n_counts.size < 2:  # one block (one short chain): no leave-one-out sample
        with np.errstate(all="ignore"):
            return {name: (None, None, None) for name in estimator({k: np.mean(series[k]) for k in names})}, int(n_counts.size)
    total = n_counts.sum()
    full = {k: sums[k].sum() / total for k in names}
    loo = {k: (sums[k].sum() - sums[k]) / (total - n_counts) for k in names}
    with np.errstate(all="ignore"):
        f_all = estimator(full)
        f_loo = estimator(loo)
    n = n_counts.size
    out = {}
    for name, f in f_all.items():
        fi = np.asarray(f_loo[name], dtype=np.float64)
        f = float(f)
        if not (math.isfinite(f) and np.all(np.isfinite(fi))):
            out[name] = (None, None, None)
            continue
        mean = float(fi.mean())
        out[name] = (n * f - (n - 1) * mean, math.sqrt((n - 1) / n * float(np.sum((fi - mean) ** 2))),
                     (n - 1) * (mean - f))
    return out, n


# the verdict ---------------------------------------------------------------------------------


def assess(est: Estimate, *, n_total: int, markov: bool, diagnostics: dict | None = None,
           warnings_seen: list[str] | None = None, window_exhausted: bool = False,
           jackknife: tuple | None = None, blocks: int | None = None) -> Estimate:
    """Add diagnostics and the reliability verdict to a Gamma-method estimate (see the module).

    - `diagnostics`: {"rhat", "ess_bulk", "ess_tail"} of the observable's series (Markov chains).
    - `jackknife`: (value, error, bias) of the blocked jackknife with `blocks` blocks, for
      nonlinear derived observables; where its bias estimate matters it replaces the value.
    """
    if not est.defined:
        return est
    reasons = []
    tau = est.tau_int or 0.5
    n_eff = n_total / (2.0 * tau)
    if n_eff < MIN_EFFECTIVE_SAMPLES:
        reasons.append(f"only {n_eff:.0f} effective samples (< {MIN_EFFECTIVE_SAMPLES})")
    diag = {k: None for k in ("rhat", "ess_bulk", "ess_tail")}
    if diagnostics is not None:
        for k in diag:
            v = diagnostics.get(k)
            diag[k] = float(v) if v is not None and math.isfinite(float(v)) else None
        if markov and diag["rhat"] is None:
            reasons.append("R-hat undefined (the chains' estimates are not finite)")
        elif markov and diag["rhat"] > MAX_RHAT:
            reasons.append(f"R-hat {diag['rhat']:.3f} > {MAX_RHAT}: the chains (or a chain's halves) disagree")
    if window_exhausted:
        reasons.append("the Gamma method's window reached half the chain length: tau_int undetermined")
    reason = _warning_reason(warnings_seen or [])
    if reason:
        reasons.append(reason)
    value, error, method = est.value, est.error, est.method
    if jackknife is not None:
        jk_value, jk_error, bias = jackknife
        if blocks is not None and blocks < MIN_BLOCKS:
            reasons.append(f"only {blocks} jackknife blocks of >= 4 tau_int (< {MIN_BLOCKS})")
        if jk_value is None:
            if blocks is None or blocks >= 2:
                reasons.append("undefined on a jackknife sample")
        else:
            ratio = jk_error / error if error and error > 0 else math.inf
            if not 1.0 / MAX_ERROR_RATIO <= ratio <= MAX_ERROR_RATIO:
                reasons.append(f"jackknife and Gamma errors differ by a factor {ratio:.2g}")
            if abs(bias) > BIAS_FRACTION * jk_error:
                value, error = jk_value, jk_error
                method = f"jackknife, bias-corrected ({blocks} blocks; nonlinear bias {bias:.3g})"
    return dataclasses.replace(
        est, value=value, error=error, method=method, reliable=not reasons,
        reason="; ".join(reasons) if reasons else None, **diag,
    )
