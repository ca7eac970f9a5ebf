"""Atomic output: write to a temporary name beside the target, then rename.

A reader never sees a half-written file, and an interrupted write leaves the old file (or
nothing) in place. The output gets the permissions of a file created by `open` (0666 or, for a
folder, 0777, less the umask), not those of the private temporary file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from rgdiff.errors import WriteOutputError
from rgdiff.io.locking import output_lock


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path in the target's folder; rename it onto `target` on success."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise WriteOutputError(f"cannot write {target}: folder {parent} does not exist")
    if target.is_dir():
        raise WriteOutputError(f"cannot write {target}: it is a folder")
    with output_lock(target):  # a second writer of the same path refuses instead of racing
        _remove_leftovers(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=parent)
        os.close(fd)
        try:
            yield Path(tmp)
            _default_mode(tmp, 0o666)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def atomic_folder(target: Path):
    """Build a folder under a temporary name beside `target`; rename it into place on success."""
    if target.exists():
        raise WriteOutputError(f"output folder {target} already exists; choose another --out")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with output_lock(target):  # a second command building the same folder refuses
        if target.exists():
            raise WriteOutputError(f"output folder {target} already exists; choose another --out")
        _remove_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=parent))
        try:
            yield tmp
            _default_mode(tmp, 0o777)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def current_umask() -> int:
    """The process's umask (read without changing it where Linux reports it, else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(path, base: int) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the output what `open`/`mkdir` would have given it."""
    if os.path.exists(path) and not os.path.islink(path):
        os.chmod(path, base & ~current_umask())


def _remove_leftovers(target: Path) -> None:
    """Delete temporary `.NAME.*.part` siblings left by a killed writer of `target`.

    Called with the output lock held, so no live command is writing them."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def write_json(target: str | os.PathLike, data) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def file_checksum(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), the checksum every provenance record uses."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def package_versions() -> dict:
    from importlib import metadata
    import platform

    out = {"python": platform.python_version()}
    for name in ("rgdiff", "jax", "jaxlib", "blackjax", "equinox", "optax", "diffrax", "pyerrors", "h5py", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out
