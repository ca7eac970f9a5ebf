"""Progress display for long jobs (rich), written to stderr so stdout stays machine-readable.

On a terminal each stage is a live bar. Where stderr is not a terminal (a log file, a batch
system, CI) a live bar cannot redraw and rich would show the bars only once the job ends, so there
each stage prints plain lines instead: when it starts, at most once a `LOG_INTERVAL_S`, and when it
ends."""

from __future__ import annotations

import contextlib
import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
LOG_INTERVAL_S = 60.0


@contextlib.contextmanager
def progress_bar(enabled: bool = True):
    """Yield a callback(stage, done, total) that drives one bar per stage (plain lines when stderr
    is not a terminal)."""
    if not enabled:
        yield lambda *a: None
        return
    if not console.is_terminal:
        yield progress_lines(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True), LOG_INTERVAL_S)
        return
    with Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as prog:
        tasks: dict[str, int] = {}

        def callback(stage: str, done: int, total: int):
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=max(total, 1))
            prog.update(tasks[stage], completed=done, total=max(total, 1))

        yield callback


def progress_lines(write, interval: float, clock=time.monotonic):
    """A callback(stage, done, total) that calls write(line) when a stage starts, at most once per
    `interval` seconds while it runs, and once when it reaches its total."""
    started: dict[str, float] = {}
    last: dict[str, float] = {}
    ended: set[str] = set()

    def callback(stage: str, done: int, total: int):
        now = clock()
        total = max(int(total), 1)
        if stage not in started:
            started[stage], last[stage] = now, -math.inf
        finished = done >= total
        if stage in ended or not (finished or now - last[stage] >= interval):
            return
        last[stage] = now
        if finished:
            ended.add(stage)
        elapsed = now - started[stage]
        eta = elapsed / done * (total - done) if 0 < done < total and elapsed > 0 else None
        write(f"{stage:<12} {done}/{total} ({100 * done / total:.0f}%)  elapsed {_clock(elapsed)}"
              + ("" if eta is None else f"  eta {_clock(eta)}"))

    return callback


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
