"""Figures, labelled so a physicist can read them without the code (matplotlib, Agg backend)."""

from __future__ import annotations

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .lattice import Lattice  # noqa: E402
from .theory import Phi4  # noqa: E402


def _theory_label(theory: Phi4) -> str:
    lat = theory.lattice
    return f"d={lat.dim}, N={lat.size}, L={lat.length:g}, m2={theory.m2:g}, lam={theory.lam:g}"


def save(fig, path) -> None:
    from ._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def configurations(fields: np.ndarray, theory: Phi4, path, n: int = 6, title: str = "NUTS samples") -> None:
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
    fig.suptitle(f"{title}: {_theory_label(theory)}", fontsize=9)
    save(fig, path)


def magnetization(fields: np.ndarray, theory: Phi4, path) -> None:
    """Monte Carlo history of M per chain and its histogram."""
    m = np.mean(fields, axis=theory.lattice.axes)  # (chains, samples)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    for c in range(m.shape[0]):
        a1.plot(m[c], lw=0.5, label=f"chain {c}")
    a1.set_xlabel("transition (after warm-up)")
    a1.set_ylabel("M = mean_n phi(n)")
    a1.legend(fontsize=6, ncol=4)
    a2.hist(m.ravel(), bins=60, orientation="horizontal", color="gray")
    a2.set_xlabel("count")
    fig.suptitle(f"magnetization history: {_theory_label(theory)}", fontsize=9)
    save(fig, path)


def propagator(fields: np.ndarray, theory: Phi4, path) -> None:
    """1/G2(p) against |phat|^2 per momentum shell, errors from the spread of chain means.

    A free field gives the straight line |phat|^2 + m2 (drawn for the bare m2, dashed).
    """
    lat = theory.lattice
    phi_p = np.fft.fftn(fields, axes=lat.axes) / lat.sites
    power = lat.volume * np.abs(phi_p) ** 2  # (chains, samples, *lattice)
    # connected at p = 0 w.r.t. the vacuum-mapped mean
    m = np.mean(fields, axis=lat.axes)
    signs = np.where(m >= 0, 1.0, -1.0)
    zero = (0,) * lat.dim
    chain_means = power.mean(axis=1)  # (chains, *lattice)
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
    ax.set_title(f"inverse propagator: {_theory_label(theory)}", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, path)
