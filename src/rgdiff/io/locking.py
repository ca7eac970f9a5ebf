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


# bytes rgdiff adds to an output's name for the files it writes beside it: the lock
# ".NAME.lock", the temporary ".NAME.XXXXXXXX.part" and a default checkpoint folder "NAME.ckpt"
_NAME_OVERHEAD = 40  # with room for a temporary file written through a temporary name (a plot)


def check_output_path(target: str | os.PathLike, flag: str = "--out", *, make_parents: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder that does not
    exist (unless `make_parents`: then the nearest existing one must be writable), a name too
    long for the files written beside it, an existing file that is not a regular file or folder
    (a device, a FIFO, a socket: never replaced), or a folder on a read-only file system.
    Raises `WriteOutputError` naming `flag`."""
    target = Path(target)
    parent = Path(os.path.abspath(target)).parent
    if make_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        raise WriteOutputError(f"cannot write {flag} {target}: folder {parent} does not exist")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    length = len(os.fsencode(target.name))
    if length + _NAME_OVERHEAD > name_max:
        raise WriteOutputError(
            f"the file name of {flag} is {length} bytes long; at most {name_max - _NAME_OVERHEAD} are allowed here "
            f"(rgdiff writes .NAME.lock and temporary files beside it, and names are limited to {name_max} bytes)"
        )
    if os.path.lexists(target):
        import stat

        mode = os.lstat(target).st_mode
        if stat.S_ISLNK(mode):
            try:
                mode = os.stat(target).st_mode
            except OSError:
                mode = stat.S_IFREG  # a dangling link: replaced by the output, as a regular file would be
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise WriteOutputError(
                f"{flag} {target} exists and is not a regular file (a device, FIFO or socket); it is never replaced: "
                "choose another name"
            )
    if not os.access(parent, os.W_OK):
        reason = "the file system is read-only" if _read_only(parent) else "no permission to write there"
        raise WriteOutputError(f"cannot write {flag} {target}: {reason} ({parent})")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


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
    check_output_path(target, "output")
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
    except OSError as exc:  # e.g. a read-only file system, a name too long
        raise WriteOutputError(f"cannot write {target}: {exc.strerror or exc} ({lock.parent})") from None
    try:
        yield lock
    finally:
        if outermost:
            # unlinked while still locked: a command that opened this inode and locks it after us
            # sees it unlinked and refuses, and the next one creates a fresh lock file
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        held.release()
