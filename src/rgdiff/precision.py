"""Double precision: rgdiff samples, flows and measures in float64.

JAX computes in float32 unless `jax_enable_x64` is on. The command line turns it on; a Python
session must do so itself, before any JAX array is made::

    import jax
    jax.config.update("jax_enable_x64", True)

In float32 an action of a 20^2 lattice carries ~7 digits, so Metropolis decisions, cumulants such
as lambda_R and small differences along a flow lose precision. `warn_unless_float64` says so once
per call of `rgdiff.samplers.uv.sample` and `rgdiff.observables.measure`.
"""

from __future__ import annotations

import warnings


class Float32Warning(UserWarning):
    """JAX's float64 is off: rgdiff would sample (or has sampled) in float32."""


def float64_enabled() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


def warn_unless_float64(what: str, stacklevel: int = 3) -> None:
    """One `Float32Warning` (a `UserWarning`) naming `what` when JAX's float64 is off."""
    if float64_enabled():
        return
    warnings.warn(
        f"{what}: JAX's float64 is off, so rgdiff samples and flows in float32 (about 7 significant digits; "
        "actions, cumulants such as lambda_R and Metropolis decisions lose precision). Call "
        "jax.config.update('jax_enable_x64', True) before using rgdiff (the command line does).",
        Float32Warning,
        stacklevel=stacklevel,
    )
