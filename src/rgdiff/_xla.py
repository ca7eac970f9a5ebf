"""A workaround for a crash of XLA:CPU, applied when rgdiff is imported (before JAX starts).

jaxlib 0.10 compiles element-wise fusions on the CPU with YNNPACK ("YNN fusions", on by
default). For the NUTS trajectories of rgdiff's samplers on lattices of about 25 000 sites and
more (2D N >= 160, 3D N >= 32; `rgdiff sample --algorithm nuts` or `fa-nuts`, and the
`rgdiff run` jobs built on them) the generated code dereferences an invalid address inside
`ynn::fuse_and_slice_leading_dims` on an XLA worker thread: the process dies with SIGSEGV, no
message, its output lock left behind. (It is not the stack: `ulimit -s unlimited` does not help,
and the faulting thread's stack pointer is in range.) With the flag
`--xla_cpu_experimental_ynn_fusion_type=` (an empty list of YNN fusion types) the same
computations run through XLA's own emitters and succeed at every size.

`apply()` appends that flag to `XLA_FLAGS`, unless the user's `XLA_FLAGS` already sets it (their
choice wins) or the installed jaxlib does not know it (XLA aborts on an unknown flag). It has no
effect once a JAX backend has started, so it runs in `rgdiff/__init__.py`.
"""

from __future__ import annotations

import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_KNOWN_FROM = (0, 10)  # jaxlib versions from which the flag is known to exist (checked on 0.10.2)


def _version(text: str) -> tuple[int, ...]:
    import re

    parts = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def _jaxlib_knows_flag() -> bool:
    """Whether the installed jaxlib accepts FLAG: by version from 0.10, else by looking for the
    flag's name in jaxlib's XLA library (older releases; a one-time scan of that file)."""
    from importlib import metadata

    try:
        version = _version(metadata.version("jaxlib"))
    except metadata.PackageNotFoundError:
        return False
    if version >= _KNOWN_FROM:
        return True
    if version < (0, 7):  # long before YNNPACK came to XLA:CPU
        return False
    try:
        import importlib.util

        spec = importlib.util.find_spec("jaxlib")
        folder = os.path.dirname(spec.origin) if spec and spec.origin else None
        if folder is None:
            return False
        needle = FLAG[2:].encode()
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if ".so" in name and os.path.getsize(path) > 2**24:
                with open(path, "rb") as f:
                    import mmap

                    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                        if m.find(needle) >= 0:
                            return True
    except (OSError, ValueError, ImportError):
        return False
    return False


def apply(environ=os.environ) -> bool:
    """Add FLAG (empty: no YNN fusions) to XLA_FLAGS; returns whether it was added."""
    current = environ.get("XLA_FLAGS", "")
    if FLAG in current or not _jaxlib_knows_flag():
        return False
    environ["XLA_FLAGS"] = f"{current} {FLAG}=".strip()
    return True
