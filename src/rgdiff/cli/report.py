"""Human-readable and JSON reports of measurements: every number with its error and settings."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rgdiff.observables.estimators import DESCRIPTIONS, Measurement


def measurement_meta(ens, m: Measurement, file: str | Path | None = None) -> dict:
    """The settings that produced a measurement: theory, sampler, seed, error method, chain
    diagnostics (divergences, vacuum changes), versions."""
    diag = ens.diagnostics or {}
    summary = {}
    if "acceptance_rate" in diag:
        acc = diag["acceptance_rate"]
        summary["mean_acceptance_rate"] = sum(acc) / len(acc)
    if "divergences" in diag:
        summary["divergences"] = int(sum(diag["divergences"]))
        summary["divergences_per_chain"] = [int(x) for x in diag["divergences"]]
    if "vacuum_changes" in m.meta:
        summary["vacuum_changes_per_chain"] = m.meta["vacuum_changes"]
    meta = {
        "file": str(file) if file is not None else None,
        "theory": ens.theory.describe(),
        "units_given": ens.units,
        "sampler": ens.sampler,
        "sampler_summary": summary,
        "seed": ens.seed,
        "markov": ens.markov,
        **m.meta,
        "versions": ens.versions,
        "created": ens.created,
    }
    return meta


def _number(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _tau(est) -> str:
    """tau_int with its error in the bracket notation of the field, e.g. 1.55(12)."""
    if est.tau_int is None:
        return "-"
    return parenthesized(est.tau_int, est.tau_int_error)


def parenthesized(value: float, error: float | None) -> str:
    """`1.55(12)`: the value with two significant digits of error, the error in the last digits."""
    if not error or not math.isfinite(error) or error <= 0:
        return f"{value:.3g}"
    digits = max(0, 1 - int(math.floor(math.log10(error))))
    return f"{value:.{digits}f}({round(error * 10**digits):d})"


def _verdict(est) -> str:
    if est.reliable is None:
        return "-"
    return "yes" if est.reliable else "NO"


def unreliable_notes(m: Measurement) -> list[str]:
    """One line per observable whose error bar is not trustworthy, with the reason."""
    return [f"{name}: {est.reason}" for name, est in m.observables.items() if est.reliable is False]


def sampler_line(meta: dict) -> str:
    """Where the configurations came from, in one line, with only the settings the file records
    (e.g. `fa-hmc: 4 chains x 1000 samples, warm-up 500, seed 0`, or for a learned model's
    independent samples `model-ode: 64 independent samples, seed 0`)."""
    s = meta.get("sampler") or {}
    name = s.get("algorithm") or "unknown sampler"
    chains = s.get("chains", meta.get("chains"))
    samples = s.get("samples", meta.get("samples_per_chain"))
    if meta.get("markov") is False:
        total = (meta.get("chains") or 1) * (meta.get("samples_per_chain") or 0)
        text = f"{name}: {total} independent samples"
    else:
        text = f"{name}: {chains} chain{'s' if chains != 1 else ''} x {samples} samples"
        if s.get("warmup") is not None:
            text += f", warm-up {s['warmup']}"
    if meta.get("seed") is not None:
        text += f", seed {meta['seed']}"
    return text


def grouped_unreliable_notes(m: Measurement) -> list[str]:
    """`unreliable_notes` with the observables that share a reason on one line."""
    groups: dict[str, list[str]] = {}
    for name, est in m.observables.items():
        if est.reliable is False:
            groups.setdefault(est.reason, []).append(name)
    return [f"not reliable ({reason}): {', '.join(names)}" for reason, names in groups.items()]


def measurement_table(m: Measurement, meta: dict) -> Table:
    th = meta["theory"]
    title = (
        f"phi^4  d={th['dim']}  N={th['size']}  L={th['length']:g}  m2={th['m2']:g}  lam={th['lam']:g}"
    )
    caption_bits = [sampler_line(meta)]
    summary = meta.get("sampler_summary") or {}
    if "divergences" in summary or "vacuum_changes_per_chain" in summary:
        caption_bits.append(
            f"divergences {summary.get('divergences', 0)}; vacuum changes per chain "
            f"{summary.get('vacuum_changes_per_chain', '-')}"
        )
    caption_bits.append(f"errors: {meta['error_method']}; vacuum: {meta['vacuum']}")
    caption_bits += grouped_unreliable_notes(m)
    table = Table(title=title, caption="\n".join(caption_bits))
    table.add_column("observable")
    table.add_column("value ± error", justify="right")
    table.add_column("tau_int", justify="right")
    table.add_column("R-hat", justify="right")
    table.add_column("ESS bulk/tail", justify="right")
    table.add_column("reliable", justify="center")
    for name, est in m.observables.items():
        ess = "-" if est.ess_bulk is None else f"{est.ess_bulk:.0f}/{_number(est.ess_tail, '.0f')}"
        value = str(est) + (" (jk)" if est.method and est.method.startswith("jackknife") else "")
        table.add_row(name, value, _tau(est), _number(est.rhat, ".3f"), ess, _verdict(est))
    return table


def print_measurement(m: Measurement, meta: dict, console: Console | None = None) -> None:
    (console or Console()).print(measurement_table(m, meta))


def markdown_table(m: Measurement) -> str:
    lines = ["| observable | definition | value ± error | tau_int | R-hat | ESS bulk | reliable |",
             "|---|---|---|---|---|---|---|"]
    for name, est in m.observables.items():
        value = str(est) + (" (jackknife)" if est.method and est.method.startswith("jackknife") else "")
        lines.append(f"| {name} | {DESCRIPTIONS[name]} | {value} | {_tau(est)} | {_number(est.rhat, '.3f')} | "
                     f"{_number(est.ess_bulk, '.0f')} | {_verdict(est)} |")
    notes = unreliable_notes(m)
    if notes:
        lines += ["", "Not reliable (the error bar cannot be trusted):", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def chain_summary_line(summary: dict | None) -> str:
    """`R-hat(|M|) 1.001, ESS(|M|) 15000, tau_int(|M|) 0.52(1), vacuum changes [0, 0]` of a
    `chain_summary` (stored in the ensemble's diagnostics)."""
    if not summary:
        return "no chain diagnostics"
    a = summary.get("abs_M", {})
    tau = "-" if a.get("tau_int") is None else parenthesized(a["tau_int"], a.get("tau_int_error"))
    return (f"R-hat(|M|) {_number(a.get('rhat'), '.3f')}, bulk ESS(|M|) {_number(a.get('ess_bulk'), '.0f')}, "
            f"tau_int(|M|) {tau}, vacuum changes per chain {summary.get('vacuum_changes')}")


def theory_line(theory: dict) -> str:
    """`d = 2, N = 20, L = 1, m2 = -2, lam = 0.0017` from a theory's `describe()`."""
    return (f"d = {theory['dim']}, N = {theory['size']}, L = {theory['length']:g}, m2 = {theory['m2']:g}, "
            f"lam = {theory['lam']:g}")


def flow_cell(flow: dict, name: str, i: int) -> str:
    """`value ± error` of observable `name` at the i-th time of a FLOW.json, or null where undefined."""
    o = flow["observables"][name]
    v, e = o["value"][i], o["error"][i]
    return "null" if v is None or e is None else value_error_cell(v, e)


def value_error_cell(value: float, error: float) -> str:
    """`0.512 ± 0.013`: the value rounded to the error's two significant digits; for numbers far
    from 1 one common power of ten, `(1.9 ± 1.5)e-59`."""
    scale = max(abs(value), abs(error))
    if not math.isfinite(scale) or scale == 0:
        return f"{value:.4g} ± {error:.2g}"
    k = math.floor(math.log10(scale))
    if -3 <= k < 5:
        return _rounded(value, error)
    return f"({_rounded(value / 10**k, error / 10**k)})e{k}"


def _rounded(value: float, error: float) -> str:
    if not math.isfinite(error) or error <= 0:
        return f"{value:.4g} ± {error:.2g}"
    digits = max(0, 1 - math.floor(math.log10(error)))
    return f"{value:.{digits}f} ± {error:.{digits}f}"
