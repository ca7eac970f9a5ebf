"""`rgdiff info FILE`: every output shows the config, the seed, the package versions and the
checksums of its inputs; anything else is one clear error."""

import json
from importlib import metadata

import h5py
import pytest

from rgdiff.cli.app import main
from rgdiff.io.atomic import file_checksum


def info(capsys, path, as_json=True):
    capsys.readouterr()
    assert main(["info", str(path)] + (["--json"] if as_json else [])) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    return json.loads(out) if as_json else out


@pytest.fixture(scope="module")
def uv(tmp_path_factory, normal_ensemble):
    d = tmp_path_factory.mktemp("prov")
    return d, normal_ensemble(d / "uv.h5", 2, 40, rng_seed=3, seed=5, extra={"config": {"seed": 5}})


def test_sampled_ensemble_records_its_config(tmp_path, capsys):
    out = tmp_path / "e.h5"
    assert main(["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--samples", "10", "--chains", "2",
                 "--warmup", "0", "--algorithm", "hmc", "--seed", "17", "--quiet", "--out", str(out)]) == 0
    d = info(capsys, out)
    with h5py.File(out, "r") as f:
        recorded = f.attrs["sha256"]
    assert d["kind"] == "ensemble" and d["content_sha256"] == recorded and d["seed"] == 17
    assert d["format"] == "rgdiff-ensemble 2" and "fields not verified" in d["integrity"]
    assert d["config"]["sampler"] == {"algorithm": "hmc", "chains": 2, "samples": 10, "warmup": 0, "thin": 1,
                                      "hmc_steps": 10, "trajectory_length": 1.5707963267948966}
    assert d["config"]["theory"]["m2"] == 1.0 and d["command"] == "rgdiff sample"
    assert d["versions"]["jax"] == metadata.version("jax") and d["versions"]["rgdiff"]
    assert len(d["diagnostics"]["divergent_transitions"]) == 2
    text = info(capsys, out, as_json=False)
    assert "seed: 17" in text and "divergent_transitions" in text and "hmc_steps: 10" in text


def test_flow_json_records_the_input_checksum(uv, tmp_path, capsys):
    d, data = uv
    out = tmp_path / "FLOW.json"
    assert main(["flow", str(data), "--scheme", "carosso", "--M", "1", "--times", "0,0.1", "--seed", "2",
                 "--quiet", "--out", str(out)]) == 0
    got = info(capsys, out)
    assert got["kind"] == "FLOW" and got["seed"] == 2
    assert got["inputs"]["input_sha256"] == file_checksum(data) and got["inputs"]["input"] == str(data)
    assert got["versions"]["numpy"] == metadata.version("numpy")


def test_result_json_and_output_folders(tmp_path, capsys):
    cmp = {"true": {}, "learned": {}, "meta": {"seed": 3, "data": "uv.h5", "data_sha256": "ab" * 32,
                                                 "model_params_sha256": "cd" * 32, "versions": {"jax": "x"}}}
    (tmp_path / "CMP.json").write_text(json.dumps(cmp))
    got = info(capsys, tmp_path / "CMP.json")
    assert got["kind"] == "CMP" and got["seed"] == 3
    assert got["inputs"]["data_sha256"] == "ab" * 32 and got["inputs"]["model_params_sha256"] == "cd" * 32
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('command = "rgdiff run"\nseed = 4\n[sampler]\nchains = 2\n[versions]\njax = "y"\n')
    got = info(capsys, run)
    assert got["kind"] == "output folder" and got["seed"] == 4 and got["config"]["sampler"] == {"chains": 2}


def test_info_refuses_what_is_not_an_output(tmp_path, capsys):
    for name, content in (("x.txt", b"hello"), ("x.json", b"[1, 2]"), ("y.json", b"{"), ("x.h5", b"\x89HDF\r\n")):
        (tmp_path / name).write_bytes(content)
        capsys.readouterr()
        assert main(["info", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rgdiff: error:"), err
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 2
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
