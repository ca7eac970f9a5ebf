"""Checkpoint files: arrays round-trip bitwise (eqx leaf serialisation under a checksummed header),
and a checkpoint of an older format is refused with a clear line, untouched."""

import hashlib
import json

import numpy as np
import pytest

from rgdiff.io.checkpoint import FILE, FORMAT_VERSION, ReadCheckpointError, read_checkpoint, seal_header, write_checkpoint


def test_arrays_round_trip_bitwise(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(3, 4)), rng.normal(size=5).astype(np.float32), np.array(7, np.int32),
              np.array([True, False]), np.zeros((0, 2)), np.array([np.nan, -0.0])]
    write_checkpoint(tmp_path, command="train", step=9, arrays=arrays, config={"a": 1}, identity={"a": 1})
    header, back = read_checkpoint(tmp_path)
    assert header["step"] == 9 and header["command"] == "train"
    assert len(back) == len(arrays)
    for a, b in zip(arrays, back):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_an_old_format_is_refused_untouched(tmp_path):
    old = b"RGDIFF-CHECKPOINT 1\n{\"format\": \"rgdiff-checkpoint\"}\nPK..."
    (tmp_path / FILE).write_bytes(old)
    with pytest.raises(ReadCheckpointError, match=f"format 1, but this rgdiff reads format {FORMAT_VERSION}.*afresh"):
        read_checkpoint(tmp_path)
    assert (tmp_path / FILE).read_bytes() == old


def test_a_payload_that_does_not_match_its_header_is_refused(tmp_path):
    write_checkpoint(tmp_path, command="train", step=1, arrays=[np.ones(3)], config={}, identity={})
    raw = (tmp_path / FILE).read_bytes()
    magic, header_line, payload = raw.split(b"\n", 2)
    header = json.loads(header_line)
    header["arrays"] = [{"shape": [4], "dtype": "<f8"}]  # claims another shape, checksum still right
    (tmp_path / FILE).write_bytes(magic + b"\n" + json.dumps(header).encode() + b"\n" + payload)
    assert header["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    with pytest.raises(ReadCheckpointError, match="its header, with the step and the configuration, does not match"):
        read_checkpoint(tmp_path)  # the header checksum catches the edit
    seal_header(header)  # even resealed (a bug writing it, say), the payload does not fit the header
    (tmp_path / FILE).write_bytes(magic + b"\n" + json.dumps(header).encode() + b"\n" + payload)
    with pytest.raises(ReadCheckpointError, match="unreadable payload"):
        read_checkpoint(tmp_path)


# sampling checkpoints: an append-only samples log beside a small, atomically replaced header ----

from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

from rgdiff.io import checkpoint as ck  # noqa: E402
from rgdiff.io.checkpoint import SAMPLES_FILE, Checkpointer  # noqa: E402

C, N, TAKE = 3, 8, 20  # chains, lattice side (2-D), samples per chunk


def sampler_state(seed):
    rng = np.random.default_rng(seed)
    states = (rng.normal(size=(C, N, N)), rng.normal(size=C), rng.normal(size=(C, N, N)))
    params = {"step_size": rng.uniform(size=C), "inverse_mass_matrix": rng.uniform(size=(C, N * N))}
    return states, params


def run_chunks(folder, chunks, *, resume=False, start=0, fields=None, every=1):
    """Feed `chunks` chunks of TAKE samples through a Checkpointer, as the UV sampler does."""
    ckpt = Checkpointer(folder, command="sample", every=every, config={}, identity={"x": 1}, resume=resume)
    total = (start + chunks) * TAKE
    buf = np.empty((C, 100 * TAKE, N, N))
    if fields is not None:
        buf[:, :start * TAKE] = fields[:, :start * TAKE]
    sums = (np.zeros(C), np.zeros(C, np.int64), np.zeros(C))
    for k in range(start, start + chunks):
        done = (k + 1) * TAKE
        buf[:, done - TAKE:done] = np.random.default_rng(k).normal(size=(C, TAKE, N, N))
        states, params = sampler_state(k)
        ckpt.after_sampling_chunk(done, states, params, buf, *sums, final=False)
    return ckpt, buf[:, :total]


def wchar() -> int:
    """Bytes this process has written through write(2)-like calls (Linux /proc/self/io)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["wchar"])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_sampling_checkpoint_io_does_not_grow_with_the_run(tmp_path):
    """Bytes written per checkpoint = one record of new samples + the fixed-size state, whether it
    is the 2nd or the 60th checkpoint (before: every sample so far, so quadratic in the run)."""
    ckpt = Checkpointer(tmp_path / "c", command="sample", every=1, config={}, identity={}, resume=False)
    buf = np.random.default_rng(0).normal(size=(C, 60 * TAKE, N, N))
    states, params = sampler_state(0)
    state_bytes = sum(np.asarray(x).nbytes for x in jax_leaves((states, params))) + 3 * C * 8
    record = 16 + C * TAKE * N * N * 8
    written = []
    for k in range(60):
        before = wchar()
        ckpt.after_sampling_chunk((k + 1) * TAKE, states, params, buf, np.zeros(C), np.zeros(C, np.int64), np.zeros(C),
                                  final=False)
        written.append(wchar() - before)
    for w in written:
        assert record + state_bytes <= w <= record + state_bytes + 8192, (w, record, state_bytes)
    assert max(written[1:]) - min(written[1:]) <= 64  # the header's numbers grow by a few digits at most
    assert (tmp_path / "c" / SAMPLES_FILE).stat().st_size == 60 * record


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_resume_reads_the_log_bitwise(tmp_path):
    _, fields = run_chunks(tmp_path / "c", 5)
    ckpt = Checkpointer(tmp_path / "c", command="sample", every=1, config={}, identity={"x": 1}, resume=True)
    got = ckpt.resumed_sampling(*sampler_state(0))
    assert got["done"] == 5 * TAKE
    assert got["fields"].tobytes() == fields.tobytes()
    want_states, want_params = sampler_state(4)  # the state saved with the last checkpoint
    assert np.asarray(got["params"]["inverse_mass_matrix"]).tobytes() == want_params["inverse_mass_matrix"].tobytes()
    assert np.asarray(got["states"][0]).tobytes() == want_states[0].tobytes()
    # continue the run from there: the log then holds exactly the uninterrupted run's samples
    run_chunks(tmp_path / "c", 3, resume=True, start=5, fields=fields)
    full = ck.read_samples_log(tmp_path / "c", read_checkpoint(tmp_path / "c")[0]["host"]["samples"])
    _, reference = run_chunks(tmp_path / "ref", 8)
    assert full.tobytes() == reference.tobytes()


def test_a_kill_between_append_and_header_keeps_the_previous_checkpoint(tmp_path):
    """The new samples reach the log, the header replacement dies: the previous checkpoint resumes,
    the orphaned bytes are ignored and cut off by the next append."""
    _, fields = run_chunks(tmp_path / "c", 4)
    committed = (tmp_path / "c" / SAMPLES_FILE).stat().st_size
    with mock.patch.object(ck, "write_checkpoint", side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            run_chunks(tmp_path / "c", 1, resume=True, start=4, fields=fields)
    assert (tmp_path / "c" / SAMPLES_FILE).stat().st_size > committed  # appended, not committed
    ckpt = Checkpointer(tmp_path / "c", command="sample", every=1, config={}, identity={"x": 1}, resume=True)
    got = ckpt.resumed_sampling(*sampler_state(0))
    assert got["done"] == 4 * TAKE and got["fields"].tobytes() == fields.tobytes()
    run_chunks(tmp_path / "c", 2, resume=True, start=4, fields=fields)
    _, reference = run_chunks(tmp_path / "ref", 6)
    header = read_checkpoint(tmp_path / "c")[0]
    assert ck.read_samples_log(tmp_path / "c", header["host"]["samples"]).tobytes() == reference.tobytes()
    assert (tmp_path / "c" / SAMPLES_FILE).stat().st_size == (tmp_path / "ref" / SAMPLES_FILE).stat().st_size


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:100] + bytes([raw[100] ^ 1]) + raw[101:], "is corrupt"),
    (lambda raw: raw[: len(raw) // 2], "is truncated"),
    (lambda raw: None, "lost its samples log"),
])
def test_a_damaged_samples_log_is_refused_untouched(tmp_path, damage, message):
    run_chunks(tmp_path / "c", 3)
    log = tmp_path / "c" / SAMPLES_FILE
    raw = damage(log.read_bytes())
    if raw is None:
        log.unlink()
    else:
        log.write_bytes(raw)
    with pytest.raises(ReadCheckpointError, match=message):
        Checkpointer(tmp_path / "c", command="sample", every=1, config={}, identity={"x": 1}, resume=True)
    assert (log.read_bytes() == raw) if raw is not None else not log.exists()


def test_a_checkpoint_with_the_samples_in_its_payload_still_resumes(tmp_path):
    """The layout of earlier rgdiff versions: states, params, samples so far, sums in the payload."""
    states, params = sampler_state(7)
    fields = np.random.default_rng(1).normal(size=(C, 2 * TAKE, N, N))
    arrays = jax_leaves((states, params)) + [fields, np.ones(C), np.zeros(C, np.int64), np.ones(C)]
    (tmp_path / "c").mkdir()
    write_checkpoint(tmp_path / "c", command="sample", step=2 * TAKE, arrays=arrays, config={}, identity={"x": 1},
                     host={"chunks": 2, "every": 1})
    ckpt = Checkpointer(tmp_path / "c", command="sample", every=1, config={}, identity={"x": 1}, resume=True)
    got = ckpt.resumed_sampling(*sampler_state(0))
    assert got["done"] == 2 * TAKE and got["fields"].tobytes() == fields.tobytes()
    run_chunks(tmp_path / "c", 1, resume=True, start=2, fields=fields)  # the next checkpoint logs all samples
    header = read_checkpoint(tmp_path / "c")[0]
    assert ck.read_samples_log(tmp_path / "c", header["host"]["samples"])[:, :2 * TAKE].tobytes() == fields.tobytes()


def test_remove_deletes_the_log_too(tmp_path):
    ckpt, _ = run_chunks(tmp_path / "c", 2)
    ckpt.remove()
    assert not (tmp_path / "c").exists()
