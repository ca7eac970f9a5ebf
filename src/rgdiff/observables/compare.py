"""Learned versus true RG flow: the model's p_t^theta against the exact push-forward of the data.

Learned samples at every t of a grid come from ONE generation per configuration: phi_T ~ p_T,
then the probability-flow ODE [6.14] (or the reverse SDE [5.25]) segment by segment down the grid
to t = 0. Each generated trajectory thus ends at a UV configuration phi_0, and, when the true
flow maps vacua (broken phase without tunnelling), the learned samples are mapped with the sign
of their own phi_0 — the same rule as `rgdiff.observables.true_flow`, so the two flows are measured alike.
"""

from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import RgdiffError
from rgdiff.generate.diffusion import decode, reverse_sde
from rgdiff.generate.transport import decode_to_times
from rgdiff.models.base import AbstractVelocityField
from rgdiff.observables.estimators import magnetization, measure
from rgdiff.observables.true_flow import FlowResult, empty_series, record, rescaling, true_flow

COMPARED = ("m_R", "Z", "lambda_R", "max_abs_phi")


class GenerationFailedError(RgdiffError):
    """The model's sampler did not converge (a stiff learned vector field, usually undertraining)."""


def solver_failure(exc: Exception, what: str) -> GenerationFailedError:
    return GenerationFailedError(
        f"{what} failed: the ODE solver hit its step limit (the learned vector field is stiff; the model "
        "is likely undertrained): train longer, or use --solver sde"
    )


ODE_RTOL = 1e-4  # adaptive steps: a PF-ODE on a fine lattice is stiff where the score is inexact


def learned_trajectories(model, scheme, times: np.ndarray, *, key, n: int, horizon: float, solver: str = "ode",
                         steps: int = 24, callback=None) -> np.ndarray:
    """Fields of shape (len(times), n, *lattice): model samples at each time (times increasing).

    The ODE uses an adaptive step-size controller (rtol `ODE_RTOL`, `steps` sets the first step):
    the UV modes of a fine lattice make the probability-flow ODE stiff wherever the learned score
    misses the exact cancellation of drift and score, and a fixed grid then blows up.
    """
    if isinstance(model, AbstractVelocityField):  # a CNF in RG time: its own ODE, RK4 in log-time
        if solver != "ode":
            raise RgdiffError(f"a normalizing flow samples with its ODE only; --solver {solver} does not apply")
        return decode_to_times(model, scheme, key, n, times, steps=steps)
    lattice = model.lattice
    times = np.asarray(times, dtype=np.float64)
    dtype = jnp.float64
    k_prior, k_sde = jax.random.split(key)
    phi = scheme.prior_sample(k_prior, lattice, (n,), dtype)
    grid = np.concatenate([times, [horizon]]) if horizon > times[-1] else times.copy()
    out = {}
    current_t = grid[-1]
    if current_t in times:
        out[len(times) - 1] = np.asarray(phi)
    callback = callback or (lambda *a: None)
    for j in range(len(grid) - 2, -1, -1):
        t_end = float(grid[j])
        if solver == "ode":
            try:
                phi, _ = decode(model, scheme, phi, T=float(current_t), t_end=t_end, steps=steps, rtol=ODE_RTOL,
                                max_steps=4096, log_prob=False)
            except eqx.EquinoxRuntimeError as exc:
                raise solver_failure(exc, f"generating from t = {current_t:.4g} to {t_end:.4g}") from None
        else:
            phi = reverse_sde(model, scheme, jax.random.fold_in(k_sde, j), phi, T=float(current_t), t_end=t_end, steps=steps * 4)
        current_t = t_end
        out[j] = np.asarray(phi)
        callback("generate", len(grid) - 1 - j, len(grid) - 1)
    return np.stack([out[i] for i in range(len(times))])


def learned_flow(model, scheme, times, *, key, n: int, horizon: float, uv_mapped: bool, solver: str = "ode",
                 steps: int = 24, callback=None) -> tuple[FlowResult, np.ndarray]:
    """Measure the model's samples along `times` (independent samples: plain errors)."""
    lattice = model.lattice
    traj = learned_trajectories(model, scheme, times, key=key, n=n, horizon=horizon, solver=solver, steps=steps, callback=callback)
    if not np.all(np.isfinite(traj)):
        from rgdiff.io.checkpoint import NumericalFaultError  # a fault at run time: CLI exit 1, one line

        raise NumericalFaultError("the model generated non-finite fields; it may be untrained or unstable")
    signs = None
    if uv_mapped:
        m0 = magnetization(traj[0], lattice)  # times[0] is 0: the trajectory's UV end
        signs = np.where(m0 >= 0, 1.0, -1.0)[None, :]
    r_t = rescaling(scheme, times, lattice)
    series = empty_series()
    for i in range(len(times)):
        m = measure(traj[i][None], lattice, markov=False, vacuum="mapped" if uv_mapped else "raw", signs=signs)
        record(series, m, r_t[i], lattice.dim)
    meta = {
        "vacuum": "mapped" if uv_mapped else "raw",
        "vacuum_rule": "each generated trajectory mapped with the sign of its own t = 0 end" if uv_mapped else "no mapping",
        "error_method": "standard error (independent samples)",
        "samples": int(n),
        "solver": solver,
        "steps_per_segment": steps,
        "ode_rtol": ODE_RTOL if solver == "ode" else None,
        "lattice": lattice.describe(),
    }
    return FlowResult(scheme, np.asarray(times), r_t, series, meta), traj


def discrepancy(learned: dict, true: dict, names=COMPARED, unresolved: dict | None = None) -> dict:
    """Per observable: the mean over t of |learned - true| / sqrt(err_l^2 + err_t^2), where both are
    defined and the learned estimate is resolved (error smaller than its magnitude: an unresolved
    one agrees with anything, so it is left out, never counted as agreement); `unresolved`, if
    given, receives how many times were left out per observable."""
    from rgdiff.observables.sanity import resolved

    out = {}
    for name in names:
        lv, le = learned["observables"][name]["value"], learned["observables"][name]["error"]
        tv, te = true["observables"][name]["value"], true["observables"][name]["error"]
        z = [
            abs(a - b) / math.hypot(ea, eb)
            for a, ea, b, eb in zip(lv, le, tv, te)
            if None not in (a, ea, b, eb) and math.hypot(ea, eb) > 0 and resolved(a, ea)
        ]
        if unresolved is not None:
            unresolved[name] = sum(1 for a, ea in zip(lv, le) if None not in (a, ea) and not resolved(a, ea))
        out[name] = float(np.mean(z)) if z else None
    return out


def compare_flow(loaded, fields: np.ndarray, times: np.ndarray, *, key, n: int, markov: bool = True,
                 solver: str = "ode", steps: int = 24, callback: Callable | None = None) -> dict:
    """CMP.json: {"learned": FLOW, "true": FLOW, "discrepancy": {NAME: x}, "meta": {...}}."""
    k_true, k_model = jax.random.split(key)
    true_res, _ = true_flow(loaded.scheme, fields, loaded.lattice, times, key=k_true, markov=markov, callback=callback)
    mapped = true_res.meta["vacuum"] == "mapped"
    learned_res, _ = learned_flow(
        loaded.model, loaded.scheme, times, key=k_model, n=n, horizon=loaded.horizon, uv_mapped=mapped,
        solver=solver, steps=steps, callback=callback,
    )
    learned, true = learned_res.as_json(), true_res.as_json()
    from rgdiff.observables.sanity import impossible_in_flow

    unresolved: dict = {}
    x = discrepancy(learned, true, unresolved=unresolved)
    return {
        "learned": learned,
        "true": true,
        "discrepancy": x,
        "meta": {
            "discrepancy_definition": "mean over t of |learned - true| / sqrt(error_learned^2 + error_true^2), "
                                      "over the times where the learned estimate is resolved (error < |value|)",
            "unresolved_times": unresolved,
            "impossible": {"learned": impossible_in_flow(learned_res), "true": impossible_in_flow(true_res)},
            "model": str(loaded.path),
            "times": [float(t) for t in times],
        },
    }
