"""Output locks: two commands writing the same output path cannot both do it.

A lock is a file `.NAME.lock` beside the output `NAME`, created with O_CREAT | O_EXCL (atomic on
POSIX file systems) and holding the owner's process id. The second command that asks for the
same output sees the lock and refuses with one clear line instead of racing the first one.

A command killed with SIGKILL cannot remove its lock; a lock whose process no longer exists (on
this host) is stale and is taken over. Within one process locks are re-entrant, so a command
that holds the lock on its output may write it through `atomic_path`/`atomic_folder`, which
lock too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from rgdiff.errors import WriteOutputError

_HELD: dict[Path, int] = {}  # lock file -> nesting depth, for this process


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


def _owner(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def _alive(owner: dict | None) -> bool:
    """Whether the lock's owner still runs. An unreadable lock (being written) counts as alive."""
    if owner is None:
        return True
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell for another machine: be safe
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_create(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    return True


def acquire(target: str | os.PathLike) -> Path:
    """Take the lock on `target` or raise `WriteOutputError` naming the command holding it."""
    lock = lock_path(target)
    if lock in _HELD:
        _HELD[lock] += 1
        return lock
    if not lock.parent.is_dir():
        raise WriteOutputError(f"cannot write {target}: folder {lock.parent} does not exist")
    for _ in range(2):
        try:
            if _try_create(lock):
                _HELD[lock] = 1
                return lock
        except PermissionError:
            raise WriteOutputError(f"cannot write {target}: no permission to write in {lock.parent}") from None
        owner = _owner(lock)
        if _alive(owner):
            who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
            raise WriteOutputError(
                f"{target} is being written by another rgdiff command ({who}); wait for it to finish "
                f"or choose another output (if no such command runs, delete {lock})"
            )
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # stale: its owner was killed
    raise WriteOutputError(f"cannot lock {target}: another command keeps taking its lock {lock}")


def release(lock: Path) -> None:
    depth = _HELD.get(lock, 0)
    if depth > 1:
        _HELD[lock] = depth - 1
        return
    _HELD.pop(lock, None)
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()


@contextlib.contextmanager
def output_lock(target: str | os.PathLike):
    """Hold the lock on the output `target` for the duration of the block."""
    lock = acquire(target)
    try:
        yield lock
    finally:
        release(lock)
