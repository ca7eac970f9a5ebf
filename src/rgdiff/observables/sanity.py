"""Impossible results are caught, never reported as numbers (issue 16).

One rule wherever rgdiff reports a number: a value no correct computation can give is replaced
by None and flagged with the reason, and the command says so. Per case:

- an estimate of `rgdiff measure` (and of every flow time, `rgdiff.observables.estimators.measure`)
  that is not finite, or whose error is not finite or negative (a negative variance): the
  estimate is flagged (`reliable: false`, `reason: "impossible result: ..."`, value and error
  None); `rgdiff measure` prints the flagged table and exits 1 with one line naming them;
  `flow` and `compare-flow` write their JSON with the flagged estimates and print a warning line
  (the other times and observables stand);
- a sampler diagnostic outside its range: an acceptance rate outside [0, 1] or not finite
  (`sample`, `bridge`, SAMPLER.json of a flow), an importance-sampling ESS / n outside (0, 1]
  (ESS > n: the estimator (sum w)^2 / sum w^2 cannot exceed n; an MCMC ESS can, for antithetic
  chains, and is not flagged): the field is None and `diagnostics["impossible"]` names it with
  the value found; a warning line (the samples or the model are kept: they are checked apart);
- a learned estimate whose error is not smaller than its magnitude (unresolved) is never
  counted as agreement with the true flow: `rgdiff.observables.compare.discrepancy` leaves it
  out and counts it under "unresolved".
"""

from __future__ import annotations

import dataclasses
import math
import warnings

from rgdiff.errors import RgdiffWarning


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def estimate_problem(value, error) -> str | None:
    """Why (value, error) is impossible, or None. None values (undefined estimators) are fine."""
    if value is not None and not _finite(value):
        return f"value {value}"
    if error is not None and (not _finite(error) or float(error) < 0):
        return f"error {error}" + (" (a negative variance)" if _finite(error) else "")
    return None


def flag_estimates(observables: dict) -> dict[str, str]:
    """Replace impossible `Estimate`s in `observables` (name -> Estimate, in place) by flagged
    ones; returns {name: reason} of those flagged."""
    flagged = {}
    for name, est in list(observables.items()):
        why = estimate_problem(est.value, est.error)
        if why is not None:
            flagged[name] = why
            observables[name] = dataclasses.replace(est, value=None, error=None, reliable=False,
                                                    reason=f"impossible result: {why}")
    return flagged


def check_rate(diagnostics: dict, key: str, *, where: str = "") -> None:
    """A rate (or a list of rates, one per chain) in [0, 1]: else None in `diagnostics` and the
    value found under diagnostics["impossible"][key], with a warning line."""
    value = diagnostics.get(key)
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    bad = [v for v in values if not (_finite(v) and 0.0 <= float(v) <= 1.0)]
    if bad:
        _flag(diagnostics, key, value, f"{key} {bad[0]} is outside [0, 1]", where)


def check_importance_ess(diagnostics: dict, key: str = "ess", *, n: int | None = None, where: str = "") -> None:
    """An importance-sampling ESS / n in (0, 1] (ESS = (sum w)^2 / sum w^2 lies in [1, n])."""
    value = diagnostics.get(key)
    if value is None:
        return
    if not (_finite(value) and 0.0 < float(value) <= 1.0 + 1e-9):
        what = "ESS above the sample count" if _finite(value) and float(value) > 1 else f"ESS/n {value}"
        _flag(diagnostics, key, value, f"importance-sampling {what}{f' (n = {n})' if n else ''}: impossible", where)


def _flag(diagnostics: dict, key: str, value, message: str, where: str) -> None:
    diagnostics.setdefault("impossible", {})[key] = {"found": _jsonable(value), "reason": message}
    diagnostics[key] = None
    warnings.warn(RgdiffWarning(f"{where + ': ' if where else ''}{message}; reported as n/a"), stacklevel=3)


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return x if math.isfinite(x) else str(x)


def resolved(value, error) -> bool:
    """Whether an estimate resolves its value: finite, with an error smaller than its magnitude."""
    return _finite(value) and _finite(error) and 0 <= float(error) < abs(float(value))


def impossible_in_flow(result) -> list[str]:
    """The flagged estimates of a `FlowResult` (every time's `measure`), as "NAME at t = T"."""
    out = []
    for name, estimates in result.observables.items():
        for t, est in zip(result.times, estimates):
            if (est.reason or "").startswith("impossible result"):
                out.append(f"{name} at t = {float(t):g} ({est.reason[len('impossible result: '):]})")
    return out


def warn_impossible(where: str, found: list[str]) -> None:
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        warnings.warn(RgdiffWarning(f"{where}: impossible results flagged and written as null: {shown}"), stacklevel=2)
