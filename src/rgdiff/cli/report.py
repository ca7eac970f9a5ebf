"""Human-readable and JSON reports of measurements: every number with its error and settings."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from rgdiff.observables.estimators import DESCRIPTIONS, Measurement


def measurement_meta(ens, m: Measurement, file: str | Path | None = None) -> dict:
    """The settings that produced a measurement: theory, sampler, seed, error method, versions."""
    diag = ens.diagnostics or {}
    summary = {}
    if "acceptance_rate" in diag:
        acc = diag["acceptance_rate"]
        summary["mean_acceptance_rate"] = sum(acc) / len(acc)
    if "divergences" in diag:
        summary["divergences"] = int(sum(diag["divergences"]))
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


def measurement_table(m: Measurement, meta: dict) -> Table:
    th = meta["theory"]
    title = (
        f"phi^4  d={th['dim']}  N={th['size']}  L={th['length']:g}  m2={th['m2']:g}  lam={th['lam']:g}"
    )
    s = meta.get("sampler") or {}
    caption_bits = []
    if s:
        caption_bits.append(
            f"{s.get('algorithm', '?')}: {s.get('chains', '?')} chains x {s.get('samples', '?')} samples, "
            f"warm-up {s.get('warmup', '?')}, seed {meta.get('seed')}"
        )
    caption_bits.append(f"errors: {meta['error_method']}; vacuum: {meta['vacuum']}")
    table = Table(title=title, caption="\n".join(caption_bits))
    table.add_column("observable")
    table.add_column("definition")
    table.add_column("value ± error", justify="right")
    table.add_column("tau_int", justify="right")
    for name, est in m.observables.items():
        tau = "-" if est.tau_int is None else f"{est.tau_int:.2f}"
        table.add_row(name, DESCRIPTIONS[name], str(est), tau)
    return table


def print_measurement(m: Measurement, meta: dict, console: Console | None = None) -> None:
    (console or Console()).print(measurement_table(m, meta))


def markdown_table(m: Measurement) -> str:
    lines = ["| observable | definition | value ± error | tau_int |", "|---|---|---|---|"]
    for name, est in m.observables.items():
        tau = "-" if est.tau_int is None else f"{est.tau_int:.2f}"
        lines.append(f"| {name} | {DESCRIPTIONS[name]} | {est} | {tau} |")
    return "\n".join(lines)


def theory_line(theory: dict) -> str:
    """`d = 2, N = 20, L = 1, m2 = -2, lam = 0.0017` from a theory's `describe()`."""
    return (f"d = {theory['dim']}, N = {theory['size']}, L = {theory['length']:g}, m2 = {theory['m2']:g}, "
            f"lam = {theory['lam']:g}")


def flow_cell(flow: dict, name: str, i: int) -> str:
    """`value ± error` of observable `name` at the i-th time of a FLOW.json, or null where undefined."""
    o = flow["observables"][name]
    v, e = o["value"][i], o["error"][i]
    return "null" if v is None or e is None else f"{v:.4g} ± {e:.2g}"
