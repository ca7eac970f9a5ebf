"""Two commands writing the same output: the second refuses with one clear line, the output is
never corrupted, and a lock left by a killed command does not block the next one."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rgdiff.io.atomic import write_json
from rgdiff.cli.app import main
from rgdiff.errors import WriteOutputError
from rgdiff.io.locking import lock_path, output_lock

HOLD = textwrap.dedent(
    """
    import sys, time
    from rgdiff.io.locking import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)
SAMPLE = ["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--samples", "10", "--chains", "1",
          "--warmup", "0", "--quiet"]


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on tmp_path/out.h5 (killed with SIGKILL at the end)."""
    target = tmp_path / "out.h5"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield target, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_second_writer_refuses_while_the_first_runs(holder, capsys):
    target, proc = holder
    target.write_bytes(b"the first command's output")
    assert main(SAMPLE + ["--out", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is being written by another rgdiff command" in err[0] and str(proc.pid) in err[0]
    assert target.read_bytes() == b"the first command's output"  # untouched
    with pytest.raises(WriteOutputError, match="another rgdiff command"):
        write_json(target, {"x": 1})
    assert main(["train", "--data", str(target), "--out", str(target), "--quiet"]) == 2  # model folders too
    assert "is being written by another rgdiff command" in capsys.readouterr().err


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(holder, capsys):
    target, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(target).exists()  # SIGKILL: no cleanup ran
    assert main(SAMPLE + ["--out", str(target)]) == 0, capsys.readouterr().err
    assert not lock_path(target).exists()
    from rgdiff.io.ensemble import load_ensemble

    assert load_ensemble(target).fields.shape == (1, 10, 4)


def test_locks_are_reentrant_within_a_command_and_released(tmp_path):
    target = tmp_path / "a.json"
    with output_lock(target):
        write_json(target, {"inner": True})  # the command writes its own locked output
        assert lock_path(target).exists()
    assert not lock_path(target).exists()
    assert json.loads(target.read_text()) == {"inner": True}


def test_concurrent_writers_never_corrupt(tmp_path):
    """Two processes race to write the same file many times: every read sees one whole version."""
    target = tmp_path / "race.json"
    script = textwrap.dedent(
        """
        import sys
        from rgdiff.io.atomic import write_json
        from rgdiff.errors import WriteOutputError
        refused = written = 0
        for i in range(200):
            try:
                write_json(sys.argv[1], {"writer": sys.argv[2], "i": i, "pad": "x" * 20000})
                written += 1
            except WriteOutputError:
                refused += 1
        print(written, refused)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(target), w], stdout=subprocess.PIPE, text=True)
             for w in "ab"]
    seen = 0
    while any(p.poll() is None for p in procs):
        if target.exists():
            data = json.loads(target.read_text())  # never a torn file
            assert data["writer"] in "ab" and len(data["pad"]) == 20000
            seen += 1
    counts = [tuple(map(int, p.communicate()[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(w + r for w, r in counts) == 400 and sum(w for w, _ in counts) > 0 and seen > 0
    assert sorted(os.listdir(tmp_path)) == ["race.json"]


def test_lock_of_another_host_is_respected(tmp_path):
    target = tmp_path / "x.json"
    lock_path(target).write_text(json.dumps({"pid": 1, "host": socket.gethostname() + "-elsewhere"}))
    with pytest.raises(WriteOutputError, match="elsewhere"):
        write_json(target, np.arange(3))
    assert not target.exists()
