"""Pictures of a ground-state run: training curve, equal-time two-point function, flowed states."""

from __future__ import annotations

import numpy as np

from rgdiff.cli.plots import plt, save
from rgdiff.quantum.hamiltonian import Hamiltonian


def energy_curve(history: np.ndarray, result: dict, h: Hamiltonian, path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    steps = np.arange(1, len(history) + 1)
    ax.plot(steps, history, lw=0.6, alpha=0.5, label="batch score-form energy")
    if len(history) >= 20:
        w = max(len(history) // 20, 2)
        run = np.convolve(history, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], run, lw=1.5, label=f"running mean ({w} steps)")
    ax.axhline(result["baseline_gaussian"], color="k", ls="--", lw=1, label=f"best Gaussian {result['baseline_gaussian']:.6g}")
    if result["exact"] is not None:
        ax.axhline(result["exact"], color="C3", lw=1, label=f"exact {result['exact']:.6g}")
    e, de = result["energy"], result["energy_error"]
    ax.axhspan(e - de, e + de, color="C2", alpha=0.3, label=f"final ({result['meta']['energy_estimator']} form) {e:.6g} ± {de:.2g}")
    if len(history):
        lo, hi = np.percentile(history, [1, 99])
        lo, hi = min(lo, e - de), max(hi, result["baseline_gaussian"])
        pad = 0.05 * (hi - lo) + 1e-9
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("energy E")
    ax.set_title(f"variational ground state: {h.label()}", fontsize=9)
    ax.legend(fontsize=7)
    save(fig, path)


def two_point(result: dict, h: Hamiltonian, path) -> None:
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    tp = result["two_point"]
    ax.errorbar(tp["r"], tp["value"], yerr=tp["error"], fmt="o", ms=4, capsize=2, label="flow ansatz")
    ax.plot(tp["r"], result["gaussian"]["two_point"], "k--", lw=1, label=f"best Gaussian (M^2 = {result['gaussian']['mass_sq']:.4g})")
    ax.set_xlabel("separation r (sites, along axis 1)")
    ax.set_ylabel("<phi(0) phi(r)>")
    ax.set_title(f"equal-time two-point function: {h.label()}", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, path)


def flowed_states(path_fields: np.ndarray, times, h: Hamiltonian, path) -> None:
    """path_fields: (samples, times, *lattice). d = 1: profiles; d = 2: images; d = 3: a slice."""
    n_t = len(times)
    fig, axes = plt.subplots(1, n_t, figsize=(2.6 * n_t, 2.6), squeeze=False)
    vmax = float(np.max(np.abs(path_fields))) or 1.0
    for j, t in enumerate(times):
        ax = axes[0, j]
        if h.dim == 1:
            for k in range(path_fields.shape[0]):
                ax.plot(np.arange(h.size), path_fields[k, j], "-o", ms=2, lw=1)
            ax.set_ylim(-vmax, vmax)
            ax.set_xlabel("site n")
        else:
            img = path_fields[0, j] if h.dim == 2 else path_fields[0, j][..., 0]
            ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"t = {t:g}" + (" (IR prior)" if t == 1 else " (UV)" if t == 0 else ""), fontsize=8)
    fig.suptitle(f"RG-flowed ground states (same noise, samples of p_t): {h.label()}", fontsize=9)
    save(fig, path)
