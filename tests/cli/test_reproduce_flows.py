"""The flow commands: `train --model cnf` round trip (with compare-flow and generate), bad input, and
`reproduce fig7|fig8` (FIDELITY.json keys exactly, tiny-settings hook)."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from rgdiff.train.cnf import FlowTrainSettings
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.cli.reproduce_flows import FlowFigureSettings, fig_flows
from rgdiff.samplers.uv import SamplerSettings

TINY = FlowFigureSettings(
    uv=SamplerSettings("fa-hmc", chains=2, samples=60, warmup=50),
    train=FlowTrainSettings(steps=2, batch=4, ode_steps=2, log_every=1),
    samples=24, n_times=3, t_max=1.0, diagnostics_samples=32,
)


def test_fig8_tiny_writes_the_contract(tmp_path):
    result = fig_flows("fig8", tmp_path, quick=True, seed=0, quiet=True, settings=TINY)
    data = json.loads((tmp_path / "FIDELITY.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert set(data) == {"methods", "comparison", "meta"}
    assert set(data["methods"]) == {"rg", "reverse_kl"}
    for m in data["methods"].values():
        assert set(m) == {"m_R", "Z", "lambda_R", "max_abs_phi", "ess_t0", "fidelity", "spectral"}
        assert 0 < m["ess_t0"] <= 1
        assert m["fidelity"]["verdict"] in ("pass", "fail", "unresolved", "untestable")
        assert set(m["fidelity"]["judged"]) == {"G2_0", "m_R", "Z", "max_abs_phi"}
        assert len(m["spectral"]["ratio"]) == len(data["meta"]["times"])
    assert set(data["comparison"]) == {"G2_0", "m_R", "Z", "max_abs_phi", "lambda_R"}
    assert data["meta"]["settings"]["training"]["steps"] == 2
    for name in ("fig8_flows.png", "fig8_samples.png", "fig8_spectral_rg.png", "FLOW_true.json", "FLOW_rg.json", "FLOW_reverse_kl.json",
                 "report.md", "models/rg/config.toml", "models/reverse_kl/params.eqx"):
        assert (tmp_path / name).is_file(), name
    true = json.loads((tmp_path / "FLOW_true.json").read_text())
    assert true["t"][0] == 0.0 and true["meta"]["vacuum"] == "mapped"  # m2 = -2: no tunnelling


@pytest.mark.parametrize("args", [["reproduce", "fig9", "--quick"], ["train", "--model", "cnf", "--objective", "forward-kl",
                                                                      "--data", "missing.h5", "--out", "m"]])
def test_bad_input_exits_2(args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rgdiff.cli", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("rgdiff: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_train_cnf_round_trip_and_compare_flow(tmp_path):
    """`rgdiff train --model cnf` writes a model directory that `load_model_dir` rebuilds and
    `compare-flow` reads; a bad objective is one line and exit 2 with nothing written."""
    from rgdiff.cli.app import main
    from rgdiff.io.ensemble import Ensemble, save_ensemble
    from rgdiff.theory.gaussian import sample_gaussian_field
    from rgdiff.io.modeldir import load_model_dir
    from rgdiff.theory.phi4 import Phi4

    theory = Phi4(Lattice(2, 4, 1.0), 2.0, 0.0)
    fields = sample_gaussian_field(jax.random.key(0), theory.lattice, 1.0 / (theory.lattice.phat_sq_half() + 2.0), (1, 40))
    save_ensemble(tmp_path / "uv.h5", Ensemble(theory=theory, fields=np.asarray(fields), markov=False, seed=0))
    base = ["train", "--model", "cnf", "--data", str(tmp_path / "uv.h5"), "--steps", "2", "--batch", "4", "--ode-steps", "2", "--quiet"]
    assert main(base + ["--objective", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    for objective in ("rg", "reverse-kl"):
        out = tmp_path / objective
        assert main(base + ["--objective", objective, "--out", str(out)]) == 0
        loaded = load_model_dir(out)
        assert isinstance(loaded.model, ContinuousFlow)
        assert loaded.config["training"]["objective"] == objective and loaded.config["training"]["steps"] == 2
        assert np.any(np.asarray(loaded.model.weights) != 0)  # the trained weights, not the skeleton's zeros
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the final step (log_every 10)
        assert 0 < json.loads((out / "SAMPLER.json").read_text())["ess"] <= 1
    cmp = tmp_path / "cmp.json"
    assert main(["compare-flow", str(tmp_path / "rg"), "--data", str(tmp_path / "uv.h5"), "--times", "0,0.1",
                 "--samples", "16", "--out", str(cmp), "--quiet"]) == 0
    written = json.loads(cmp.read_text())
    assert set(written["discrepancy"]) == {"m_R", "Z", "lambda_R", "max_abs_phi"}
    assert written["fidelity"]["verdict"] in ("pass", "fail", "unresolved", "untestable")
    assert "zero_mode" not in written  # a CNF: no score to compare
    gen = tmp_path / "gen.h5"
    assert main(["generate", str(tmp_path / "rg"), "--samples", "8", "--t", "0.1", "--out", str(gen), "--quiet"]) == 0
    from rgdiff.io.ensemble import load_ensemble

    assert load_ensemble(gen).fields.shape == (1, 8, 4, 4)
