"""One variational ground-state run (`rgdiff ground-state`): train, measure, compare, draw.

Outputs (written into a fresh folder, atomically): `result.json` (what `--json` prints),
`energy.png` (training curve against the Gaussian baseline and the exact answer),
`two_point.png` (equal-time <phi(0) phi(r)>), `flowed_states.png` (sample fields of the model at
RG times t = 1 (the IR prior) ... 0 (the UV ground state): the "RG-flowed ground states").

The reported `energy` is the local-energy form where Lap log p is affordable (<= 16 sites; it
has zero variance at an eigenstate) and the score form otherwise; both are in `rgdiff.quantum.energy`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from rgdiff.cli import quantum_plots
from rgdiff.cli.progress import progress_bar
from rgdiff.errors import RgdiffError
from rgdiff.io.atomic import atomic_folder, package_versions, write_json
from rgdiff.quantum.energy import estimate_energy, mean_estimate, noise
from rgdiff.quantum.exact import ED_MAX_SITES, best_gaussian, converged_ground_energy, free_ground_energy
from rgdiff.quantum.hamiltonian import Hamiltonian
from rgdiff.quantum.train import GroundStateSettings, train

PICTURE_TIMES = (1.0, 0.75, 0.5, 0.25, 0.0)  # RG times t of the flowed-state pictures


def exact_reference(h: Hamiltonian) -> tuple[float | None, str | None]:
    """The exact ground energy where one exists: free-field closed form, or ED for <= 3 sites."""
    if h.lam == 0:
        return free_ground_energy(h), "free field, E0 = 1/2 sum_p omega_p"
    if h.sites <= ED_MAX_SITES:
        try:
            ed = converged_ground_energy(h)
        except RgdiffError as exc:  # a strongly coupled point the oscillator basis cannot reach
            return None, f"no exact value: {exc}"
        return ed.energy, f"exact diagonalization, {ed.basis} oscillator levels per site (converged to 1e-9)"
    return None, None


def correlations(h: Hamiltonian, fields: np.ndarray) -> dict:
    """<phi^2>, G(r) = <phi(0) phi(r e_1)> and G2(p) = L^d <|phi~(p e_1)|^2>, with standard errors."""
    axes = tuple(range(1, h.dim + 1))
    ft = np.fft.fftn(fields, axes=axes)
    corr = np.real(np.fft.ifftn(np.abs(ft) ** 2, axes=axes)) / h.sites  # site-averaged phi(n) phi(n+r)
    line = (slice(None), slice(None)) + (0,) * (h.dim - 1)
    half = h.size // 2 + 1
    g_r = [mean_estimate(corr[line][:, r]) for r in range(half)]
    g2 = [mean_estimate(h.length**h.dim * np.abs(ft[line][:, p] / h.sites) ** 2) for p in range(half)]
    phi_sq = mean_estimate(np.mean(fields**2, axis=axes))
    return {
        "phi_sq": phi_sq.as_dict(),
        "two_point": {"r": list(range(half)), "value": [e.value for e in g_r], "error": [e.error for e in g_r]},
        "G2_momentum": {"p": list(range(half)), "phat_sq": [float(h.phat_sq()[(p,) + (0,) * (h.dim - 1)]) for p in range(half)],
                        "value": [e.value for e in g2], "error": [e.error for e in g2]},
    }


def gaussian_two_point(h: Hamiltonian, mass_sq: float) -> np.ndarray:
    """G(r e_1) = L^-d sum_p cos(2 pi p_1 r / N) / (2 omega_p) of the Gaussian state of mass M."""
    w = h.omega(mass_sq)
    p1 = np.arange(h.size).reshape((h.size,) + (1,) * (h.dim - 1))
    return np.array([np.sum(np.cos(2 * np.pi * p1 * r / h.size) / (2 * w)) / h.length**h.dim for r in range(h.size // 2 + 1)])


@eqx.filter_jit
def _flowed_path(model, xi, keep):
    return jax.vmap(lambda z: model.flow(z, keep=keep)[-1])(xi)


def run_ground_state(h: Hamiltonian, settings: GroundStateSettings, out: Path | None, *, units: str = "lattice",
                     quiet: bool = False) -> dict:
    """Train the flow ansatz on `h`, estimate its energy and correlations against the Gaussian and
    exact references, and (with `out`) write result.json and the pictures; returns the result."""
    start = time.time()
    key = jax.random.key(settings.seed)
    baseline = best_gaussian(h)
    exact, exact_method = exact_reference(h)
    init = baseline.mass_sq if settings.init_mass_sq is None else settings.init_mass_sq
    with progress_bar(not quiet) as progress:
        model, history = train(h, settings, init, jax.random.fold_in(key, 1), progress)
        progress("measure", 0, 1)
        est = estimate_energy(model, jax.random.fold_in(key, 2), settings.eval_samples)
        progress("measure", 1, 1)
    energy = est.get("local_form", est["score_form"])
    score, local = est["score_form"], est.get("local_form")
    diff_sigma = None
    if local is not None:
        diff_sigma = abs(score.value - local.value) / math.hypot(score.error, local.error or 0.0) if score.error else None
    result = {
        "energy": energy.value,
        "energy_error": energy.error,
        "energy_per_site": energy.value / h.sites,
        "energy_per_site_error": energy.error / h.sites,
        "baseline_gaussian": baseline.energy,
        "exact": exact,
        "meta": {
            "hamiltonian": h.describe(),
            "units": units,
            "sites": h.sites,
            "settings": settings.as_dict(),
            "energy_estimator": "local" if local is not None else "score",
            "exact_method": exact_method,
            "ansatz": {"kind": "flow", "prior": "free-field ground state of mass M", "mass_sq_init": init,
                       "mass_sq_final": float(model.mass_sq), "ode": f"RK4, {settings.ode_steps} steps, t from 1 (IR) to 0 (UV)"},
            "wall_seconds": None,
            "versions": package_versions(),
        },
        "estimators": {
            "score_form": score.as_dict(),
            "local_form": None if local is None else local.as_dict(),
            "difference_in_sigma": diff_sigma,
        },
        "gaussian": {**baseline.as_dict(), "energy_per_site": baseline.energy / h.sites,
                     "note": "best Gaussian (Hartree) state, closed form, optimal over all translation-invariant covariances"},
        "improvement_over_gaussian": {"value": baseline.energy - energy.value, "error": energy.error,
                                      "sigma": (baseline.energy - energy.value) / energy.error if energy.error else None},
        "relative_error_vs_exact": None if exact is None else (energy.value - exact) / abs(exact),
        **correlations(h, est["fields"]),
        "training": {"batch_energy_first": float(history[0]) if len(history) else None,
                     "batch_energy_last_10pct": float(np.mean(history[-max(1, len(history) // 10):])) if len(history) else None},
    }
    result["gaussian"]["two_point"] = gaussian_two_point(h, baseline.mass_sq).tolist()
    result["meta"]["wall_seconds"] = round(time.time() - start, 2)
    if out is not None:
        keep = tuple(round((1.0 - t) * settings.ode_steps) for t in PICTURE_TIMES)
        xi = noise(jax.random.fold_in(key, 3), h, 4)
        path = np.asarray(_flowed_path(model, xi, keep))  # (4, times, *lattice)
        with atomic_folder(Path(out)) as tmp:
            write_json(tmp / "result.json", result)
            quantum_plots.energy_curve(history, result, h, tmp / "energy.png")
            quantum_plots.two_point(result, h, tmp / "two_point.png")
            quantum_plots.flowed_states(path, PICTURE_TIMES, h, tmp / "flowed_states.png")
    return result
