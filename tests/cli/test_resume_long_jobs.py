"""Resume for the long jobs (issue 16): `train --model cnf` killed with SIGKILL resumes bitwise;
`reproduce fig7|fig8` keeps its finished stages and continues an interrupted training from its own
checkpoint, ending bitwise as an uninterrupted run (CPU); a NaN stop keeps a checkpoint that
resumes with a smaller --lr; --checkpoint-every 0 is refused; a user's --checkpoint-dir stays."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest

from rgdiff.cli.app import main
from rgdiff.io.checkpoint import FILE, Checkpointer, read_checkpoint
from rgdiff.theory.phi4 import make_phi4
from cli_errors import error_line, run_cli

CLI = [sys.executable, "-c", "import sys; from rgdiff.cli import main; sys.exit(main(sys.argv[1:]))"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def run(capsys, args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    return error_line(None, err, expected=None)


def wait_for(proc, path: Path, timeout=300.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uv(tmp_path_factory, normal_ensemble):
    d = tmp_path_factory.mktemp("long")
    return d, normal_ensemble(d / "uv.h5", 2, 40, rng_seed=3)


CNF = ["train", "--model", "cnf", "--steps", "12", "--batch", "4", "--ode-steps", "2", "--seed", "5", "--quiet"]


@pytest.mark.slow
def test_sigkilled_cnf_training_resumes_bitwise(uv, capsys):
    """SIGKILL after the first checkpoint, then `train --model cnf --resume`: bitwise the
    uninterrupted model (slow: three compilations of the flow, about 1 minute of CPU; the
    library-level flow resume runs by default in tests/train/test_loop.py)."""
    d, data = uv
    ref = d / "cnf-ref"
    assert run(capsys, CNF + ["--data", data, "--out", ref])[0] == 0
    out, ckpt = d / "cnf-killed", d / "cnf-killed.ckpt"
    proc = subprocess.Popen(CLI + [str(a) for a in CNF + ["--data", data, "--out", out, "--checkpoint-every", 3]],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(proc, ckpt / FILE)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = read_checkpoint(ckpt)[0]["step"]
    assert 0 < step < 12 and not out.exists()
    code, err = run(capsys, ["train", "--model", "cnf", "--resume", ckpt, "--quiet"])
    assert code == 0, err
    assert (out / "params.eqx").read_bytes() == (ref / "params.eqx").read_bytes()  # bitwise, across the kill
    losses = [[(r["step"], r["loss"]) for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())]
              for p in (out, ref)]
    assert losses[0] == losses[1]
    assert json.loads((out / "SAMPLER.json").read_text()) == json.loads((ref / "SAMPLER.json").read_text())
    assert not ckpt.exists()


def test_nan_stop_keeps_a_checkpoint_that_resumes_with_a_smaller_lr(tmp_path):
    """`fit` on (w - 10)^2 with a loss that is NaN beyond w = 2.5: SGD(0.05) walks w = 1, 1.9, 2.71,
    and step 4 finds the loss NaN at w = 2.71. The checkpoint kept is that of step 2 (w = 1.9, whose
    loss was finite: resuming from 2.71 would fail at any learning rate); it resumes under an
    identity with a smaller learning rate, and SGD(0.01) then stays below 2.5 to the end."""
    import jax.numpy as jnp
    import optax

    from rgdiff.train.loop import NonFiniteLossError, fit

    def loss_fn(w, state, data, key):
        return jnp.where(w > 2.5, jnp.nan, (w - 10.0) ** 2), (state, {})

    def checkpointer(lr, resume):
        return Checkpointer(tmp_path / "c", command="train", every=1, config={}, resume=resume,
                            identity={"training": {"learning_rate": lr, "steps": 5}})

    with pytest.raises(NonFiniteLossError) as info:
        fit(jnp.asarray(0.0), optax.sgd(0.05), loss_fn, key=jax.random.key(0), steps=5, checkpoint=checkpointer(0.05, False))
    msg = str(info.value)
    assert "at step 4 " in msg and "(step 2) is kept" in msg and "--resume" in msg and "smaller --lr" in msg, msg
    header, arrays = read_checkpoint(tmp_path / "c")
    assert header["step"] == 2 and float(arrays[0]) == pytest.approx(1.9) and "at step 4" in header["host"]["fault"]
    from rgdiff.io.checkpoint import ReadCheckpointError

    with pytest.raises(ReadCheckpointError, match="belongs to another run"):  # only the learning rate may change
        Checkpointer(tmp_path / "c", command="train", every=1, config={}, resume=True,
                     identity={"training": {"learning_rate": 0.01, "steps": 7}})
    w, _ = fit(jnp.asarray(0.0), optax.sgd(0.01), loss_fn, key=jax.random.key(0), steps=5,
               checkpoint=checkpointer(0.01, True))
    expected = 1.9
    for _ in range(3):  # steps 3, 4, 5 with SGD(0.01): w <- w + 0.02 (10 - w)
        expected += 0.02 * (10 - expected)
    assert float(w) == pytest.approx(expected, rel=1e-12)
    # a run that did not stop on a fault is not relaxed: another learning rate is another run
    (tmp_path / "c2").mkdir()
    ok = Checkpointer(tmp_path / "c2", command="train", every=1, config={}, resume=False,
                      identity={"training": {"learning_rate": 0.05}})
    ok.save(1, [np.ones(1)])
    with pytest.raises(ReadCheckpointError, match="belongs to another run"):
        Checkpointer(tmp_path / "c2", command="train", every=1, config={}, resume=True,
                     identity={"training": {"learning_rate": 0.01}})


def test_cli_nan_stop_is_exit_1_and_resume_accepts_a_smaller_lr(uv, tmp_path, capsys):
    """The same through `rgdiff train`: an absurd --lr blows the training up (exit 1, one line
    naming the kept checkpoint); `--resume` with another --steps is refused, with a smaller --lr
    it is accepted (whether the damaged state then recovers is the model's business)."""
    _, data = uv
    out = tmp_path / "m"
    args = ["train", "--model", "score", "--data", data, "--steps", "20", "--batch", "4", "--lr", "9", "--quiet",
            "--out", out, "--checkpoint-every", 1]
    code, err = run(capsys, args)
    if code == 0:
        pytest.skip("this learning rate did not blow up on this platform")
    line = one_line(err)
    assert code == 1 and "became" in line and "--resume" in line, line  # a numerical fault: exit 1
    failed = int(line.split(" at step ")[1].split(";")[0])
    header, _ = read_checkpoint(Path(f"{out}.ckpt"))
    assert header["step"] == failed - 1 and f"(step {failed - 1})" in line  # steps counted from 1 everywhere
    code, err = run(capsys, ["train", "--resume", f"{out}.ckpt", "--steps", "21", "--quiet"])
    assert code == 2 and "belongs to another run" in one_line(err)
    code, err = run(capsys, ["train", "--resume", f"{out}.ckpt", "--lr", "1e-4", "--quiet"])
    assert code == 0 or (code == 1 and "another run" not in err and "became" in one_line(err)), err


def test_checkpoint_every_zero_is_refused_and_a_users_folder_is_kept(uv, tmp_path, capsys):
    _, data = uv
    for args in (["train", "--data", data, "--steps", "3", "--out", tmp_path / "m"],
                 ["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--samples", "8", "--chains", "1",
                  "--warmup", "0", "--out", tmp_path / "s.h5"]):
        code, err = run(capsys, args + ["--checkpoint-every", "0", "--quiet"])
        assert code == 2 and "--checkpoint-every" in one_line(err) and (">= 1" in err or "[1," in err)
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    mine = tmp_path / "my-ckpt"
    mine.mkdir()
    code, err = run(capsys, ["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--samples", "100",
                             "--chains", "1", "--warmup", "0", "--algorithm", "hmc", "--out", tmp_path / "s.h5",
                             "--checkpoint-every", "1", "--checkpoint-dir", mine, "--quiet"])
    assert code == 0, err
    assert mine.is_dir() and list(mine.iterdir()) == []  # the user's (empty) folder is still there


# reproduce fig7 | fig8 ---------------------------------------------------------------------------

from rgdiff.cli.stage_checkpoints import StageCheckpoints  # noqa: E402
from rgdiff.samplers.uv import SamplerSettings  # noqa: E402


def test_reproduce_keeps_its_uv_stage_and_refuses_a_foreign_resume(tmp_path):
    """The stage logic alone (fast): the UV ensemble is sampled once, kept (checksummed) and read
    back bitwise; a resume with other settings is refused; removal keeps a user's folder."""
    theory = make_phi4(1, 4, units="lattice", m2=1.0, lam=1.0)
    settings = SamplerSettings("hmc", chains=2, samples=16, warmup=0)
    folder = tmp_path / "ck"
    ck = StageCheckpoints(folder, config={"figure": "fig7"}, identity={"figure": "fig7", "seed": 0}, every=2,
                              resume=False)
    first = ck.uv_fields(theory, settings, key=jax.random.key(0))
    assert (folder / "uv.h5").is_file() and not (folder / "uv.ckpt").exists()
    again = StageCheckpoints(folder, config={"figure": "fig7"}, identity={"figure": "fig7", "seed": 0}, every=None,
                                 resume=True)
    assert again.every == 2
    with mock.patch("rgdiff.samplers.uv.sample", side_effect=AssertionError("sampled again")):
        np.testing.assert_array_equal(again.uv_fields(theory, settings, key=jax.random.key(0)), first)
    from rgdiff.io.checkpoint import ReadCheckpointError

    with pytest.raises(ReadCheckpointError, match="belongs to another run"):
        StageCheckpoints(folder, config={}, identity={"figure": "fig7", "seed": 1}, every=None, resume=True)
    with pytest.raises(ReadCheckpointError, match="not of `rgdiff run`"):  # `rgdiff run --resume` of it
        StageCheckpoints(folder, config={}, identity={"figure": "fig7", "seed": 0}, every=None, resume=True,
                         command="run")
    code, _, err = run_cli(["run", "--resume", folder])
    assert "not of `rgdiff run`" in error_line(code, err)
    with pytest.raises(ReadCheckpointError, match="already holds a checkpoint"):
        StageCheckpoints(folder, config={}, identity={"figure": "fig7", "seed": 0}, every=2, resume=False)
    again.remove()
    assert not folder.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    ck = StageCheckpoints(mine, config={}, identity={}, every=1, resume=False)
    ck.uv_fields(theory, settings, key=jax.random.key(0))
    ck.remove()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_interrupted_reproduce_resumes_bitwise(tmp_path):
    """fig8 at tiny settings, interrupted after the first checkpoint of the RG-objective training
    (UV ensemble kept), then resumed: the same FIDELITY.json methods and model weights as an
    uninterrupted run. About 3 minutes of CPU (three tiny figure runs' compilations)."""
    from rgdiff.cli.reproduce_flows import FlowFigureSettings, fig_flows
    from rgdiff.train.cnf import FlowTrainSettings

    tiny = FlowFigureSettings(uv=SamplerSettings("nuts", chains=2, samples=60, warmup=50),
                              train=FlowTrainSettings(steps=6, batch=4, ode_steps=2, log_every=1),
                              samples=24, n_times=3, t_max=1.0, diagnostics_samples=32)
    (tmp_path / "ref").mkdir()
    ref = fig_flows("fig8", tmp_path / "ref", quick=True, seed=0, quiet=True, settings=tiny)
    folder, ident = tmp_path / "ck", {"figure": "fig8", "settings": tiny.describe()}
    original = Checkpointer.after_training_step
    saved = []

    def interrupt_after_first_save(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)  # (the checkpoint of step 2 is written once step 3 found it good)
        if (self.folder / FILE).exists() and self.folder.name.startswith("train-"):
            saved.append(step)
            raise KeyboardInterrupt

    (tmp_path / "a").mkdir()
    with mock.patch.object(Checkpointer, "after_training_step", interrupt_after_first_save):
        with pytest.raises(KeyboardInterrupt):
            fig_flows("fig8", tmp_path / "a", quick=True, seed=0, quiet=True, settings=tiny,
                      checkpoint=StageCheckpoints(folder, config={}, identity=ident, every=2, resume=False))
    assert saved == [3] and (folder / "uv.h5").is_file() and read_checkpoint(folder / "train-rg")[0]["step"] == 2
    (tmp_path / "b").mkdir()
    with mock.patch("rgdiff.cli.reproduce_flows.sample", side_effect=AssertionError("the UV stage ran again")):
        got = fig_flows("fig8", tmp_path / "b", quick=True, seed=0, quiet=True, settings=tiny,
                        checkpoint=StageCheckpoints(folder, config={}, identity=ident, every=None, resume=True))
    assert json.loads(json.dumps(got["methods"])) == json.loads(json.dumps(ref["methods"]))
    timings = got["meta"]["timings_s"]  # the resumed run's timings say what an earlier process did
    assert timings["earlier_process"] == ["uv_sampling", "train_rg (part)"] and timings["uv_sampling_s"] is None
    assert timings["train_rg_s"] is not None and "earlier_process" not in ref["meta"]["timings_s"]
    for name in ("rg", "reverse_kl"):
        assert (tmp_path / "b" / "models" / name / "params.eqx").read_bytes() == \
               (tmp_path / "ref" / "models" / name / "params.eqx").read_bytes()


def test_resumed_reproduce_timings_null_what_an_earlier_process_did():
    from rgdiff.cli.reproduce_flows import _timings

    stages = {"uv_sampling_s": 0.01, "train_rg_s": 1e-5, "evaluate_rg_s": 3.0, "train_reverse_kl_s": 50.0}
    out = _timings(stages, ["uv_sampling", "train_rg", "train_reverse_kl (part)"], 0.0, 0.0)
    assert out["uv_sampling_s"] is None and out["train_rg_s"] is None
    assert out["evaluate_rg_s"] == 3.0 and out["train_reverse_kl_s"] == 50.0  # (part): this process's share
    assert out["earlier_process"] == ["uv_sampling", "train_rg", "train_reverse_kl (part)"]
    assert "earlier_process" not in _timings(stages, [], 0.0, 0.0)
