"""Writing configuration files as TOML with `tomli_w` (reading uses the standard library's tomllib).

TOML has no null, so rgdiff decides what `None` means before the writer sees it: a key whose
value is `None` is an unset option and is omitted (reading the file back leaves it unset, which
is what the config schemas' defaults expect); a `None` inside a list has no such reading (dropping
it would shift every later element), so it is refused with an error naming the key.
"""

from __future__ import annotations

import tomli_w


def _without_none(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, dict):
            out[key] = _without_none(value, name)
        elif isinstance(value, (list, tuple)):
            out[key] = _list(value, name)
        else:
            out[key] = value
    return out


def _list(values, name: str) -> list:
    out = []
    for i, value in enumerate(values):
        if value is None:
            raise TypeError(f"cannot write {name}[{i}] = None to TOML: TOML has no null, and a list cannot skip an element")
        if isinstance(value, dict):
            out.append(_without_none(value, f"{name}[{i}]"))
        elif isinstance(value, (list, tuple)):
            out.append(_list(value, f"{name}[{i}]"))
        else:
            out.append(value)
    return out


def dumps(data: dict) -> str:
    """`data` as TOML text: None-valued keys omitted, a None in a list refused (`TypeError`)."""
    return tomli_w.dumps(_without_none(data))
