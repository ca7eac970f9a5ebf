"""Checkpoint files: arrays round-trip bitwise (eqx leaf serialisation under a checksummed header),
and a checkpoint of an older format is refused with a clear line, untouched."""

import hashlib
import json

import numpy as np
import pytest

from rgdiff.io.checkpoint import FILE, FORMAT_VERSION, ReadCheckpointError, read_checkpoint, write_checkpoint


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
    with pytest.raises(ReadCheckpointError, match="unreadable payload"):
        read_checkpoint(tmp_path)
