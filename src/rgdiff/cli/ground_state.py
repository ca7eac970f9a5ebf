"""One variational ground-state run (`rgdiff ground-state`): train, measure, compare, draw.

Outputs (written into a fresh folder, atomically): `result.json` (what `--json` prints),
`energy.png` (training curve against the Gaussian baseline and the exact answer),
`two_point.png` (equal-time <phi(0) phi(r)>), `flowed_states.png` (sample fields of the model at
RG times t = 1 (the IR prior) ... 0 (the UV ground state): the "RG-flowed ground states").

The reported `energy` is the local-energy form where Lap log p is affordable (<= 16 sites; it
has zero variance at an eigenstate) and the score form otherwise; both are in `rgdiff.quantum.energy`.
It is measured with the RK4 error under control (step doubling; `energy_error` combines the
statistical error with the estimated remaining RK4 error, `estimators.integration` has both, and
`difference_in_sigma` compares the forms through their paired per-sample difference) and checked
(`rgdiff.quantum.verify`): an impossible result (forms that disagree, an energy below the exact
E0 or the rigorous lower bound, a flow that does not integrate back to its noise) is written with
`"valid": false` and its `failures`, claims no improvement over the Gaussian, and the command
exits with code 1.

Before any work: the memory a run needs (`check_run_size`) and whether `--out` can be written
(`check_writable`) are checked. With checkpoints (`ground_state_checkpoint`) the training resumes
bitwise (CPU) after a kill.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from rgdiff.cli.memory import human_bytes, machine_memory
from rgdiff.cli import quantum_plots
from rgdiff.cli.progress import progress_bar
from rgdiff.errors import RgdiffError, WriteOutputError
from rgdiff.io.atomic import atomic_folder, package_versions, write_json
from rgdiff.quantum.ansatz import FEATURES
from rgdiff.quantum.energy import LAPLACIAN_MAX_SITES, coarse_steps, mean_estimate, measure_energy, noise
from rgdiff.quantum.exact import ED_MAX_SITES, ED_TOLERANCE, best_gaussian, converged_ground_energy, free_ground_energy, harmonic_lower_bound
from rgdiff.quantum.hamiltonian import Hamiltonian
from rgdiff.quantum.train import GroundStateSettings, train
from rgdiff.quantum.verify import forms_difference, total_error, verify

PICTURE_TIMES = (1.0, 0.75, 0.5, 0.25, 0.0)  # RG times t of the flowed-state pictures


def exact_reference(h: Hamiltonian) -> tuple[float | None, str | None, float]:
    """The exact ground energy where one exists: free-field closed form, or ED for <= 4 sites;
    with its method and relative uncertainty."""
    if h.lam == 0:
        return free_ground_energy(h), "free field, E0 = 1/2 sum_p omega_p", 0.0
    if h.sites <= ED_MAX_SITES:
        try:
            ed = converged_ground_energy(h)
        except RgdiffError as exc:  # a strongly coupled point the oscillator basis cannot reach
            return None, f"no exact value: {exc}", 0.0
        tol = ED_TOLERANCE.get(h.sites, 1e-9)
        return ed.energy, f"exact diagonalization, {ed.basis} oscillator levels per site (converged to {tol:g})", tol
    return None, None, 0.0


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



# before any work ---------------------------------------------------------------------------
INDEX_LIMIT = 2**31 - 1  # elements of one array XLA indexes safely on the CPU (int32 offsets)


def memory_needed(h: Hamiltonian, settings: GroundStateSettings) -> tuple[int, int, int]:
    """(training bytes, evaluation bytes, elements of the largest array), exact integer estimates.

    Training: reverse mode keeps, for each of the 4 (n + n/2) RK4 stages, about 50 V floats per
    sample (measured: peak RSS grows by 300 KB per sample at V = 8, n = 16) and the FEATURES + 1
    dense (V, V) circulant matrices. Evaluation: the fields and per-sample energies it keeps, and
    one 512-sample chunk with its (V, V) Hessians where the local form is computed.
    """
    v, n, batch = h.sites, settings.ode_steps, settings.batch
    stages = 4 * (n + coarse_steps(n))
    train_bytes = 8 * stages * (50 * v * batch + (FEATURES + 1) * v * v)
    hess = v * v if v <= LAPLACIAN_MAX_SITES else 0
    eval_bytes = 8 * (2 * settings.eval_samples * (v + 2) + 512 * (4 * hess + 30 * v) + (FEATURES + 1) * v * v)
    largest = max(stages * batch * FEATURES * v, settings.eval_samples * v)
    return train_bytes, eval_bytes, largest


def check_run_size(h: Hamiltonian, settings: GroundStateSettings) -> None:
    """Refuse, before allocating anything, a run that cannot fit this machine's memory (or XLA's indexing)."""
    train_bytes, eval_bytes, largest = memory_needed(h, settings)
    have = machine_memory()
    need = max(train_bytes, eval_bytes)
    what = (f"--batch {settings.batch}, --ode-steps {settings.ode_steps}, --eval-samples {settings.eval_samples} "
            f"on {h.sites} sites")
    if need > have // 2:
        raise RgdiffError(
            f"a ground-state run with {what} needs about {human_bytes(need)} of memory (training {human_bytes(train_bytes)}, "
            f"evaluation {human_bytes(eval_bytes)}), more than half of this machine's {human_bytes(have)}; "
            "lower --batch, --eval-samples or --ode-steps")
    if largest > INDEX_LIMIT:
        raise RgdiffError(
            f"a ground-state run with {what} needs arrays of {largest:.3g} elements, beyond the 2^31 that XLA "
            "indexes; lower --batch, --eval-samples or --ode-steps")


def check_writable(*paths: Path | None) -> None:
    """Refuse an output path whose folder cannot be written (read-only file system, no permission)
    before the work rather than after it. Missing folders are created later, so the nearest
    existing one (the path itself if it is a folder, e.g. a checkpoint folder) must be writable."""
    for path in paths:
        if path is None:
            continue
        folder = Path(os.path.abspath(path))
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise WriteOutputError(f"cannot write {path}: {folder} is not a folder")
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:
            raise WriteOutputError(f"cannot write {path}: {folder} is on a read-only file system")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise WriteOutputError(f"cannot write {path}: no permission to write in {folder}")
        try:  # what the flags do not tell (e.g. a pseudo file system): try, leaving nothing behind
            fd, probe = tempfile.mkstemp(prefix=".rgdiff-probe.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise WriteOutputError(f"cannot write {path}: {exc.strerror or exc} in {folder}") from None


def ground_state_checkpoint(out: Path, *, resume: Path | None, every: int | None, folder: Path | None, config: dict):
    """The checkpoint of a `ground-state` run (None: no checkpoints), as `train` keeps it
    (`rgdiff.io.checkpoint.Checkpointer`, default folder OUT.ckpt, every 100 steps); a resumed
    run keeps the interrupted run's period unless `every` is given."""
    if resume is None and every is None and folder is None:
        return None
    from rgdiff.io.checkpoint import Checkpointer

    ckpt = Checkpointer.for_command("ground-state", out=out, resume=resume, every=every or 100, folder=folder,
                                    config=config)
    if resume is not None and every is None:
        ckpt.every = int(ckpt.resumed[0]["host"].get("every", 100))
    return ckpt


# the run -----------------------------------------------------------------------------------
@eqx.filter_jit
def _flowed_path(model, xi, keep):
    return jax.vmap(lambda z: model.flow(z, keep=keep)[-1])(xi)


def _summary(values: np.ndarray) -> dict:
    if not len(values):
        return {"first": None, "last_10pct": None, "max": None}
    return {"first": float(values[0]), "last_10pct": float(np.mean(values[-max(1, len(values) // 10):])),
            "max": float(np.max(values))}


def run_ground_state(h: Hamiltonian, settings: GroundStateSettings, out: Path | None, *, units: str = "lattice",
                     quiet: bool = False, checkpoint=None) -> dict:
    """Train the flow ansatz on `h`, measure its energy with the integration error under control,
    check the result (`rgdiff.quantum.verify`) and compare it with the Gaussian and exact references;
    with `out`, write result.json and the pictures (also for an invalid result, which says so).
    Returns the result; `result["valid"]` is False when a check failed (`result["failures"]`)."""
    start = time.time()
    key = jax.random.key(settings.seed)
    baseline = best_gaussian(h)
    exact, exact_method, exact_tol = exact_reference(h)
    bound = harmonic_lower_bound(h)
    init = baseline.mass_sq if settings.init_mass_sq is None else settings.init_mass_sq
    record: dict = {}
    with progress_bar(not quiet) as progress:
        model, history = train(h, settings, init, jax.random.fold_in(key, 1), progress, checkpoint=checkpoint,
                               record=record)
        est = measure_energy(model, jax.random.fold_in(key, 2), settings.eval_samples, reverse_key=jax.random.fold_in(key, 4),
                             callback=lambda done, total: progress("measure", done, total))
    eval_steps, reverse = est["integration"]["steps"][-1], est["reverse"]
    verdict = verify(est, exact=exact, exact_method=exact_method, exact_tolerance=exact_tol, lower_bound=bound)
    form = "local_form" if "local_form" in est else "score_form"
    energy, energy_error = est[form].value, total_error(est, form)
    score, local = est["score_form"], est.get("local_form")
    diff = forms_difference(est)
    integ = est["integration"]
    if verdict["valid"]:
        improvement = {"value": baseline.energy - energy, "error": energy_error,
                       "sigma": (baseline.energy - energy) / energy_error if energy_error else None}
    else:
        improvement = {"value": None, "error": None, "sigma": None,
                       "reason": "no improvement is claimed from an invalid result: " + verdict["failures"][0]}
    result = {
        "valid": verdict["valid"],
        "failures": verdict["failures"],
        "energy": energy,
        "energy_error": energy_error,
        "energy_per_site": energy / h.sites,
        "energy_per_site_error": energy_error / h.sites,
        "baseline_gaussian": baseline.energy,
        "exact": exact,
        "lower_bound": {"value": bound, "method": "harmonic lower bound: phi^4 >= 2 a phi^2 - a^2, H >= H_free(M) - const"},
        "meta": {
            "hamiltonian": h.describe(),
            "units": units,
            "sites": h.sites,
            "settings": settings.as_dict(),
            "energy_estimator": "local" if local is not None else "score",
            "exact_method": exact_method,
            "ansatz": {"kind": "flow", "prior": "free-field ground state of mass M", "mass_sq_init": init,
                       "mass_sq_final": float(model.mass_sq),
                       "ode": f"RK4, t from 1 (IR) to 0 (UV); training at {settings.ode_steps} steps with the gap to "
                              f"{coarse_steps(settings.ode_steps)} steps weighted {settings.error_weight:g}; "
                              f"evaluation by step doubling, reported at {eval_steps} steps"},
            "wall_seconds": None,
            "versions": package_versions(),
        },
        "estimators": {
            "score_form": {**score.as_dict(), "error_total": total_error(est, "score_form")},
            "local_form": None if local is None else {**local.as_dict(), "error_total": total_error(est, "local_form")},
            "difference_in_sigma": None if diff is None else diff[1],
            "difference": None if diff is None else diff[0].as_dict(),
            "ode_steps": eval_steps,
            "integration": {"steps": integ["steps"], "converged": integ["converged"],
                            **{f: {"error": integ[f]["error"].as_dict(), "tolerance": integ[f]["tolerance"]}
                               for f in ("score_form", "local_form") if f in integ}},
            "reverse_check": reverse,
        },
        "checks": verdict["checks"],
        "gaussian": {**baseline.as_dict(), "energy_per_site": baseline.energy / h.sites,
                     "note": "best Gaussian (Hartree) state, closed form, optimal over all translation-invariant covariances"},
        "improvement_over_gaussian": improvement,
        "relative_error_vs_exact": None if exact is None else (energy - exact) / abs(exact),
        **correlations(h, est["fields"]),
        "training": {"batch_energy_first": _summary(history)["first"],
                     "batch_energy_last_10pct": _summary(history)["last_10pct"],
                     "integration_gap": {**_summary(record["integration_gap"]), "weight": settings.error_weight,
                                         "note": "mean |e_n - e_n/2| per step; the RK4 error of e_n is about 1/15 of it"}},
    }
    result["gaussian"]["two_point"] = gaussian_two_point(h, baseline.mass_sq).tolist()
    result["meta"]["wall_seconds"] = round(time.time() - start, 2)
    if out is not None:
        keep = tuple(round((1.0 - t) * settings.ode_steps) for t in PICTURE_TIMES)
        xi = noise(jax.random.fold_in(key, 3), h, 4)
        path = np.asarray(_flowed_path(model, xi, keep))  # (4, times, *lattice)
        with atomic_folder(Path(out)) as tmp:
            write_json(tmp / "result.json", result)
            quantum_plots.energy_curve(history, result, h, tmp / "energy.png", record["integration_gap"])
            quantum_plots.two_point(result, h, tmp / "two_point.png")
            quantum_plots.flowed_states(path, PICTURE_TIMES, h, tmp / "flowed_states.png")
    return result
