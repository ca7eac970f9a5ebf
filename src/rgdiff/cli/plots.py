"""Figures, labelled so a physicist can read them without the code (matplotlib, Agg backend)."""

from __future__ import annotations

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rgdiff.io.atomic import atomic_path
from rgdiff.train.initial import prior_couplings
from rgdiff.observables import estimators
from rgdiff.theory.phi4 import Phi4


def theory_label(theory: Phi4) -> str:
    """The theory's parameters in one line, for titles."""
    lat = theory.lattice
    return f"d={lat.dim}, N={lat.size}, L={lat.length:g}, m2={theory.m2:g}, lam={theory.lam:g}"


def save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def configurations(fields: np.ndarray, theory: Phi4, path, n: int = 6, title: str = "samples") -> None:
    """A row of sample configurations (d = 2: images; d = 1: lines; d = 3: one slice)."""
    flat = fields.reshape(-1, *theory.lattice.shape)
    idx = np.linspace(0, len(flat) - 1, n).astype(int)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4))
    vmax = np.max(np.abs(flat[idx]))
    for ax, i in zip(np.atleast_1d(axes), idx):
        phi = flat[i]
        if theory.lattice.dim == 1:
            ax.plot(phi)
            ax.set_xlabel("n")
        else:
            img = phi if theory.lattice.dim == 2 else phi[0]
            im = ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"#{i}", fontsize=8)
    if theory.lattice.dim >= 2:
        fig.colorbar(im, ax=list(np.atleast_1d(axes)), shrink=0.8, label="phi(n)")
    fig.suptitle(f"{title}: {theory_label(theory)}", fontsize=9)
    save(fig, path)


def magnetization(fields: np.ndarray, theory: Phi4, path) -> None:
    """Monte Carlo history of M per chain and its histogram."""
    m = estimators.magnetization(fields, theory.lattice)  # (chains, samples)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    for c in range(m.shape[0]):
        a1.plot(m[c], lw=0.5, label=f"chain {c}")
    a1.set_xlabel("transition (after warm-up)")
    a1.set_ylabel("M = mean_n phi(n)")
    a1.legend(fontsize=6, ncol=4)
    a2.hist(m.ravel(), bins=60, orientation="horizontal", color="gray")
    a2.set_xlabel("count")
    fig.suptitle(f"magnetization history: {theory_label(theory)}", fontsize=9)
    save(fig, path)


def propagator(fields: np.ndarray, theory: Phi4, path) -> None:
    """1/G2(p) against |phat|^2 per momentum shell, errors from the spread of chain means.

    A free field gives the straight line |phat|^2 + m2 (drawn for the bare m2, dashed).
    """
    lat = theory.lattice
    chain_means = np.stack([lat.power_spectrum(chain, half=False) for chain in fields])  # (chains, *lattice)
    # connected at p = 0 w.r.t. the vacuum-mapped mean
    m = estimators.magnetization(fields, lat)
    signs = np.where(m >= 0, 1.0, -1.0)
    zero = (0,) * lat.dim
    mm = np.mean(signs * m, axis=1)
    chain_means[(slice(None),) + zero] -= lat.volume * mm**2
    p2 = np.asarray(lat.phat_sq())
    shells = np.unique(np.round(p2, 10))
    x, y, e = [], [], []
    for s in shells:
        sel = np.isclose(p2, s)
        g = chain_means[:, sel].mean(axis=1)  # (chains,)
        inv = 1.0 / g
        x.append(s)
        y.append(inv.mean())
        e.append(inv.std(ddof=1) / np.sqrt(len(inv)) if len(inv) > 1 else 0.0)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(x, y, yerr=e, fmt="o", ms=3, label="sampled 1/G2(p)")
    xs = np.linspace(0, max(x), 50)
    ax.plot(xs, xs + theory.m2, "--", lw=1, label="free field |phat|^2 + m2 (bare)")
    ax.set_xlabel("|phat|^2  (lattice momentum squared, physical units)")
    ax.set_ylabel("1 / G2(p)")
    ax.set_title(f"inverse propagator: {theory_label(theory)}", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, path)


FLOW_PANELS = (
    ("m_R", "m_R (renormalized mass)"),
    ("Z", "Z (wave-function renorm.)"),
    ("lambda_R", "lambda_R = r_t^2 lambda_R_hat (d=2)"),
    ("max_abs_phi", "<max_n |phi(n)|>"),
    ("m_R_hat", "m_R_hat = m_R / r_t"),
    ("lambda_R_hat", "lambda_R_hat = lambda_R / r_t^(4-d)"),
)


def _band(ax, t, values, errors, label, color=None):
    t = np.asarray(t, dtype=float)
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    e = np.array([np.nan if x is None else x for x in errors], dtype=float)
    line = ax.plot(t, v, "o-", ms=3, lw=1.2, label=label, color=color)[0]
    ax.fill_between(t, v - e, v + e, alpha=0.25, color=line.get_color())


def flows(flow_jsons: list[tuple[str, dict]], path, title: str, panels=FLOW_PANELS, xscale: str = "linear") -> None:
    """Observables against RG time t, one line (with a 1-sigma band) per labelled FLOW.json."""
    n = len(panels)
    cols = 3 if n > 4 else n
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, ylabel) in zip(axes.flat, panels):
        for label, fj in flow_jsons:
            o = fj["observables"][name]
            _band(ax, fj["t"], o["value"], o["error"], label)
        ax.set_xlabel("RG time t")
        if xscale == "symlog":
            ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)


def flow_rows(rows: list[tuple[str, np.ndarray, np.ndarray]], theory: Phi4, path, title: str) -> None:
    """Rows of one configuration along each flow: rows = [(label, times, configs (times, *lattice))]."""
    ncol = max(len(t) for _, t, _ in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.6 * ncol, 1.8 * len(rows)), squeeze=False)
    for r, (label, times, configs) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(times):
                ax.axis("off")
                continue
            img = configs[c] if theory.lattice.dim == 2 else np.atleast_2d(configs[c].reshape(theory.lattice.size, -1))
            # per-frame scale: the flow shrinks the field by orders of magnitude, and the
            # fluctuations around the vacuum are what the eye should see
            ax.imshow(img, cmap="viridis", vmin=float(np.min(img)), vmax=float(np.max(img)))
            ax.set_title(f"t={times[c]:.3g}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"{title}\n{theory_label(theory)} (colour: min..max of each frame)", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def couplings(table: dict, theory: Phi4, scheme, path) -> None:
    """The learned running couplings of an EFT score [5.26], read as (Z_t, m2_t, lam_t).

    s = f_1 Delta phi + f_2 phi + f_3 phi^3 = eps^d Z (Delta phi - m2 phi - lam/6 phi^3), so
    Z_t = f_1/eps^d, m2_t = -f_2/f_1, lam_t = -6 f_3/f_1; dashed: the bare values (t = 0 truth),
    dotted: the scheme's stationary law (the IR end).
    """
    lat = theory.lattice
    e = lat.spacing**lat.dim
    t = np.asarray(table["t"])
    f1, f2, f3 = (np.asarray(table[k]) for k in ("kinetic", "mass", "quartic"))
    g1, g2, g3 = prior_couplings(scheme, lat)
    panels = (
        ("Z_t = f_1 / eps^d", f1 / e, 1.0, g1 / e),
        ("m2_t = -f_2 / f_1", -f2 / f1, theory.m2, -g2 / g1),
        ("lam_t = -6 f_3 / f_1", -6 * f3 / f1, theory.lam, -6 * g3 / g1),
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (label, y, bare, ir) in zip(axes, panels):
        ax.plot(t, y, lw=1.5, label="learned")
        ax.axhline(bare, ls="--", color="k", lw=0.8, label="bare (UV truth)")
        ax.axhline(ir, ls=":", color="gray", lw=0.8, label="stationary law (IR)")
        ax.set_xscale("symlog", linthresh=max(t[1], 1e-6) if len(t) > 1 else 1e-3)
        ax.set_xlabel("RG time t")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"learned running couplings (EFT score [5.26]): {theory_label(theory)}, scheme {scheme.describe()}", fontsize=8)
    fig.tight_layout()
    save(fig, path)
