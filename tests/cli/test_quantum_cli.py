"""`rgdiff ground-state` (issues 7, 16): JSON contract, outputs on disk, bad input -> exit 2 before any work,
an impossible result -> exit 1, checkpoints and bitwise resume after SIGKILL."""

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


@pytest.mark.parametrize(
    "change,fragment",
    [({"--batch": "10000000000"}, "of memory"), ({"--eval-samples": "1000000000000"}, "of memory"),
     ({"--ode-steps": "1"}, "ode-steps"), ({"--ode-error-weight": "-1"}, "error weight")],
)
def test_hostile_sizes_are_refused_before_any_work(tmp_path, capsys, change, fragment):
    """Sizes XLA cannot index or this machine cannot hold: one line, exit 2, nothing written."""
    args = list(SMALL)
    for k, v in change.items():
        args += [k, v]
    out = tmp_path / "gs"
    assert main(["ground-state", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rgdiff: error:") and fragment in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_missing_required_flag_without_resume(tmp_path, capsys):
    args = [a for a in SMALL if a not in ("--m2", "1.0")]
    assert main(["ground-state", *args, "--out", str(tmp_path / "gs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--m2" in err[0]


def _no_training(monkeypatch):
    import rgdiff.cli.ground_state as gs

    def refuse(*a, **k):
        raise AssertionError("the run started before its output was checked")

    monkeypatch.setattr(gs, "train", refuse)


def test_read_only_output_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    import os

    _no_training(monkeypatch)
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.f_flag = real(path).f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", ReadOnly)  # a read-only mount, as the kernel reports it
    out = tmp_path / "sub" / "gs"
    assert main(["ground-state", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only file system" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes anywhere")
def test_unwritable_output_folder_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["ground-state", *SMALL, "--out", str(locked / "gs")]) == 2
    finally:
        locked.chmod(0o755)
    assert "no permission" in capsys.readouterr().err


def test_impossible_result_exits_1_and_claims_no_improvement(tmp_path, capsys, monkeypatch):
    """An energy below the exact E0 (here: a reference set 20% above the true E0) is refused at run time."""
    import rgdiff.cli.ground_state as gs

    h = Hamiltonian.make(1, 1, m2=1.0, lam=24.0)
    true = converged_ground_energy(h).energy
    monkeypatch.setattr(gs, "exact_reference", lambda h: (1.2 * true, "a wrong reference", 0.0))
    out = tmp_path / "gs"
    assert main(["ground-state", *SMALL, "--json", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rgdiff: error: the result is impossible") and "below the exact" in err[0]
    printed = json.loads(captured.out)
    assert printed["valid"] is False and printed["failures"]
    assert printed["improvement_over_gaussian"]["value"] is None and printed["improvement_over_gaussian"]["reason"]
    assert printed["energy_error"] > 0 and printed["checks"]["above_exact"]["ok"] is False
    assert json.loads((out / "result.json").read_text()) == printed  # written whole, and says so


# checkpoints and resume (CPU: bitwise) -------------------------------------------------------
RESUME = ["--dim", "1", "--size", "1", "--m2", "1.0", "--lam", "24", "--steps", "200", "--batch", "64",
          "--eval-samples", "512", "--seed", "3", "--quiet"]


@pytest.mark.slow
def test_sigkilled_ground_state_resumes_bitwise(tmp_path, capsys):
    """SIGKILL after a checkpoint, then `ground-state --resume`: bitwise the uninterrupted run (slow:
    three runs, about a minute; by default ground-state resume is tested in tests/train/test_loop.py
    and SIGKILL-then-resume through the CLI in tests/train/test_resume.py)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from rgdiff.io.checkpoint import FILE, read_checkpoint

    ref = tmp_path / "ref"
    assert main(["ground-state", *RESUME, "--out", str(ref)]) == 0, capsys.readouterr().err
    out, ckpt = tmp_path / "killed", tmp_path / "killed.ckpt"
    cli = [sys.executable, "-c", "import sys; from rgdiff.cli import main; sys.exit(main(sys.argv[1:]))"]
    proc = subprocess.Popen(cli + ["ground-state", *RESUME, "--out", str(out), "--checkpoint-every", "10"],
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not (ckpt / FILE).exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() - t0 < 300, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = read_checkpoint(ckpt)[0]["step"]
    assert 0 < step < 200 and not out.exists()
    raw = (ckpt / FILE).read_bytes()
    # another setting with --resume is refused, the checkpoint left untouched
    assert main(["ground-state", "--resume", str(ckpt), "--lr", "0.01", "--quiet"]) == 2
    assert "belongs to another run" in capsys.readouterr().err and (ckpt / FILE).read_bytes() == raw
    assert main(["ground-state", "--resume", str(ckpt), "--quiet"]) == 0, capsys.readouterr().err
    mine, theirs = (json.loads((d / "result.json").read_text()) for d in (out, ref))
    for r in (mine, theirs):
        r["meta"].pop("wall_seconds")
    assert mine == theirs  # every number, bitwise: training history, energy, errors, correlations
    assert not ckpt.exists()  # removed once the output is written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".killed")] == []
