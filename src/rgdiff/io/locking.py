"""Output locks: two commands writing the same output path cannot both do it.

The lock on an output `NAME` is a `filelock.FileLock` on the file `.NAME.lock` beside it (an
`flock` held by the kernel), taken without waiting: the second command that asks for the same
output refuses with one clear line instead of racing the first one. The holder writes its
process id and host into the lock file so that line can say who holds it.

A command killed with SIGKILL cannot remove its lock file, but the kernel drops its `flock`, so
the next command takes the lock over. A lock file naming another host is respected all the same
(a lock on a network file system may not be visible across machines): the message says to delete
it if no such command runs. Within one process the lock is re-entrant (one `FileLock` per path),
so a command that holds the lock on its output may write it through `atomic_path` /
`atomic_folder`, which lock too. The lock file is removed when the last hold is released.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import filelock

from rgdiff.errors import WriteOutputError


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


class _HeldOnAnotherHost(Exception):
    def __init__(self, owner: dict):
        self.owner = owner


def _owner(raw: bytes) -> dict | None:
    try:
        owner = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def _claim(fd: int) -> None:
    """Called by filelock with the locked descriptor: refuse a record of another host, then
    write ours (a record of this host in a file we could lock is stale: its writer is gone)."""
    owner = _owner(os.pread(fd, 4096, 0))
    if owner is not None and owner.get("host") != socket.gethostname():
        raise _HeldOnAnotherHost(owner)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)


def _refusal(target, lock: Path, owner: dict | None) -> WriteOutputError:
    who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
    return WriteOutputError(
        f"{target} is being written by another rgdiff command ({who}); wait for it to finish "
        f"or choose another output (if no such command runs, delete {lock})"
    )


@contextlib.contextmanager
def output_lock(target: str | os.PathLike):
    """Hold the lock on the output `target` for the duration of the block.

    Raises `WriteOutputError` (naming the command holding it) if another command holds it."""
    lock = lock_path(target)
    if not lock.parent.is_dir():
        raise WriteOutputError(f"cannot write {target}: folder {lock.parent} does not exist")
    held = filelock.FileLock(lock, timeout=0, is_singleton=True, on_acquired=_claim)
    outermost = not held.is_locked
    try:
        held.acquire()
    except filelock.Timeout:
        with contextlib.suppress(OSError):
            raise _refusal(target, lock, _owner(lock.read_bytes())) from None
        raise _refusal(target, lock, None) from None
    except _HeldOnAnotherHost as held_elsewhere:
        raise _refusal(target, lock, held_elsewhere.owner) from None
    except PermissionError:
        raise WriteOutputError(f"cannot write {target}: no permission to write in {lock.parent}") from None
    try:
        yield lock
    finally:
        if outermost:
            # unlinked while still locked: a command that opened this inode and locks it after us
            # sees it unlinked and refuses, and the next one creates a fresh lock file
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        held.release()
