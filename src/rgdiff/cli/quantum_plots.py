"""Pictures of a ground-state run: training curve, equal-time two-point function, flowed states."""

from __future__ import annotations

import textwrap

import numpy as np

from rgdiff.cli.plots import plt, save
from rgdiff.quantum.hamiltonian import Hamiltonian


def running_mean(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each `window` consecutive values and its standard error (the batches are independent
    draws, so the error of a window mean is its spread / sqrt(window))."""
    v = np.asarray(values, dtype=np.float64)
    kernel = np.ones(window) / window
    mean = np.convolve(v, kernel, mode="valid")
    var = np.maximum(np.convolve(v**2, kernel, mode="valid") - mean**2, 0.0) * window / max(window - 1, 1)
    return mean, np.sqrt(var / window)


def energy_curve(history: np.ndarray, result: dict, h: Hamiltonian, path, gaps: np.ndarray | None = None) -> None:
    """Training curve: batch energies and their running mean with its error band (top), the running
    mean zoomed onto the final result, the best Gaussian and the exact energy (middle), and the
    integration gap of each step (bottom, where given). Reference lines are labelled on the plot."""
    history = np.asarray(history, dtype=np.float64)
    rows = 3 if gaps is not None and len(gaps) else 2
    fig, axes = plt.subplots(rows, 1, figsize=(7.0, 2.5 * rows + 0.7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1.5][:rows]})
    top, zoom = axes[0], axes[1]
    steps = np.arange(1, len(history) + 1)
    w = max(min(len(history) // 20, 200), 2)
    mean, err = running_mean(history, w) if len(history) >= w else (np.zeros(0), np.zeros(0))
    x_mean = steps[w - 1:] if len(mean) else np.zeros(0)
    e, de = result["energy"], result["energy_error"]
    gauss, exact = result["baseline_gaussian"], result["exact"]
    bound = (result.get("lower_bound") or {}).get("value")
    form = result["meta"]["energy_estimator"]
    same = exact is not None and abs(exact - gauss) <= 1e-9 * max(abs(exact), 1.0)
    refs = [(gauss, "k", "--", f"best Gaussian = exact {gauss:.7g}" if same else f"best Gaussian {gauss:.7g}")]
    if exact is not None and not same:
        refs.append((exact, "C3", "-", f"exact {exact:.7g}"))
    far = [] if exact is not None or bound is None else [(bound, "C4", ":", f"rigorous lower bound {bound:.7g}")]
    last = steps[-1] if len(steps) else 1
    top.plot(steps, history, lw=0.5, alpha=0.35, color="C0", label="batch energy (score form)")
    for ax in (top, zoom):
        if len(mean):
            ax.fill_between(x_mean, mean - err, mean + err, color="C1", alpha=0.35, lw=0)
            ax.plot(x_mean, mean, color="C1", lw=1.3, label=f"running mean of {w} batches ± error")
        for value, color, ls, _ in refs + (far if ax is top else []):
            ax.axhline(value, color=color, ls=ls, lw=1.1)
        ax.errorbar([last * 1.03], [e], yerr=[de], fmt="D", color="C2", ms=5, capsize=3, zorder=5,
                    label=f"result ({form} form) {e:.7g} ± {de:.2g}" + ("" if result.get("valid", True) else " INVALID"))
        ax.set_ylabel("energy E")
    if len(history):  # top: the whole run (1st-99th percentile of the batches)
        lo, hi = np.percentile(history, [1, 99])
        lo, hi = min(lo, e - de, *(r[0] for r in refs + far)), max(hi, e + de, gauss)
        pad = 0.05 * (hi - lo) + 1e-12
        top.set_ylim(lo - pad, hi + pad)
    box = dict(facecolor="white", alpha=0.75, lw=0, pad=1.0)  # labels stay legible over the curves

    def label_lines(ax, lines):
        """The highest line's label above it, the others below theirs: close lines stay readable."""
        top_value = max(r[0] for r in lines)
        for value, color, _, label in lines:
            above = value == top_value
            ax.annotate(label, xy=(0.01, value), xycoords=("axes fraction", "data"), xytext=(0, 3 if above else -3),
                        textcoords="offset points", fontsize=8, color=color, va="bottom" if above else "top", bbox=box)

    label_lines(top, refs + far)
    top.legend(fontsize=7, loc="upper right")
    # zoom: result, Gaussian and exact fill the panel; the running mean's band sets the least span
    values = [r[0] for r in refs] + [e - de, e + de]
    noise = float(np.median(err)) if len(err) else 0.0
    span = max(max(values) - min(values), 6 * noise, 1e-7 * max(abs(e), 1.0))
    zoom.set_ylim(min(values) - 0.5 * span, max(values) + 0.5 * span)
    label_lines(zoom, refs)
    zoom.annotate(f"result {e:.7g} ± {de:.2g}", xy=(0.99, e), xycoords=("axes fraction", "data"), xytext=(0, -8),
                  textcoords="offset points", fontsize=8, color="C2", ha="right", va="top", bbox=box)
    zoom.set_title("zoom onto the result, the best Gaussian" + (" and the exact energy" if exact is not None and not same
                   else " (no exact value on this lattice)" if exact is None else " (= the exact energy)"), fontsize=8)
    if rows == 3:
        ax = axes[2]
        g = np.asarray(gaps, dtype=np.float64)
        positive = g[g > 0]
        ax.semilogy(steps, np.maximum(g, positive.min() if positive.size else 1e-300), lw=0.6, color="C7")
        ax.set_ylabel("RK4 gap", fontsize=8)
        ax.set_title("integration gap mean|e_n - e_n/2| per step (the RK4 error of e_n is about 1/15 of it)", fontsize=8)
    axes[-1].set_xlabel("Adam step")
    title = f"variational ground state: {h.label()}"
    if not result.get("valid", True):
        title += "\n" + textwrap.shorten("INVALID: " + result["failures"][0], 230).replace("; ", ";\n", 1)
        title = "\n".join(textwrap.fill(line, 115) for line in title.split("\n"))
    fig.suptitle(title, fontsize=9, color="k" if result.get("valid", True) else "C3")
    fig.tight_layout()
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
