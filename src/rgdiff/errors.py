"""Errors that rgdiff raises for bad input, and for failures at run time.

Every error a user can cause derives from `RgdiffError`. The command-line interface prints
its message as one line on stderr and exits with code 2, so each message says what was wrong
and how to fix it, in a single sentence. A failure at run time that the input did not cause (a
numerical fault, a full disk: `RunFaultError`, and `OSError`) is one line too, with exit code 1.
"""

from __future__ import annotations


class RgdiffError(ValueError):
    """Base class: bad input that the user can fix. The message is shown as-is."""


class RunFaultError(RgdiffError):
    """A failure at run time, not a bad input (a numerical fault, an impossible result, a full
    disk): the CLI prints one line and exits with code 1."""


class ImpossibleResultError(RunFaultError):
    """A computed number is impossible (an acceptance rate outside [0, 1], a negative variance, a
    non-finite estimate, more effective samples than samples where no estimator can give that)."""


class RgdiffWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints one line,
    "rgdiff: warning: ..."), e.g. a model directory written before model files were checksummed."""


class InvalidLatticeError(RgdiffError):
    """The lattice geometry is not allowed (dimension outside 1..3, N < 2, L <= 0, ...)."""


class InvalidTheoryError(RgdiffError):
    """The theory's parameters do not define a normalizable, finite distribution."""


class InvalidSamplerSettingsError(RgdiffError):
    """Sampler settings out of range (chains, samples, warm-up, ...)."""


class ReadEnsembleError(RgdiffError):
    """An ensemble file is missing, truncated, or not an rgdiff ensemble."""


class InvalidSchemeError(RgdiffError):
    """An RG scheme or its time grid is not allowed."""


class WriteOutputError(RgdiffError):
    """An output path cannot be written."""


def require_finite(name: str, value: float, error: type[RgdiffError] = RgdiffError) -> float:
    """Return `value` as a float, or raise `error` if it is not a finite number."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a number, got {value!r}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise error(f"{name} must be finite, got {value!r}")
    return x
