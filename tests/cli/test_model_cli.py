"""The model commands end to end on tiny settings: train, generate, compare-flow, bridge, and bad input."""

import json
import shutil
import tomllib

import pytest

from rgdiff.cli.app import main
from rgdiff.io.ensemble import load_ensemble
from rgdiff.io.atomic import file_checksum
from cli_errors import fails


def ok(args):
    assert main(args) == 0, args


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    data = d / "uv.h5"
    ok(["sample", "--dim", "2", "--size", "6", "--units", "lattice", "--m2", "1", "--lam", "2", "--samples", "100",
        "--chains", "2", "--warmup", "50", "--quiet", "--out", str(data)])
    other = d / "other.h5"
    ok(["sample", "--dim", "2", "--size", "4", "--units", "lattice", "--m2", "1", "--lam", "2", "--samples", "20",
        "--chains", "1", "--warmup", "20", "--quiet", "--out", str(other)])
    eft = d / "eft"
    ok(["train", "--model", "eft-score", "--data", str(data), "--steps", "40", "--quiet", "--out", str(eft)])
    conv = d / "conv"
    ok(["train", "--model", "score", "--data", str(data), "--steps", "20", "--quiet", "--out", str(conv)])
    return {"dir": d, "data": data, "other": other, "eft": eft, "conv": conv}


def test_model_directory_contract(setup):
    eft, data = setup["eft"], setup["data"]
    config = tomllib.loads((eft / "config.toml").read_text())
    for table in ("model", "scheme", "theory", "data", "training", "versions"):
        assert table in config, table
    assert config["model"]["model"] == "eft-score"
    assert config["scheme"]["name"] == "carosso" and config["scheme"]["M"] == 1.0
    assert config["data"]["sha256"] == file_checksum(data)
    assert config["training"]["steps"] == 40 and "weighting" in config["training"]
    assert (eft / "params.eqx").stat().st_size > 0
    records = [json.loads(line) for line in (eft / "metrics.jsonl").read_text().splitlines()]
    assert records and {"step", "loss", "learning_rate", "seconds"} <= set(records[-1]) and records[-1]["step"] == 40
    couplings = json.loads((eft / "COUPLINGS.json").read_text())
    assert set(couplings) == {"t", "kinetic", "mass", "quartic"}
    assert len({len(v) for v in couplings.values()}) == 1 and couplings["t"][0] == 0.0
    assert (eft / "couplings.png").exists()
    assert not (setup["conv"] / "COUPLINGS.json").exists() and (setup["conv"] / "params.eqx").exists()


@pytest.mark.parametrize("solver, steps", [("ode", "16"), ("sde", "64")])
def test_generate_writes_a_measurable_ensemble(setup, tmp_path, solver, steps):
    out = tmp_path / "gen.h5"
    ok(["generate", str(setup["eft"]), "--samples", "10", "--solver", solver, "--steps", steps, "--quiet", "--out", str(out)])
    ens = load_ensemble(out)
    assert ens.fields.shape == (1, 10, 6, 6) and ens.markov is False and ens.extra["solver"] == solver
    ok(["measure", str(out), "--json"])


def test_compare_flow_contract(setup, tmp_path):
    out = tmp_path / "CMP.json"
    ok(["compare-flow", str(setup["eft"]), "--data", str(setup["data"]), "--times", "0,0.1", "--samples", "16", "--quiet", "--out", str(out)])
    cmp = json.loads(out.read_text())
    assert {"learned", "true", "discrepancy", "meta", "fidelity", "spectral", "zero_mode"} <= set(cmp)
    assert cmp["fidelity"]["verdict"] in ("pass", "fail", "unresolved", "untestable")
    assert cmp["learned"]["meta"]["solver"] == "sde"  # the faithful default for a score model
    assert cmp["learned"]["t"] == cmp["true"]["t"] == [0.0, 0.1]
    assert set(cmp["discrepancy"]) == {"m_R", "Z", "lambda_R", "max_abs_phi"}


def test_bridge_runs_and_refuses_models_without_likelihood(setup, tmp_path, capsys):
    out = tmp_path / "bridge.h5"
    ok(["bridge", str(setup["eft"]), "--samples", "8", "--chains", "2", "--warmup", "4", "--ode-steps", "8", "--quiet", "--out", str(out)])
    ens = load_ensemble(out)
    assert ens.markov is True and ens.sampler["algorithm"] == "rg-bridge" and "imh_acceptance" in ens.diagnostics
    fails(capsys, ["bridge", str(setup["conv"]), "--samples", "8", "--out", str(tmp_path / "b2.h5")], "divergence")
    assert not (tmp_path / "b2.h5").exists()


def test_bad_model_input(setup, tmp_path, capsys):
    eft, data = setup["eft"], setup["data"]
    fails(capsys, ["generate", str(tmp_path / "nowhere"), "--samples", "4", "--out", str(tmp_path / "g.h5")], "does not exist")
    broken = tmp_path / "broken"
    shutil.copytree(eft, broken)
    (broken / "params.eqx").unlink()
    fails(capsys, ["generate", str(broken), "--samples", "4", "--out", str(tmp_path / "g.h5")], "params.eqx is missing")
    garbled = tmp_path / "garbled"
    shutil.copytree(eft, garbled)
    (garbled / "config.toml").write_text("this is [not toml")
    fails(capsys, ["generate", str(garbled), "--samples", "4", "--out", str(tmp_path / "g.h5")], "not valid TOML")
    foreign = tmp_path / "foreign"
    shutil.copytree(eft, foreign)
    (foreign / "params.eqx").write_bytes(b"\x00" * 100)
    fails(capsys, ["generate", str(foreign), "--samples", "4", "--out", str(tmp_path / "g.h5")], "params.eqx")
    fails(capsys, ["compare-flow", str(eft), "--data", str(setup["other"]), "--times", "0,0.1", "--out", str(tmp_path / "c.json")], "trained on")
    fails(capsys, ["generate", str(eft), "--samples", "8", "--t", "1e6", "--out", str(tmp_path / "g.h5")], "horizon")
    fails(capsys, ["train", "--model", "unet", "--data", str(data), "--out", str(tmp_path / "m")], "unknown --model")
    fails(capsys, ["train", "--data", str(data), "--scheme", "polchinski", "--out", str(tmp_path / "m")], "stationary law")
    fails(capsys, ["train", "--data", str(data), "--M", "0", "--out", str(tmp_path / "m")], "stationary law")
    fails(capsys, ["train", "--data", str(data), "--steps", "0", "--out", str(tmp_path / "m")], "steps")
    fails(capsys, ["train", "--data", str(data), "--out", str(eft)], "already exists")
    assert not (tmp_path / "g.h5").exists() and not (tmp_path / "m").exists()
