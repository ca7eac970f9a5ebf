"""Checkpoints and exact resume (CPU): a run killed with SIGKILL (training) or interrupted with
SIGINT (sampling) and resumed with --resume ends bitwise where the uninterrupted run ends.
Corrupt or foreign checkpoints are refused and left untouched; a NaN is caught at its step with
the last good checkpoint kept; divergent transitions are counted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from rgdiff.io.checkpoint import FILE, Checkpointer, read_checkpoint
from rgdiff.cli.app import main
from rgdiff.io.ensemble import load_ensemble
from cli_errors import fails

CLI = [sys.executable, "-c", "import sys; from rgdiff.cli import main; sys.exit(main(sys.argv[1:]))"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def wait_for_checkpoint(proc, folder: Path, timeout=180.0):
    t0 = time.monotonic()
    while not (folder / FILE).exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uv(tmp_path_factory, normal_ensemble):
    """UV data for training (Gaussian configurations suffice: this is about bookkeeping)."""
    d = tmp_path_factory.mktemp("resume")
    return d, normal_ensemble(d / "uv.h5", 2, 50, rng_seed=1)


@pytest.fixture(scope="module")
def killed_training(uv):
    """An uninterrupted run, and the same run killed with SIGKILL after its first checkpoint."""
    d, data = uv
    args = ["train", "--model", "score", "--data", data, "--steps", "120", "--batch", "8", "--seed", "4", "--quiet"]
    ref = d / "ref"
    assert main([str(a) for a in args + ["--out", ref]]) == 0
    out, ckpt = d / "killed", d / "killed.ckpt"
    proc = subprocess.Popen(CLI + [str(a) for a in args + ["--out", out, "--checkpoint-every", 10]], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(proc, ckpt)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    header, _ = read_checkpoint(ckpt)
    assert 0 < header["step"] < 120  # killed mid-way
    spare = d / "spare.ckpt"
    shutil.copytree(ckpt, spare)
    return {"dir": d, "data": data, "args": args, "ref": ref, "out": out, "ckpt": ckpt, "spare": spare,
            "step": header["step"]}


def test_sigkilled_training_resumes_bitwise(killed_training, capsys):
    k = killed_training
    assert not k["out"].exists()  # nothing half-written under the final name
    assert main(["train", "--resume", str(k["ckpt"]), "--quiet"]) == 0, capsys.readouterr().err
    assert (k["out"] / "params.eqx").read_bytes() == (k["ref"] / "params.eqx").read_bytes()

    def losses(folder):
        return [(r["step"], r["loss"]) for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]

    assert losses(k["out"]) == losses(k["ref"])  # the whole metrics history, across the kill
    assert not k["ckpt"].exists()  # removed once the model is written
    leftovers = [p.name for p in k["dir"].iterdir() if p.name.startswith(".killed")]
    assert leftovers == []  # the killed run's temporary folder and stale lock were cleaned up
    # provenance of the resumed model: config, seed, data checksum, versions
    assert main(["info", str(k["out"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    from rgdiff.io.atomic import file_checksum

    assert info["seed"] == 4 and info["inputs"]["data.sha256"] == file_checksum(k["data"])
    assert info["config"]["training"]["steps"] == 120 and info["versions"]["jax"]


def test_foreign_or_corrupt_checkpoints_are_refused_untouched(killed_training, capsys):
    k = killed_training
    spare = k["spare"]
    raw = (spare / FILE).read_bytes()
    fails(capsys, ["train", "--resume", spare, "--steps", "130", "--quiet"], "belongs to another run", "training.steps")
    fails(capsys, ["sample", "--resume", spare, "--quiet"], "checkpoint of `rgdiff train`")
    damaged = bytearray(raw)
    damaged[-100] ^= 0xFF
    (spare / FILE).write_bytes(bytes(damaged))
    fails(capsys, ["train", "--resume", spare, "--quiet"], "is corrupt", "left untouched")
    assert (spare / FILE).read_bytes() == bytes(damaged)  # never overwritten
    (spare / FILE).write_bytes(b"not a checkpoint")
    fails(capsys, ["train", "--resume", spare, "--quiet"], "not an rgdiff checkpoint")
    (spare / FILE).write_bytes(raw)
    # a fresh run must not overwrite an existing checkpoint
    fails(capsys, k["args"] + ["--out", k["dir"] / "other", "--checkpoint-dir", spare, "--checkpoint-every", 5],
          "already holds a checkpoint")
    assert (spare / FILE).read_bytes() == raw
    fails(capsys, ["train", "--resume", k["dir"] / "missing.ckpt"], "does not exist")


def test_nan_is_caught_at_its_step_with_the_last_good_checkpoint_kept(uv, tmp_path):
    """A non-finite configuration in the data makes the loss NaN at the first step that draws it (the
    plain DSM target of the zero mode: the exact marginal target averages over all the data, and
    would be NaN from the first step)."""
    import jax

    from rgdiff.train.initial import initial_model
    from rgdiff.rg import make_scheme
    from rgdiff.train.loop import NonFiniteLossError
    from rgdiff.train.score import TrainSettings, train

    _, data = uv
    ens = load_ensemble(data)
    fields = ens.fields.reshape(-1, 4, 4).copy()
    fields[37] = np.nan
    scheme = make_scheme("carosso", M=1.0)
    model = initial_model("score", ens.lattice, scheme, ens.fields, 1.0, key=jax.random.key(0))
    ckpt = Checkpointer(tmp_path / "c", command="train", every=1, config={}, identity={}, resume=False)
    with pytest.raises(NonFiniteLossError) as info:
        train(model, scheme, ens.lattice, fields, TrainSettings(steps=100, batch=4, zero_mode_target="dsm"),
              key=jax.random.key(2),
              checkpoint=ckpt)
    msg = str(info.value)
    step = int(msg.split("at step ")[1].split(" ")[0])
    header, _ = read_checkpoint(tmp_path / "c")
    # steps count from 1: step `step` found the parameters after step - 1 bad; the checkpoint kept is
    # the last whose parameters gave a finite loss, after step - 2
    assert header["step"] == step - 2
    assert "loss became nan" in msg and f"last good checkpoint (step {step - 2}) is kept" in msg


SAMPLE = ["sample", "--dim", "1", "--size", "8", "--units", "lattice", "--m2", "-0.5", "--lam", "1", "--chains", "2",
          "--samples", "1500", "--warmup", "40", "--seed", "11", "--quiet"]


def test_interrupted_sampling_resumes_bitwise(tmp_path, capsys):
    """Ctrl-C (KeyboardInterrupt, what SIGINT raises) after the third checkpoint, then --resume."""
    ref = tmp_path / "ref.h5"
    assert main(SAMPLE + ["--out", str(ref)]) == 0
    out, ckpt = tmp_path / "run.h5", tmp_path / "run.h5.ckpt"
    original = Checkpointer.after_sampling_chunk
    calls = []

    def interrupt_after_third_save(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 6:  # every 2 chunks: the third checkpoint was just written
            raise KeyboardInterrupt

    with mock.patch.object(Checkpointer, "after_sampling_chunk", interrupt_after_third_save):
        assert main(SAMPLE + ["--out", str(out), "--checkpoint-every", "2"]) == 130
    assert "interrupted" in capsys.readouterr().err
    header, _ = read_checkpoint(ckpt)
    assert header["step"] == 3 * 2 * 30 and not out.exists()  # 30 samples per chunk (1500 / 50)
    assert main(["sample", "--resume", str(ckpt), "--quiet"]) == 0, capsys.readouterr().err
    a, b = load_ensemble(ref), load_ensemble(out)
    np.testing.assert_array_equal(a.fields, b.fields)  # bitwise
    for key in ("acceptance_rate", "divergences", "step_size"):
        assert a.diagnostics[key] == b.diagnostics[key]
    assert not ckpt.exists()


def test_divergent_transitions_are_counted_and_reported(tmp_path, capsys):
    """HMC with a fixed step far beyond the stability limit of a stiff theory diverges."""
    out = tmp_path / "stiff.h5"
    args = ["sample", "--dim", "1", "--size", "4", "--units", "lattice", "--m2", "1", "--lam", "1e6", "--chains", "2",
            "--samples", "20", "--warmup", "0", "--algorithm", "hmc", "--hmc-steps", "5", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    div = load_ensemble(out).diagnostics["divergences"]
    assert sum(div) > 0 and f"divergences {sum(div)}" in err
