"""The command line: contracts of `sample` / `measure`, and one clear line + exit 2 for bad input."""

import json
import os
import subprocess
import sys

import pytest

from rgdiff.cli.app import main

SMALL = ["sample", "--dim", "2", "--size", "4", "--m2", "1", "--lam", "0.5", "--samples", "20", "--chains", "2", "--warmup", "20", "--quiet"]


def run_main(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lam", "-1"], "lam = -1.0 < 0"),
        (["--m2", "-1", "--lam", "0"], "not normalizable"),
        (["--m2", "0", "--lam", "0"], "not normalizable"),
        (["--dim", "4"], "dimension must be 1, 2 or 3"),
        (["--dim", "0"], "dimension must be 1, 2 or 3"),
        (["--size", "1"], "N must be >= 2"),
        (["--m2", "nan"], "m2 must be finite"),
        (["--lam", "inf"], "lam must be finite"),
        (["--length", "-1"], "length L must be > 0"),
        (["--units", "lattice", "--length", "2"], "fix L = N"),
        (["--units", "bogus"], "unknown units"),
        (["--units", "hopping"], "kappa and lambda_h"),
        (["--chains", "0"], "chains must be"),
        (["--samples", "1"], "samples must be"),
        (["--algorithm", "metropolis"], "unknown sampler"),
        (["--seed", "-3"], "seed must be"),
        (["--size", "abc"], "--size"),
        (["--frobnicate"], "frobnicate"),
    ],
)
def test_bad_sample_input(tmp_path, capsys, extra, message):
    out = tmp_path / "x.h5"
    code, _, err = run_main(SMALL + ["--out", str(out)] + extra, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rgdiff: error:"), err
    assert message in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_output_paths(tmp_path, capsys):
    code, _, err = run_main(SMALL + ["--out", str(tmp_path / "missing" / "x.h5")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_main(SMALL + ["--out", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err


@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b"", "not a readable HDF5"), (b"hello", "not a readable HDF5")])
def test_bad_measure_input(tmp_path, capsys, content, message):
    path = tmp_path / "in.h5"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_main(["measure", str(path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_no_arguments_shows_help(capsys):
    code, out, err = run_main([], capsys)
    assert "sample" in out + err and "measure" in out + err


def test_sample_then_measure_json_contract(tmp_path):
    """End to end through the installed console script, as a user runs it."""
    out = tmp_path / "ens.h5"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    exe = [sys.executable, "-m", "rgdiff.cli"]
    r = subprocess.run(exe + SMALL + ["--out", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(exe + ["measure", str(out), "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"observables", "correlators", "meta"}
    required = {"abs_magnetization", "chi", "binder", "G2_0", "G2_p1", "m_R", "Z", "lambda_R", "g_R", "max_abs_phi",
                "effective_mass"}
    assert required <= set(data["observables"])
    for name, entry in data["observables"].items():
        assert set(entry) == {"value", "error", "tau_int", "tau_int_error", "rhat", "ess_bulk", "ess_tail",
                              "reliable", "reason", "method"}, name
        assert isinstance(entry["reliable"], bool) and (entry["reliable"] or entry["reason"]), (name, entry)
    meta = data["meta"]
    assert meta["theory"]["m2"] == 1.0 and meta["seed"] == 0 and meta["vacuum"] in ("raw", "mapped")
    assert meta["sampler"]["algorithm"] == "fa-hmc"  # the default: Fourier-accelerated HMC
    assert len(meta["vacuum_changes"]) == meta["chains"]
    assert meta["sampler_summary"]["divergences_per_chain"] == [0] * meta["chains"]
    r = subprocess.run(exe + ["measure", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "m_R" in r.stdout and "±" in r.stdout
