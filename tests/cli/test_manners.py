"""Day-to-day manners of the command line and the Python API: --version, the path every command
wrote (also with --quiet), one chain is measurable, readable footers for generated ensembles, and
one warning when JAX's float64 is off."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from rgdiff import __version__
from rgdiff.cli.app import main
from rgdiff.io.ensemble import Ensemble, save_ensemble
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rgdiff {__version__}"


def test_quiet_hides_progress_not_the_path_written(tmp_path, capsys):
    out = tmp_path / "one.h5"
    assert main(["sample", "--dim", "2", "--size", "4", "--m2", "1", "--lam", "0.5", "--samples", "16", "--chains", "1",
                 "--warmup", "50", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"wrote {out}" in err.replace("\n", "") and "1 chain x 16 samples" in err.replace("\n", " ")
    flow = tmp_path / "FLOW.json"
    assert main(["flow", str(out), "--scheme", "carosso", "--M", "1", "--times", "0,0.1", "--out", str(flow), "--quiet"]) == 0
    assert f"wrote {flow}" in capsys.readouterr().err.replace("\n", "")
    npz = tmp_path / "e.npz"
    assert main(["export", str(out), "--to", "npz", "--out", str(npz), "--quiet"]) == 0
    assert f"wrote {npz}" in capsys.readouterr().err.replace("\n", "")
    # a single chain of >= 8 samples is measurable, with an R-hat from its two halves
    assert main(["measure", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    m = data["observables"]["abs_magnetization"]
    assert m["value"] is not None and m["rhat"] is not None and data["meta"]["chains"] == 1
    assert "R-hat undefined" not in (m["reason"] or "")


def test_generated_ensemble_footer_says_what_it_is(tmp_path, capsys):
    """Independent samples of a model have no chains, warm-up or step size: the footer says
    `model-ode: 64 independent samples`, never "None" or "?"."""
    rng = np.random.default_rng(0)
    lat = Lattice(2, 4, 4.0)
    ens = Ensemble(theory=Phi4(lat, 1.0, 0.5), fields=rng.normal(size=(1, 64, 4, 4)), markov=False, seed=3,
                   sampler={"algorithm": "model-ode"})
    path = tmp_path / "gen.h5"
    save_ensemble(path, ens)
    assert main(["measure", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model-ode: 64 independent samples, seed 3" in out
    footer = out.split("└")[-1]
    assert "None" not in footer and "?" not in footer


def test_python_api_warns_once_when_float64_is_off():
    code = textwrap.dedent("""
        import warnings
        import jax
        from rgdiff.lattice.geometry import Lattice
        from rgdiff.observables.estimators import measure
        from rgdiff.precision import Float32Warning
        from rgdiff.samplers.uv import SamplerSettings, sample
        from rgdiff.theory.phi4 import Phi4
        theory = Phi4(Lattice(2, 4, 4.0), 1.0, 0.5)
        for call in (lambda: sample(theory, SamplerSettings(chains=2, samples=16, warmup=10), key=jax.random.key(0)),
                     lambda: measure(fields, theory.lattice)):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = call()
            if hasattr(result, "fields"):
                fields = result.fields
            kinds = [w.category for w in caught if issubclass(w.category, UserWarning)]
            print(len(kinds), kinds[0] is Float32Warning)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "PYTHONWARNINGS")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "True", "1", "True"], r.stdout


def test_progress_in_a_log_is_plain_lines_at_a_bounded_rate():
    """Where stderr is not a terminal (a log file, a batch job) each stage prints a line when it
    starts, at most one per interval while it runs, and one when it ends (never one per step)."""
    from rgdiff.cli.progress import progress_lines

    now, lines = [0.0], []
    callback = progress_lines(lines.append, 60.0, clock=lambda: now[0])
    for step in range(1001):  # 1000 steps of 0.5 s
        now[0] = 0.5 * step
        callback("train", step, 1000)
    callback("train", 1000, 1000)  # a repeated final call prints nothing more
    assert lines[0].startswith("train        0/1000 (0%)") and lines[-1].startswith("train        1000/1000 (100%)")
    assert len(lines) == 1 + 500 // 60 + 1, lines  # start, every 60 s of 500 s, end
    assert "eta 0:07:20" in lines[1] and "elapsed 0:01:00" in lines[1]  # after 120 of 1000 steps in 60 s
    lines.clear()
    callback("generate", 1, 13)  # a stage first seen part-done has no rate yet: no eta, never "eta 0:00:00"
    assert lines == ["generate     1/13 (8%)  elapsed 0:00:00"]
