"""The error score models raise for bad hyperparameters.

(Kept here because `rgdiff/errors.py` is owned elsewhere; it may move there unchanged.)
"""

from __future__ import annotations

from rgdiff.errors import RgdiffError


class InvalidModelError(RgdiffError):
    """A score model's hyperparameters or description are not allowed (non-positive scale,
    unknown model name, a description for another lattice, ...)."""
