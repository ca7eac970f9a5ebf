"""The machine's memory, and byte counts as people read them: for the checks that refuse, before
any work, a run that cannot fit (`sample`, `generate`, `ground-state`)."""

from __future__ import annotations

import os


def machine_memory() -> int:
    """Physical memory in bytes (1 TiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40


def human_bytes(n: float) -> str:
    """1234567 -> '1.23 MB' (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"
