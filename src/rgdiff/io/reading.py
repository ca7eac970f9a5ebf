"""Reading untrusted files: one clear error instead of a hang, an unbounded read or a traceback.

Every reader of rgdiff (`rgdiff info`, `measure`, a model directory, a run configuration) goes
through these: only regular files are opened (a FIFO would block forever, a link to /dev/zero
would be read without end, a device is never data); text is read up to `MAX_TEXT_BYTES`; JSON
and TOML nested too deeply for Python's parsers (RecursionError) are refused like any other
malformed file.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

from rgdiff.errors import RgdiffError

MAX_TEXT_BYTES = 64 * 2**20  # JSON results, TOML configurations: far larger than any rgdiff writes


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_file(path: str | os.PathLike, error: type[RgdiffError] = RgdiffError, what: str = "file") -> Path:
    """`path`, if it is (or links to) a regular file; else `error` in one line."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path} ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{path} is {_kind(mode)}, not a regular file; rgdiff reads only regular files")
    return path


def read_text(path: str | os.PathLike, error: type[RgdiffError] = RgdiffError, what: str = "file") -> str:
    """The UTF-8 text of a regular file of at most `MAX_TEXT_BYTES`."""
    path = require_regular_file(path, error, what)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path} ({exc.strerror})") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise error(f"{path} is larger than {MAX_TEXT_BYTES // 2**20} MB; it is not an rgdiff {what}")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise error(f"{path} is not text (UTF-8)") from None


def loads_json(text: str, source, error: type[RgdiffError] = RgdiffError):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise error(f"{source} is not valid rgdiff JSON (nested too deeply)") from None


def loads_toml(text: str, source, error: type[RgdiffError] = RgdiffError) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source} is not valid TOML ({exc})") from None
    except RecursionError:
        raise error(f"{source} is not valid rgdiff TOML (nested too deeply)") from None
