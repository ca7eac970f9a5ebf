"""`rgdiff bench`: run the benchmark families, print one table each, write one JSON file.

JSON layout (written atomically)::

    {"machine": {...}, "suite": "full" | "quick" | "tiny", "only": name | null,
     "benchmarks": {"kernel": {...}, "training": {...}, "samplers": {...}},
     "ratios": {name: figure | null, ...},
     "tunnelling": {point: {"N", "theory", "samplers": {name: {"vacuum_changes_per_1000_sweeps":
                    {"value", "error"}, "mean_M": {"value", "error", "error_between_chains", "error_gamma"},
                    "mean_abs_M", "mean_abs_M_error", ...}}}},
     "notes": [...], "seconds": total}

`tunnelling` holds the broken-phase points the samplers benchmark ran (empty otherwise).

`ratios` always carries the named figures documented in the README (null when the benchmark
that measures them was not run or could not run, with the reason in `notes`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rgdiff.bench import kernel, samplers, training
from rgdiff.bench._timing import format_figure, machine
from rgdiff.cli.progress import progress_bar
from rgdiff.errors import RgdiffError
from rgdiff.io.atomic import write_json

BENCHMARKS = {"kernel": kernel, "training": training, "samplers": samplers}
SUITES = ("full", "quick", "tiny")
SETTINGS = {
    "full": {"kernel": kernel.KernelSettings(), "training": training.TrainingSettings(), "samplers": samplers.SamplerBenchSettings()},
    "quick": {"kernel": kernel.QUICK, "training": training.QUICK, "samplers": samplers.QUICK},
    "tiny": {"kernel": kernel.TINY, "training": training.TINY, "samplers": samplers.TINY},  # for tests only
}
REQUIRED_RATIOS = (
    "bridge_vs_nuts_ess_per_s_amortized",
    "flow_vs_nuts_ess_per_s_amortized",
    "best_learned_vs_nuts_ess_per_s_amortized",
    "best_learned_vs_fa_hmc_ess_per_s_amortized",
    "fa_hmc_vs_nuts_ess_per_s",
    "fa_hmc_vs_nuts_ess_per_s_paper_broken",
    "fa_hmc_vs_nuts_ess_per_s_paper_near_massless",
    "kernel_vs_bare_fft",
    "z_nuts",
    "z_fa_hmc",
    "z_bridge",
)
TITLES = {
    "kernel": "RG kernel push-forward vs bare rfftn+irfftn (configs/s; median ± half range)",
    "training": "training step throughput and peak memory (XLA memory analysis)",
    "samplers": "samplers at the paper's points and on the benchmark line: tau_int, ESS/s (compile excluded)",
}


class InvalidBenchError(RgdiffError):
    """An unknown benchmark name or suite."""


def check_only(only: str | None) -> None:
    """Refuse an unknown `--only` benchmark name."""
    if only is not None and only not in BENCHMARKS:
        raise InvalidBenchError(f"unknown benchmark {only!r}; choose one of {', '.join(BENCHMARKS)}")


def sampler_settings(suite: str, sizes: str | None = None, points: str | None = None) -> samplers.SamplerBenchSettings:
    """The suite's sampler settings with `--sizes N1,N2,...` (benchmark-line sizes; learned samplers
    at those of them the suite trains on) and `--points P1,P2|none` (named points: the paper's two
    and the broken benchmark-line point) applied."""
    settings = SETTINGS[suite]["samplers"]
    if sizes is not None:
        none = sizes.strip() == "none"
        try:
            chosen = () if none else tuple(int(x) for x in sizes.split(",") if x.strip())
        except ValueError:
            chosen = (0,)  # not a number: refused below like an unknown size
        known = sorted(samplers.BENCHMARK_SIZES)
        if (not chosen and not none) or any(n not in known for n in chosen):
            raise InvalidBenchError(
                f"--sizes {sizes!r}: give comma-separated sizes among {', '.join(map(str, known))}, or none"
            )
        settings = dataclasses.replace(settings, sizes=chosen,
                                       learned_sizes=tuple(n for n in settings.learned_sizes if n in chosen))
    if points is not None:
        chosen = () if points.strip() == "none" else tuple(p.strip() for p in points.split(",") if p.strip())
        if any(p not in samplers.NAMED_POINTS for p in chosen):
            raise InvalidBenchError(
                f"--points {points!r}: give comma-separated points among {', '.join(samplers.NAMED_POINTS)}, or none"
            )
        settings = dataclasses.replace(settings, paper_points=chosen)
    if not settings.sizes and not settings.paper_points:
        raise InvalidBenchError("--sizes none --points none leaves the samplers benchmark nothing to run")
    return settings


def partial_path(out: Path) -> Path:
    """Where a run writing `out` keeps what it has finished until it ends: `<out>.partial`."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def suite_settings(suite: str, sizes: str | None = None, points: str | None = None) -> dict:
    """{benchmark: settings} of the suite, the samplers' restricted by `sampler_settings`."""
    return {**SETTINGS[suite], "samplers": sampler_settings(suite, sizes, points)}


def _identity(suite: str, only: str | None, settings: dict) -> dict:
    """What a resumed run must share with the interrupted one, as JSON would hold it."""
    return json.loads(json.dumps({"suite": suite, "only": only,
                                  "settings": {k: dataclasses.asdict(v) for k, v in settings.items()}}))


def _same_run(state: dict, identity: dict) -> bool:
    """Whether a partial file's `state` was written by a run of this `identity`."""
    return {k: state.get(k) for k in identity} == identity


def _resume_state(out: Path, identity: dict) -> dict:
    """The finished work of an interrupted run of the same command (`partial_path(out)`), or an
    empty state. A partial file of other settings is refused, not overwritten."""
    path = partial_path(out)
    if not path.exists():
        return {**identity, "benchmarks": {}, "sampler_points": {}, "seconds": 0.0}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InvalidBenchError(f"{path} (an interrupted run's progress) cannot be read ({err}); delete it to start afresh")
    if not _same_run(state, identity):
        raise InvalidBenchError(f"{path} holds an interrupted run with other settings; rerun that command to finish it, "
                                "or delete the file to start afresh")
    return state


def find_resumable(folder: Path, suite: str, only: str | None, sizes: str | None = None,
                   points: str | None = None) -> Path | None:
    """The output path of the newest interrupted run in `folder` whose settings are these (so
    that `rgdiff bench` without `--json`, whose default name carries the time, resumes it)."""
    identity = _identity(suite, only, suite_settings(suite, sizes, points))
    for path in sorted(Path(folder).glob("bench-*.json.partial"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _same_run(state, identity):
            return path.with_name(path.name[: -len(".partial")])
    return None


def run_bench(*, suite: str = "quick", only: str | None = None, out: Path, quiet: bool = False,
              sizes: str | None = None, points: str | None = None) -> dict:
    """Run the suite (or one benchmark), print the tables, write `out`; returns the JSON data.

    `sizes`, `points`: restrict the samplers benchmark (`sampler_settings`).

    Resumable: every finished benchmark, and every finished point of the samplers benchmark, is
    kept in `partial_path(out)` (written atomically) until `out` is written; running the same
    command again after an interruption takes them from there and runs only the rest."""
    if suite not in SUITES:
        raise InvalidBenchError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    check_only(only)
    settings = suite_settings(suite, sizes, points)
    names = [only] if only else list(BENCHMARKS)
    state = _resume_state(out, _identity(suite, only, settings))
    finished = [n for n in names if n in state["benchmarks"]]
    if finished or state["sampler_points"]:
        print(f"resuming from {partial_path(out)}: finished {', '.join(finished) or 'no benchmark'}"
              f"{', samplers at ' + ', '.join(state['sampler_points']) if state['sampler_points'] else ''}",
              file=sys.stderr)
    t0 = time.perf_counter() - state["seconds"]

    def save():
        state["seconds"] = time.perf_counter() - t0
        write_json(partial_path(out), state)

    def on_point(label, record):
        state["sampler_points"][label] = record
        save()

    results, ratios, notes = {}, {name: None for name in REQUIRED_RATIOS}, []
    with progress_bar(not quiet) as cb:
        for name in names:
            module = BENCHMARKS[name]
            if name in state["benchmarks"]:
                result = state["benchmarks"][name]
            else:
                resume = {"done": state["sampler_points"], "on_point": on_point} if name == "samplers" else {}
                result = module.run(settings[name], callback=cb, **resume)
                state["benchmarks"][name] = result
                save()
            results[name] = result
            ratios.update(module.ratios(result))
            notes.extend(result.get("notes", []))
    if "samplers" not in results:
        notes.append("sampler ratios and z are null: the samplers benchmark was not run")
    if "kernel" not in results:
        notes.append("kernel_vs_bare_fft is null: the kernel benchmark was not run")
    data = {
        "machine": machine(),
        "suite": suite,
        "only": only,
        "benchmarks": results,
        "ratios": ratios,
        "tunnelling": results.get("samplers", {}).get("tunnelling", {}),
        "notes": notes,
        "seconds": time.perf_counter() - t0,
    }
    write_json(out, data)
    partial_path(out).unlink(missing_ok=True)
    print_tables(data)
    return data


def print_tables(data: dict) -> None:
    """One table per benchmark and one of the ratios, on stdout."""
    # a wide console when piped, so the tables stay one line per row in logs
    console = Console() if sys.stdout.isatty() else Console(width=200)
    m = data["machine"]
    console.print(
        f"machine: {m['processor']}, {m['cpu_cores']} cores, jax {m['versions'].get('jax')} on "
        f"{m['jax_backend']} ({m['device_count']} device(s)); suite {data['suite']}"
    )
    for name, result in data["benchmarks"].items():
        header, body = BENCHMARKS[name].table_rows(result)
        table = Table(title=TITLES[name])
        for h in header:
            table.add_column(h)
        for row in body:
            table.add_row(*row)
        console.print(table)
    table = Table(title="ratios (same run)")
    table.add_column("name")
    table.add_column("value")
    for key, fig in data["ratios"].items():
        if fig is None:
            text = "null"
        elif "median" in fig:
            text = format_figure(fig["median"], fig["spread"])
        elif "exponent" in fig:
            text = format_figure(fig["exponent"], fig["error"])
        else:
            text = format_figure(fig["value"], fig["error"])
            if fig.get("N") is not None:
                text += f" (N={fig['N']})"
            elif fig.get("sizes"):
                text += f" (N={','.join(str(s) for s in fig['sizes'])})"
        table.add_row(key, text)
    console.print(table)
    for point, t in data.get("tunnelling", {}).items():
        table = Table(title=f"vacuum tunnelling at {point} (N = {t['N']}); <M> = 0 exactly by symmetry")
        for h in ("sampler", "vacuum changes / 1000 sweeps", "<M>", "<|M|>", "chains x sweeps"):
            table.add_column(h)
        for name, r in t["samplers"].items():
            rate, mean = r["vacuum_changes_per_1000_sweeps"], r["mean_M"]
            table.add_row(name, format_figure(rate["value"], rate["error"]),
                          "n/a" if mean["error"] is None else format_figure(mean["value"], mean["error"]),
                          f"{r['mean_abs_M']:.4g}" if r.get("mean_abs_M_error") is None
                          else format_figure(r["mean_abs_M"], r["mean_abs_M_error"]),
                          f"{r['chains']} x {r['sweeps_per_chain']}")
        console.print(table)
    for note in data["notes"]:
        console.print(f"note: {note}")
