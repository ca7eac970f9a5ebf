"""`rgdiff ground-state` (issue 7): JSON contract, outputs on disk, bad input -> exit 2."""

import json

import pytest

from rgdiff.cli.app import main
from rgdiff.quantum.exact import best_gaussian, converged_ground_energy
from rgdiff.quantum.hamiltonian import Hamiltonian

# the anharmonic oscillator of test_quantum_train at its batch and ODE steps: compilations are shared
SMALL = ["--dim", "1", "--size", "1", "--m2", "1.0", "--lam", "24", "--steps", "3", "--eval-samples", "512", "--quiet"]


def test_ground_state_json_and_outputs(tmp_path, capsys):
    out = tmp_path / "gs"
    assert main(["ground-state", *SMALL, "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("energy", "energy_error", "energy_per_site", "baseline_gaussian", "exact", "meta"):
        assert key in printed
    h = Hamiltonian.make(1, 1, m2=1.0, lam=24.0)
    assert printed["exact"] == pytest.approx(converged_ground_energy(h).energy, rel=1e-9)
    assert printed["baseline_gaussian"] == pytest.approx(best_gaussian(h).energy, rel=1e-12)
    assert printed["exact"] == pytest.approx(0.803770651, abs=2e-9)  # H = p^2/2 + x^2/2 + x^4
    assert printed["energy_per_site"] == printed["energy"]
    assert printed["energy_error"] > 0
    assert printed["meta"]["hamiltonian"]["length"] == 1.0 and printed["meta"]["units"] == "lattice"
    assert len(printed["two_point"]["value"]) == 1 and printed["phi_sq"]["value"] > 0
    assert json.loads((out / "result.json").read_text()) == printed
    for name in ("energy.png", "two_point.png", "flowed_states.png"):
        assert (out / name).stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gs"]  # nothing half-written beside it


@pytest.mark.parametrize(
    "change",
    [{"--lam": "-1"}, {"--m2": "0", "--lam": "0"}, {"--steps": "-1"}, {"--dim": "4"}, {"--size": "0"},
     {"--units": "lattice", "--length": "2"}, {"--units": "furlongs"}, {"--batch": "1"}, {"--lr": "0"}],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, change):
    args = list(SMALL)
    for k, v in change.items():
        if k in args:
            args[args.index(k) + 1] = v
        else:
            args += [k, v]
    out = tmp_path / "gs"
    assert main(["ground-state", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rgdiff: error:")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "gs").mkdir()
    assert main(["ground-state", *SMALL, "--out", str(tmp_path / "gs")]) == 2
    assert "already exists" in capsys.readouterr().err
