"""Refuse impossible variational results.

The energy of a normalized state is never below the ground energy, and the two forms of [6.13]
are one expectation value. A result that violates either is a failure of the computation (most
often of the transport's integration, see `rgdiff.quantum.energy`), never a finding. `verify`
runs every check that applies and returns the failures, each as one sentence:

- `integration`: the step doubling reached its tolerance (`energy.measure_energy`);
- `reverse`: the flow integrated forward and back returns to its noise and log p
  (`energy.reverse_check`);
- `forms_agree`: score and local forms on the same samples agree within SIGMA combined errors
  (the error of their paired per-sample difference and the integration errors of both);
- `above_exact`: no form lies more than SIGMA errors below the exact E0 (free field, exact
  diagonalization; ED is variational in its basis, so its own error only lowers the bound);
- `above_lower_bound`: nor below the rigorous `exact.harmonic_lower_bound` (every lattice).

SIGMA = 4: a correct run fails one comparison with probability ~6e-5 (two-sided normal).
"""

from __future__ import annotations

import math

import numpy as np

from rgdiff.observables.stats import Estimate, format_value_error
from rgdiff.quantum.energy import FORMS, mean_estimate

SIGMA = 4.0
ROUNDOFF = 1e-9  # relative: float64 sums over a few thousand samples and sites
FORM_NAMES = {"score_form": "score form", "local_form": "local form"}


def total_error(measured: dict, form: str) -> float:
    """Statistical error of `form` combined with the estimate of its remaining RK4 error."""
    stat = measured[form].error or 0.0
    integ = measured.get("integration", {}).get(form)
    if integ is None:
        return stat
    err: Estimate = integ["error"]
    return math.sqrt(stat**2 + err.value**2 + err.error**2)


def forms_difference(measured: dict) -> tuple[Estimate, float] | None:
    """(mean of score - local per sample, with its standard error; the difference in sigma), or
    None without the local form. The error includes both forms' integration errors."""
    if "local_values" not in measured:
        return None
    diff = mean_estimate(np.asarray(measured["score_values"]) - np.asarray(measured["local_values"]))
    integ = measured.get("integration", {})
    parts = [diff.error] + [x for f in FORMS if f in integ for x in (integ[f]["error"].value, integ[f]["error"].error)]
    err = math.sqrt(sum(p**2 for p in parts))
    err = max(err, ROUNDOFF * abs(measured["local_form"].value))
    sigma = abs(diff.value) / err if err > 0 else (0.0 if diff.value == 0 else math.inf)
    return Estimate(diff.value, err, 0.5), sigma


def verify(measured: dict, *, exact: float | None, exact_method: str | None, exact_tolerance: float,
           lower_bound: float) -> dict:
    """Run the checks of the module docstring on a `measure_energy` result (its `integration` and
    `reverse` where present: a bare `estimate_energy` result is checked for the rest).

    `exact_tolerance`: relative uncertainty of `exact` (ED's convergence tolerance);
    `lower_bound`: a rigorous lower bound on E0. **Returns:** {"valid", "failures" (sentences),
    "checks" (per check: "ok" and the numbers it compared)}.
    """
    failures: list[str] = []
    checks: dict = {}
    integ, reverse = measured.get("integration"), measured.get("reverse")
    if integ is not None:
        worst = {f: integ[f] for f in FORMS if f in integ}
        checks["integration"] = {"ok": integ["converged"], "steps": integ["steps"],
                                 **{f: {"error": v["error"].as_dict(), "tolerance": v["tolerance"]} for f, v in worst.items()}}
        if not integ["converged"]:
            detail = "; ".join(f"{FORM_NAMES[f]} error {v['error'].value:.3g} +- {v['error'].error:.2g}, tolerance {v['tolerance']:.3g}"
                               for f, v in worst.items())
            failures.append(f"the RK4 transport did not reach its error tolerance within {integ['steps'][-1]} steps ({detail}): "
                            "the flow is too stiff to integrate")
    if reverse is not None:
        checks["reverse"] = dict(reverse)
        if not reverse["ok"]:
            failures.append(f"the flow's forward and reverse integrations disagree at {reverse['steps']} RK4 steps "
                            f"(round trip {reverse['field']:.2g} sigma, log p {reverse['log_prob']:.2g} nats; "
                            f"tolerance {reverse['tolerance']:g})")
    diff = forms_difference(measured)
    if diff is not None:
        est, sigma = diff
        ok = sigma <= SIGMA
        checks["forms_agree"] = {"ok": ok, "difference": est.as_dict(), "sigma": sigma}
        if not ok:
            failures.append(
                f"the score form {measured['score_form']} and the local form {measured['local_form']} of the energy "
                f"differ by {sigma:.1f} sigma on the same samples (they are one expectation value)")
    for name, bound, what, tol in (("above_exact", exact, f"the exact ground energy ({exact_method})", exact_tolerance),
                                   ("above_lower_bound", lower_bound, "the rigorous harmonic lower bound", 0.0)):
        if bound is None:
            continue
        worst_sigma, ok = None, True
        for form in FORMS:
            if form not in measured:
                continue
            value, err = measured[form].value, total_error(measured, form)
            margin = SIGMA * err + (tol + ROUNDOFF) * abs(bound)
            below = (bound - value) / err if err > 0 else (math.inf if value < bound else 0.0)
            worst_sigma = below if worst_sigma is None else max(worst_sigma, below)
            if value < bound - margin:
                ok = False
                failures.append(
                    f"the {FORM_NAMES[form]} {format_value_error(value, err)} lies {below:.1f} sigma below {what} "
                    f"{bound:.8g}: impossible for a normalized state")
        checks[name] = {"ok": ok, "bound": bound, "sigma_below": worst_sigma}
    return {"valid": not failures, "failures": failures, "checks": checks}
