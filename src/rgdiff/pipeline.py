"""`rgdiff run`: the main job on the embedded default (the paper's theory, Fig. 6/8 point).

Stages: sample the UV theory with NUTS, measure it, write tables (JSON), figures (PNG) and a short
report.md into an output folder that is assembled under a temporary name and renamed at the end,
so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import shutil
import tempfile
from pathlib import Path

from . import plots
from ._io import package_versions, write_json, write_text
from .ensemble import Ensemble, save_ensemble
from .errors import WriteOutputError
from .observables import measure
from .progress import console, progress_bar
from .report import markdown_table, measurement_meta, print_measurement
from .sampling import SamplerSettings, sample
from .theory import paper_theory

QUICK = SamplerSettings(algorithm="nuts", chains=4, samples=4000, warmup=1000)
FULL = SamplerSettings(algorithm="nuts", chains=8, samples=20000, warmup=4000)


@contextlib.contextmanager
def atomic_folder(target: Path):
    """Build a folder under a temporary name beside `target`; rename it into place on success."""
    if target.exists():
        raise WriteOutputError(f"output folder {target} already exists; choose another --out")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
    try:
        yield tmp
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_main(*, out: Path | None, full: bool, seed: int, quiet: bool) -> Path:
    import jax

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = Path(out) if out is not None else Path("rgdiff-out") / f"run-{stamp}"
    theory = paper_theory(m2=-2.0)
    settings = FULL if full else QUICK
    with atomic_folder(target) as work:
        if not quiet:
            console.print(
                f"[bold]rgdiff run[/]: phi^4 d=2 N=20 L=1 m2=-2 lam=0.0017 "
                f"({'full' if full else 'quick'}: {settings.chains} chains x {settings.samples} NUTS samples)"
            )
        with progress_bar(not quiet) as cb:
            result = sample(theory, settings, key=jax.random.key(seed), callback=cb)
        ens = Ensemble(
            theory=theory,
            fields=result.fields,
            markov=True,
            seed=seed,
            sampler=settings.describe(),
            diagnostics=result.diagnostics,
            units={"units": "physical", "length": 1.0, "m2": -2.0, "lam": 0.0017},
            extra={"job": "rgdiff run", "full": full},
        )
        save_ensemble(work / "ensemble.h5", ens)
        m = measure(ens.fields, theory.lattice, markov=True)
        meta = measurement_meta(ens, m, "ensemble.h5")
        write_json(work / "observables.json", {"observables": m.as_json()["observables"], "meta": meta})
        plots.configurations(ens.fields, theory, work / "configurations.png")
        plots.magnetization(ens.fields, theory, work / "magnetization.png")
        plots.propagator(ens.fields, theory, work / "propagator.png")
        write_text(work / "report.md", _report(theory, settings, seed, m, meta, full))
        if not quiet:
            print_measurement(m, meta, console)
    console.print(f"results written to [bold]{target}[/] (report.md, observables.json, figures, ensemble.h5)")
    return target


def _report(theory, settings, seed, m, meta, full) -> str:
    d = meta.get("sampler_summary", {})
    return f"""# rgdiff run

Theory: lattice phi^4, d = {theory.lattice.dim}, N = {theory.lattice.size}, L = {theory.lattice.length:g},
m2 = {theory.m2:g}, lam = {theory.lam:g} (the paper's Fig. 6/8 point; conventions: docs in README).

Sampler: Blackjax NUTS with window adaptation, {settings.chains} chains x {settings.samples} samples,
{settings.warmup} warm-up steps per chain, seed {seed} ({'full' if full else 'quick'} run).
Mean acceptance {d.get('mean_acceptance_rate', float('nan')):.3f}, divergences {d.get('divergences', 0)}.
Errors: {meta['error_method']}; vacuum: {meta['vacuum']}.

## Observables

{markdown_table(m)}

## Figures

- `configurations.png`: sample configurations
- `magnetization.png`: Monte Carlo history and histogram of M
- `propagator.png`: 1/G2(p) against |phat|^2

Versions: {json.dumps(package_versions())}
"""
