"""`rgdiff bench`: the command runs and writes valid JSON (no timing assertions anywhere), the
analysis formulas are right on closed forms, and a training step compiles once."""

import json
import logging
import math

import jax
import numpy as np
import pytest

from rgdiff.bench import REQUIRED_RATIOS
from rgdiff.bench.samplers import ChunkClock, break_even, dynamic_exponent
from rgdiff.bench.training import power_law_exponent
from rgdiff.cli.app import main
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg import make_scheme


def test_bench_quick_kernel_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--tiny", "--only", "kernel", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert set(REQUIRED_RATIOS) <= set(data["ratios"])
    assert data["only"] == "kernel" and set(data["benchmarks"]) == {"kernel"}
    assert data["machine"]["cpu_cores"] >= 1 and data["machine"]["jax_backend"] == jax.default_backend()
    row = data["benchmarks"]["kernel"]["rows"][0]
    for name in ("bare_fft", "push_forward"):
        fig = row["configs_per_s"][name]
        assert fig["median"] > 0 and fig["spread"] >= 0 and fig["repeats"] >= 1
    assert data["ratios"]["kernel_vs_bare_fft"]["median"] > 0
    assert data["ratios"]["bridge_vs_nuts_ess_per_s_amortized"] is None  # samplers not run
    assert "ratios (same run)" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*part"))  # atomic write left no temporary file


def test_bench_refuses_unknown_benchmark(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--only", "nope", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rgdiff: error: unknown benchmark 'nope'; choose one of kernel, training, samplers"]
    assert not out.exists()


def test_dynamic_exponent_and_power_law_on_exact_power_laws():
    sizes = [8, 12, 20]
    z = dynamic_exponent(sizes, [2.0 * n**1.7 for n in sizes], [0.1 * n**1.7 for n in sizes])
    assert z["z"] == pytest.approx(1.7, abs=1e-12)
    # weighted fit with relative errors 5% each: var(z) = 1 / sum w (x - xbar)^2, w = 1 / 0.05^2
    x = np.log(sizes)
    assert z["error"] == pytest.approx(0.05 / math.sqrt(np.sum((x - x.mean()) ** 2)), rel=1e-12)
    fit = power_law_exponent([256, 1024, 4096], [3.0 * v for v in (256, 1024, 4096)])
    assert fit["exponent"] == pytest.approx(1.0, abs=1e-12) and fit["error"] == pytest.approx(0.0, abs=1e-12)


def test_break_even_counts_effective_samples():
    # learned: 100 s setup, 2 tau s = 2 x 1 x 0.01 s per effective sample; NUTS: 0 s, 2 x 10 x 0.001
    assert break_even(100.0, 0.005, 1.0, 0.0, 0.001, 10.0) == pytest.approx(100.0 / (0.02 - 0.01))
    assert break_even(100.0, 0.02, 1.0, 0.0, 0.001, 10.0) is None  # never cheaper per effective sample


def test_chunk_clock_separates_the_first_chunk():
    clock = ChunkClock()
    clock.marks["sampling"] = [(0.0, 0), (5.0, 10), (6.0, 20), (7.0, 30), (8.0, 40)]
    per_item, compile_s = clock.per_item_seconds("sampling")
    assert per_item == [0.1, 0.1, 0.1]
    assert compile_s == pytest.approx(4.0)


def test_training_step_compiles_once():
    """The jitted DSM step is compiled at the first step and never again (jax.log_compiles)."""
    from rgdiff.models import ConvScore
    from rgdiff.train.score import TrainSettings, train

    messages, marks = [], []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    lattice = Lattice.lattice_units(2, 4)
    model = ConvScore(lattice, time_scale=1.0, channels=4, num_layers=1, mlp_width=4, num_time_basis=4, key=jax.random.key(0))
    fields = np.random.default_rng(0).normal(size=(16, 4, 4))
    try:
        with jax.log_compiles():
            train(model, make_scheme("carosso", M=1.0), lattice, fields, TrainSettings(steps=5, batch=4, log_every=1),
                  key=jax.random.key(1), on_log=lambda record, _: marks.append(len(messages)))
    finally:
        logger.removeHandler(handler)
    assert sum("Compiling jit(step)" in m for m in messages) == 1
    assert len(marks) == 5 and marks[-1] == marks[0]  # nothing at all compiled after the first step


def test_bench_samplers_tiny_runs_every_local_sampler(tmp_path):
    """The samplers benchmark at one tiny point: NUTS, HMC, FA-HMC and FA-NUTS side by side, every
    figure finite, the ratios named; `--sizes` and `--points` choose the points (no timing asserted)."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--tiny", "--only", "samplers", "--sizes", "8", "--points", "none", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    (row,) = data["benchmarks"]["samplers"]["rows"]
    assert row["point"] == "benchmark_N8" and set(row["samplers"]) == {"nuts", "hmc", "fa-hmc", "fa-nuts"}
    for s in row["samplers"].values():
        for obs in ("abs_M", "chi", "max_abs_phi"):
            assert s["observables"][obs]["tau_int"] >= 0.5 and s["observables"][obs]["ess_per_s"]["value"] > 0
    assert data["ratios"]["fa_hmc_vs_nuts_ess_per_s"]["N"] == 8
    assert data["ratios"]["fa_hmc_vs_nuts_ess_per_s_paper_broken"] is None  # not run: --points none


@pytest.mark.parametrize("args, message", [(["--sizes", "7"], "--sizes '7'"), (["--points", "nowhere"], "--points 'nowhere'")])
def test_bench_refuses_unknown_sizes_and_points(tmp_path, capsys, args, message):
    assert main(["bench", "--only", "samplers", *args, "--json", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
