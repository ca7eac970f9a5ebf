"""The true RG flow of observables: push a UV ensemble through an exact kernel and measure.

For each time t of a grid, every UV configuration phi_0 is replaced by one exact sample of
p_{t|0}(. | phi_0) (`AbstractLinearScheme.push_forward`), and the estimators of
`rgdiff.observables.estimators` are applied. Flowed configurations inherit the chains' autocorrelation
(the noise is independent), so the Gamma method still applies chain by chain.

Vacuum: if the UV ensemble does not tunnel, every flowed configuration is mapped with the sign
of its *UV* magnetization. phi -> -phi is an exact symmetry of the UV theory and of every linear
scheme, so this maps the joint (phi_0, phi_t) law to one vacuum; mapping by sign(M_t) instead
would bias M_t near t where the flow has washed the vacuum out.

Rescaled couplings [7.4]-[7.10]: m_R_hat = m_R / r_t, lambda_R_hat = lambda_R / r_t^(4-d);
null where r_t = 0.

Correlators along t: G(x), C(t) and m_eff of every flowed ensemble
(`rgdiff.observables.estimators.correlator_estimates`), in FLOW.json under "correlators" with one
list per RG time.

`flow_path` draws one sample path of the flow (independent increments from t_{k-1} to t_k with
the exact transition kernel), the configuration "along the flow" of the pictures.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSchemeError
from rgdiff.lattice.geometry import Lattice
from rgdiff.observables.estimators import OBSERVABLES, Measurement, magnetization, maps_vacuum, measure
from rgdiff.rg import AbstractLinearScheme, check_times
from rgdiff.observables.stats import UNDEFINED, Estimate

FLOW_OBSERVABLES = OBSERVABLES + ("m_R_hat", "lambda_R_hat")
PUSH_BATCH = 2048  # configurations per jitted push-forward call


@dataclasses.dataclass
class FlowResult:
    scheme: AbstractLinearScheme
    times: np.ndarray
    r_t: np.ndarray
    observables: dict[str, list[Estimate]]
    meta: dict
    correlators: list[dict] | None = None  # one `correlator_estimates` per time, where measured

    def as_json(self) -> dict:
        d = self.scheme.describe()
        out = {
            "scheme": d.get("name"),
            "M": d.get("M"),
            "t": [float(t) for t in self.times],
            "r_t": [float(r) for r in self.r_t],
            "observables": {
                name: {"value": [e.value for e in ests], "error": [e.error for e in ests]}
                for name, ests in self.observables.items()
            },
            "meta": {"scheme": d, **self.meta},
        }
        if self.correlators:
            out["correlators"] = stack_correlators(self.correlators)
        return out


def stack_correlators(per_time: list[dict]) -> dict:
    """The correlators of each RG time as one object: the separations once, and for G_x, C_t and
    m_eff a list of values (and of errors) per time."""
    first = per_time[0]
    out = {k: first[k] for k in ("separation", "separation_sites", "effective_mass_separation", "definition")}
    for name in ("G_x", "C_t", "m_eff"):
        out[name] = {"value": [c[name]["value"] for c in per_time], "error": [c[name]["error"] for c in per_time]}
    out["m_eff"]["separation"] = first["m_eff"]["separation"]
    return out


def parse_times(text: str) -> np.ndarray:
    """A comma-separated list of RG times from the command line, validated by `time_grid`."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidSchemeError(f"--times must be comma-separated numbers, got {text!r}") from None
    return time_grid(times=values)


def time_grid(times: list[float] | None = None, t_max: float | None = None, n_times: int | None = None) -> np.ndarray:
    """An explicit list of times, or `n_times` equally spaced points on [0, t_max]."""
    if (times is None) == (t_max is None):
        raise InvalidSchemeError("give either a list of times or t_max with n_times, not both")
    if times is not None:
        grid = np.asarray([float(t) for t in times], dtype=np.float64)
        if grid.size == 0:
            raise InvalidSchemeError("the list of times is empty")
        if grid.size > MAX_TIMES:
            raise InvalidSchemeError(f"--times lists {grid.size} times; at most {MAX_TIMES} are allowed")
    else:
        if isinstance(n_times, bool) or not isinstance(n_times, (int, np.integer)) or not 1 <= n_times <= MAX_TIMES:
            raise InvalidSchemeError(f"--n-times must be an integer in [1, {MAX_TIMES}], got {n_times}")
        if not np.isfinite(t_max) or t_max <= 0:
            raise InvalidSchemeError(f"t_max must be a finite time > 0, got {t_max}")
        grid = np.linspace(0.0, float(t_max), int(n_times)) if n_times > 1 else np.array([float(t_max)])
    if not np.all(np.isfinite(grid)):
        raise InvalidSchemeError("times must be finite numbers")
    check_times(grid)
    return grid


MAX_TIMES = 10_000  # RG times of one flow: each pushes the whole ensemble through the kernel


def flow_grid(t_max: float, n: int, t_min: float = 1e-3) -> np.ndarray:
    """t = 0 and `n` - 1 geometrically spaced times from `t_min` to `t_max`: the couplings move fastest early."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= MAX_TIMES:
        raise InvalidSchemeError(f"--n-times must be an integer in [2, {MAX_TIMES}], got {n}")
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, n - 1)])


def push_ensemble(scheme: AbstractLinearScheme, key, fields: np.ndarray, t: float, lattice: Lattice) -> np.ndarray:
    """One exact sample of p_{t|0}(.|phi_0) per configuration; fields (chains, samples, *lattice)."""
    if t == 0:
        return np.asarray(fields)
    lead = fields.shape[: fields.ndim - lattice.dim]
    flat = np.asarray(fields).reshape(-1, *lattice.shape)
    out = np.empty_like(flat)
    push = _pusher(scheme, lattice)
    for start in range(0, flat.shape[0], PUSH_BATCH):
        block = flat[start : start + PUSH_BATCH]
        n = block.shape[0]
        if n < PUSH_BATCH:  # pad to one compiled shape
            block = np.concatenate([block, np.zeros((PUSH_BATCH - n, *lattice.shape), block.dtype)])
        pushed = push(jax.random.fold_in(key, start), jnp.asarray(block), jnp.asarray(t, block.dtype))
        out[start : start + n] = np.asarray(pushed)[:n]
    return out.reshape(*lead, *lattice.shape)


_PUSHERS: dict = {}


def _pusher(scheme, lattice):
    k = (scheme, lattice)
    if k not in _PUSHERS:
        _PUSHERS[k] = jax.jit(lambda key, phi, t: scheme.push_forward(key, phi, t, lattice))
    return _PUSHERS[k]


def true_flow(
    scheme: AbstractLinearScheme,
    fields: np.ndarray,
    lattice: Lattice,
    times: np.ndarray,
    *,
    key,
    markov: bool = True,
    callback: Callable[[str, int, int], None] | None = None,
    keep_configurations: int = 0,
) -> tuple[FlowResult, np.ndarray | None]:
    """Measure the observables of the flowed ensemble at each time in `times`.

    **Returns:** the `FlowResult` and, if `keep_configurations` > 0, that many flowed
    configurations per time (shape (times, keep, *lattice)) for pictures.
    """
    fields = np.asarray(fields, dtype=np.float64)
    lattice.check_field(fields, "ensemble")
    times = np.asarray(times, dtype=np.float64)
    check_times(times)
    m0 = magnetization(fields, lattice)
    mapped = maps_vacuum(m0, markov=markov)
    signs = np.where(m0 >= 0, 1.0, -1.0) if mapped else None
    r_t = rescaling(scheme, times, lattice)
    d = lattice.dim
    series = empty_series()
    correlators = []
    kept = [] if keep_configurations else None
    callback = callback or (lambda *a: None)
    callback("flow", 0, len(times))
    for i, t in enumerate(times):
        flowed = push_ensemble(scheme, jax.random.fold_in(key, i), fields, float(t), lattice)
        m = measure(flowed, lattice, markov=markov, vacuum="mapped" if mapped else "raw", signs=signs)
        record(series, m, r_t[i], d)
        correlators.append(m.correlators)
        if kept is not None:
            flat = flowed.reshape(-1, *lattice.shape)
            idx = np.linspace(0, len(flat) - 1, keep_configurations).astype(int)
            kept.append(flat[idx] * (signs.reshape(-1)[idx].reshape(-1, *([1] * d)) if mapped else 1.0))
        callback("flow", i + 1, len(times))
    meta = {
        "vacuum": "mapped" if mapped else "raw",
        "vacuum_rule": "flowed configurations mapped with the sign of their UV magnetization" if mapped else "no mapping",
        "error_method": "gamma (pyerrors, chains as replicas)" if markov else "standard error (independent samples)",
        "lattice": lattice.describe(),
        "chains": int(fields.shape[0]),
        "samples_per_chain": int(fields.shape[1]),
        "noise_draws_per_configuration": 1,
    }
    return FlowResult(scheme, times, r_t, series, meta, correlators), (np.stack(kept) if kept is not None else None)


def rescaling(scheme: AbstractLinearScheme, times: np.ndarray, lattice: Lattice) -> np.ndarray:
    """r_t at each time (the scheme's field rescaling [7.4]), float64, shape (len(times),)."""
    return np.atleast_1d(np.asarray(scheme.r(np.asarray(times), lattice), dtype=np.float64))


def empty_series() -> dict[str, list[Estimate]]:
    """{name: []} for every observable of a flow."""
    return {name: [] for name in FLOW_OBSERVABLES}


def record(series: dict[str, list[Estimate]], m: Measurement, r: float, dim: int) -> None:
    """Append one time's measurement to `series`, with the rescaled m_R_hat = m_R / r_t and
    lambda_R_hat = lambda_R / r_t^(4-d) [7.4]-[7.10]."""
    for name in OBSERVABLES:
        series[name].append(m.observables[name])
    series["m_R_hat"].append(rescale(m.observables["m_R"], r, 1))
    series["lambda_R_hat"].append(rescale(m.observables["lambda_R"], r, 4 - dim))


def rescale(est: Estimate, r: float, power: int) -> Estimate:
    """est / r^power (UNDEFINED where est is or r <= 0)."""
    if not est.defined or r <= 0:
        return UNDEFINED
    f = r**power
    return Estimate(est.value / f, est.error / f, est.tau_int)


def flow_path(scheme: AbstractLinearScheme, key, phi0, times, lattice: Lattice, start: float = 0.0) -> np.ndarray:
    """One sample path of the flow through `times` (non-decreasing, >= `start`), starting from
    `phi0` (shape (*batch, *lattice)) at time `start`.

    Each step pushes the previous configuration from t_{k-1} to t_k with the scheme's exact
    transition kernel p_{t_k | t_{k-1}} (`push_forward(..., start=t_{k-1})`) and fresh noise, so
    the increments are independent and the path is a path of the SDE (a linear scheme is Markov);
    the marginal at each t_k is p_{t_k | start}. (Pushing `phi0` to every t_k with one noise draw
    has the right marginals too, but its increments are not those of the SDE.)

    **Returns:** float64 array (len(times), *batch, *lattice); a time equal to the previous one
    repeats the configuration.
    """
    times = np.asarray(times, dtype=np.float64)
    check_times(times, start)
    if np.any(np.diff(times) < 0):
        raise InvalidSchemeError("the times of a flow path must be non-decreasing")
    phi = jnp.asarray(phi0, dtype=jnp.float64)
    lattice.check_field(phi, "phi0")
    out, previous = [], float(start)
    for k, t in enumerate(times):
        if t > previous:
            phi = scheme.push_forward(jax.random.fold_in(key, k), phi, float(t), lattice, start=previous)
        out.append(np.asarray(phi))
        previous = float(t)
    return np.stack(out)
