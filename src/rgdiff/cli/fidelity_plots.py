"""Figures of a learned flow's fidelity (`rgdiff.observables.fidelity`): the relative deviation of
each judged observable against the tolerance, the spectral ratio per momentum orbit, and the
zero mode's score against the exact one."""

from __future__ import annotations

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from rgdiff.io.atomic import atomic_path


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def _time_axis(ax, t) -> None:
    positive = [x for x in t if x > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlabel("RG time t")


def deviations(cmp: dict, path, title: str) -> None:
    """(learned - true) / |true| against t for each judged observable, with the learned value's
    relative error as a bar and the tolerance as a band: the picture of the verdict."""
    fid = cmp["fidelity"]
    names = list(fid["judged"])
    t = np.asarray(cmp["true"]["t"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), sharey=True)
    tol = fid["tolerance"]
    reach = 0.0
    for ax, name in zip(np.atleast_1d(axes), names):
        lv = cmp["learned"]["observables"][name]["value"]
        le = cmp["learned"]["observables"][name]["error"]
        tv = cmp["true"]["observables"][name]["value"]
        rows = [(ti, 100.0 * (a - b) / abs(b), 100.0 * e / abs(b)) for ti, a, e, b in zip(t, lv, le, tv)
                if None not in (a, e, b) and b != 0]
        ax.axhspan(-100 * tol, 100 * tol, color="tab:green", alpha=0.15, lw=0, label=f"tolerance ±{100 * tol:g}%")
        ax.axhline(0.0, color="k", lw=0.6)
        if rows:
            ts, dev, err = (np.array(x) for x in zip(*rows))
            ax.errorbar(ts, dev, yerr=err, fmt="o-", ms=3, lw=1, color="tab:blue", label="learned - true (rel.)")
            reach = max(reach, float(np.max(np.abs(dev) + err)))
        rec = fid["observables"][name]
        ax.set_title(f"{name}: {rec['verdict']}", fontsize=9,
                     color={"pass": "tab:green"}.get(rec["verdict"], "tab:red"))
        _time_axis(ax, t)
    first = np.atleast_1d(axes)[0]
    if reach <= 20 * 100 * tol:  # percent on a linear axis, the band and every point in view
        first.set_ylim(-1.1 * max(reach, 2 * 100 * tol), 1.1 * max(reach, 2 * 100 * tol))
    else:  # a model that is far off: the band stays linear, the rest logarithmic
        first.set_yscale("symlog", linthresh=100 * tol)
    first.set_ylabel("relative deviation (%)")
    first.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{title}  —  verdict {fid['verdict'].upper()}", fontsize=10)
    _save(fig, path)


def spectral(spec: dict, path, title: str) -> None:
    """The natural log of learned / true power spectrum (the report's `max_abs_log_ratio` is its
    largest magnitude per row), times (rows) against momentum orbits (columns, increasing
    |phat|^2): 0 (white) is exact; a wrong zero mode, UV tail or band shows at once."""
    ratio = np.log(np.clip(np.asarray(spec["ratio"], dtype=np.float64), 1e-12, None))
    t = spec["t"]
    phat = np.asarray(spec["phat_sq"])
    span = max(float(np.max(np.abs(ratio))), 0.1)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(t) + 1.8))
    im = ax.imshow(ratio, aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span), interpolation="nearest")
    ticks = np.unique(np.linspace(0, len(phat) - 1, 8).astype(int))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{phat[i]:.3g}" for i in ticks], fontsize=7)
    ax.set_yticks(range(len(t)))
    ax.set_yticklabels([f"{x:.3g}" for x in t], fontsize=7)
    ax.set_xlabel("momentum orbit, |phat|^2 (zero mode at the left)")
    ax.set_ylabel("RG time t")
    fig.colorbar(im, ax=ax, label="ln(learned / true) power spectrum")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def zero_mode(z: dict, path, title: str) -> None:
    """The learned zero-mode score (mean of sum_n s(phi_t) at given |M_t|) against the exact
    marginal score of M_t, one panel per time."""
    times = z["t"]
    if not times:
        return
    cols = min(len(times), 4)
    rows = -(-len(times) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.7 * rows), squeeze=False)
    for ax, i in zip(axes.flat, range(len(times))):
        ax.errorbar(z["abs_M"][i], z["learned"][i], yerr=z["learned_error"][i], fmt="o-", ms=3, label="learned")
        ax.plot(z["abs_M"][i], z["exact"][i], "k--", lw=1, label="exact (mixture)")
        ax.set_title(f"t = {times[i]:.3g}: rms rel. error {z['rms_relative_error'][i]:.2f}", fontsize=8)
        ax.set_xlabel("|M_t|")
    for ax in axes.flat[len(times):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("d log p_t / dM (signed as M > 0)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
