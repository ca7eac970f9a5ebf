"""Argument checks shared by the score models."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.lattice.geometry import Lattice
from rgdiff.models._errors import InvalidModelError


def positive(name: str, value, *, allow_zero: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidModelError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidModelError(f"{name} must be a finite number {bound}, got {value!r}")
    return x


def count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidModelError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def triple(name: str, value) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidModelError(f"{name} must be three numbers (f_1, f_2, f_3), got {value!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise InvalidModelError(f"{name} must be three finite numbers (f_1, f_2, f_3), got {value!r}")
    return out  # type: ignore[return-value]


def resolve_dtype(dtype):
    if dtype is None:
        return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise InvalidModelError(f"dtype must be a floating dtype such as 'float32', got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise InvalidModelError(f"dtype must be a floating dtype such as 'float32', got {dtype!r}")
    return dt


def check_inputs(lattice: Lattice, phi, t, model: str):
    phi = jnp.asarray(phi)
    if phi.shape != lattice.shape:
        raise InvalidModelError(
            f"{model} takes one configuration of shape {lattice.shape}, got shape {phi.shape}; "
            "use jax.vmap for batches"
        )
    if jnp.shape(t) != ():
        raise InvalidModelError(f"{model} takes one scalar time t, got shape {jnp.shape(t)}; use jax.vmap")
    return phi
