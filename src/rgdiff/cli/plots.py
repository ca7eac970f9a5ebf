"""Figures, labelled so a physicist can read them without the code (matplotlib, Agg backend).

Conventions of every figure here: physical units (the theory's L), RG time on a logarithmic axis
with t = 0 drawn at its left edge (the couplings run fastest at small t), colour scales shared
between the frames of a figure and shown by a colorbar, and titles that name the theory in one line.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator, ScalarFormatter  # noqa: E402

from rgdiff.io.atomic import atomic_path
from rgdiff.train.initial import prior_couplings
from rgdiff.observables import estimators
from rgdiff.observables.stats import format_value_error, primaries, evaluate
from rgdiff.theory.phi4 import Phi4


def theory_label(theory: Phi4) -> str:
    """The theory's parameters in one line, for titles."""
    lat = theory.lattice
    return f"d={lat.dim}, N={lat.size}, L={lat.length:g}, m2={theory.m2:g}, lam={theory.lam:g}"


def scheme_label(scheme) -> str:
    """An RG scheme in words, e.g. "Carosso, M = 1" or "Polchinski (slow profile), M = 1"."""
    d = scheme.describe() if hasattr(scheme, "describe") else dict(scheme)
    name = str(d.get("name", "scheme"))
    text = name.capitalize()
    if "profile" in d and isinstance(d["profile"], str):
        text += f" ({d['profile']} profile)"
    if d.get("M") is not None:
        text += f", M = {d['M']:g}"
    for key, default in (("noise", 1.0), ("speed", 1.0)):
        if isinstance(d.get(key), (int, float)) and d[key] != default:
            text += f", {key} {d[key]:g}"
    return text


def save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def _plain_numbers(ax, axis: str = "y") -> None:
    """No offset text ("1e-3 + ...") on a linear axis: the tick labels are the numbers."""
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_powerlimits((-3, 4))
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


# RG time on a log axis with t = 0 at its left edge -----------------------------------------


def zero_position(t) -> float | None:
    """Where t = 0 is drawn on a log time axis: a factor 4 below the smallest positive time."""
    t = np.asarray(t, dtype=float)
    positive = t[t > 0]
    return float(positive.min()) / 4.0 if positive.size else None


def log_time_axis(ax, t, label: str = "RG time t") -> np.ndarray:
    """Set up a logarithmic RG-time axis for the times `t` and return the x positions to plot at:
    t itself, and t = 0 at `zero_position(t)`, labelled "0" behind a broken-axis mark. One tick per
    decade (two or three decades apart when the range is long), so labels never overlap."""
    t = np.asarray(t, dtype=float)
    x0 = zero_position(t)
    if x0 is None:  # only t = 0
        ax.set_xlabel(label)
        return t
    x = np.where(t > 0, t, x0)
    ax.set_xscale("log")
    lo, hi = x0 / 1.6, float(t.max()) * 1.6
    ax.set_xlim(lo, hi)
    first, last = math.ceil(math.log10(float(t[t > 0].min()) * 0.999)), math.floor(math.log10(hi))
    step = max(1, math.ceil((last - first + 1) / 5))
    decades = [10.0**k for k in range(first, last + 1, step)]
    ticks = ([x0] if np.any(t == 0) else []) + decades
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())

    def fmt(v, _pos):
        if np.any(t == 0) and abs(v / x0 - 1) < 1e-9:
            return "0"
        k = round(math.log10(v))
        return f"$10^{{{k}}}$" if k not in (0, 1) else f"{10**k:g}"

    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    if np.any(t == 0):  # the axis break between t = 0 and the first positive time
        xb = math.sqrt(x0 * float(t[t > 0].min()))
        kw = dict(transform=ax.get_xaxis_transform(), color="k", lw=0.8, clip_on=False)
        for dx in (0.94, 1.06):
            ax.plot([xb * dx / 1.08, xb * dx * 1.08], [-0.02, 0.02], **kw)
    ax.set_xlabel(label)
    return x


# ensembles --------------------------------------------------------------------------------


def _vacuum_signs(m: np.ndarray) -> np.ndarray | None:
    """+-1 per configuration (sign of M) when no chain tunnels (the ensemble is measured in one
    vacuum, `estimators.maps_vacuum`); None when the chains cross between vacua."""
    if estimators.maps_vacuum(m, markov=True):
        return np.where(m >= 0, 1.0, -1.0)
    return None


def configurations(fields: np.ndarray, theory: Phi4, path, n: int = 6, title: str = "samples",
                   mc_time: np.ndarray | None = None) -> None:
    """A row of sample configurations with their chain and Monte Carlo step, on one colour scale.

    Without tunnelling (a broken phase measured in one vacuum) each frame shows the fluctuation
    phi(n) - v about its own vacuum v = sign(M) <|M|>, which would otherwise be one flat colour;
    with tunnelling, phi(n) itself. d = 1: lines; d = 3: the slice n_1 = 0. `mc_time`: the Monte
    Carlo step of each sample (default 1, 2, ...).
    """
    fields = np.asarray(fields)
    lat = theory.lattice
    chains, samples = fields.shape[:2]
    mc_time = np.arange(1, samples + 1) if mc_time is None else np.asarray(mc_time)
    m = estimators.magnetization(fields, lat)
    signs = _vacuum_signs(m)
    vev = float(np.mean(np.abs(m))) if signs is not None else 0.0
    picks = [(k % chains, int(i)) for k, i in enumerate(np.linspace(samples // 4, samples - 1, n).astype(int))]
    frames = np.stack([fields[c, i] - (signs[c, i] * vev if signs is not None else 0.0) for c, i in picks])
    vmax = float(np.quantile(np.abs(frames), 0.995)) or 1.0
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n + 1.0, 2.6), squeeze=False)
    axes = axes[0]
    im = None
    for ax, (c, i), phi in zip(axes, picks, frames):
        if lat.dim == 1:
            ax.plot(np.arange(lat.size) * lat.spacing, phi, lw=1)
            ax.set_ylim(-vmax * 1.05, vmax * 1.05)
            ax.set_xlabel("x")
        else:
            img = phi if lat.dim == 2 else phi[0]
            im = ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower",
                           extent=(0, lat.length, 0, lat.length))
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"chain {c}, step {int(mc_time[i])}\nM = {m[c, i]:.4g}", fontsize=8)
    quantity = "phi(n) - v" if signs is not None else "phi(n)"
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.85, pad=0.02, label=quantity)
    elif lat.dim == 1:
        axes[0].set_ylabel(quantity)
    what = (f"fluctuations about the vacuum v = sign(M) <|M|> = ±{vev:.4g} (no chain tunnels)" if signs is not None
            else "the field (chains tunnel between vacua)")
    slice_note = "; slice n_1 = 0" if lat.dim == 3 else ""
    fig.suptitle(f"{title}: {theory_label(theory)}\n{what}{slice_note}", fontsize=9, y=1.04)
    save(fig, path)


def _bins(x: np.ndarray, lo: int = 20, hi: int = 80) -> np.ndarray:
    """Histogram edges that resolve the shape of `x` (Freedman-Diaconis, between lo and hi bins)."""
    x = np.asarray(x, dtype=float).ravel()
    q1, q3 = np.quantile(x, [0.25, 0.75])
    width = 2 * (q3 - q1) / len(x) ** (1 / 3)
    span = float(x.max() - x.min())
    k = int(np.clip(span / width, lo, hi)) if width > 0 and span > 0 else lo
    return np.linspace(x.min(), x.max(), k + 1) if span > 0 else np.linspace(x.min() - 0.5, x.max() + 0.5, k + 1)


def magnetization(fields: np.ndarray, theory: Phi4, path, mc_time: np.ndarray | None = None) -> None:
    """Monte Carlo history of M per chain and its histogram at a resolution that shows its shape.

    Without tunnelling the chains sit in the vacua +-v, far apart against their fluctuations: the
    history is of |M| and the histogram is of |M| per vacuum (the two shapes must agree by the
    phi -> -phi symmetry). With tunnelling: M itself. The legend sits beside the axes.
    """
    fields = np.asarray(fields)
    lat = theory.lattice
    m = estimators.magnetization(fields, lat)  # (chains, samples)
    chains, samples = m.shape
    mc_time = np.arange(1, samples + 1) if mc_time is None else np.asarray(mc_time)
    signs = _vacuum_signs(m)
    y = np.abs(m) if signs is not None else m
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True, gridspec_kw={"width_ratios": [3, 1], "wspace": 0.12})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c in range(chains):
        vac = "" if signs is None else (" (M > 0)" if signs[c, 0] > 0 else " (M < 0)")
        a1.plot(mc_time, y[c], lw=0.4, alpha=0.8, color=colors[c % len(colors)], label=f"chain {c}{vac}")
    a1.set_xlabel("Monte Carlo step (after warm-up)")
    a1.set_ylabel("|M|  (M = mean_n phi(n))" if signs is not None else "M = mean_n phi(n)")
    a1.set_xlim(mc_time[0], mc_time[-1])
    _plain_numbers(a1)
    a1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=min(chains, 8), frameon=False,
              handlelength=1.5)
    edges = _bins(y)
    if signs is not None:
        for sign, label, color, ls in ((1.0, "M > 0 vacuum", "k", "-"), (-1.0, "M < 0 vacuum, |M|", "gray", "--")):
            sel = signs == sign
            if np.any(sel):
                vals = y[sel]
                a2.hist(vals, bins=edges, orientation="horizontal", histtype="step", density=True, color=color, lw=1.2,
                        ls=ls, label=f"{label}: mean {np.mean(vals):.4g}, sd {np.std(vals):.2g}")
    else:
        a2.hist(y.ravel(), bins=edges, orientation="horizontal", density=True, color="gray",
                label=f"all chains\nmean {np.mean(y):.3g}, <|M|> {np.mean(np.abs(y)):.3g}")
    a2.set_xlabel("probability density")
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.2), frameon=False)
    a2.tick_params(axis="y", labelleft=False)
    tunnel = ("no chain tunnels: |M| per vacuum" if signs is not None
              else f"vacuum changes per chain {estimators.vacuum_changes(m)}")
    fig.suptitle(f"magnetization: {theory_label(theory)}; {chains} chains x {samples} samples; {tunnel}", fontsize=9)
    save(fig, path)


def _shell_power(fields: np.ndarray, lattice, signs: np.ndarray | None):
    """Momentum shells |phat|^2 (ascending) and the Gamma-method G2 of each shell (value, error):
    G2(p) = L^d <|phi~(p)|^2> averaged over the shell, connected at p = 0 (vacuum-mapped M)."""
    p2 = lattice.phat_sq_np()
    shells, inverse = np.unique(np.round(p2, 9), return_inverse=True)
    inverse = inverse.reshape(p2.shape)
    chains, samples = fields.shape[:2]
    power = np.zeros((chains, samples, shells.size))
    counts = np.bincount(inverse.ravel(), minlength=shells.size)
    for c in range(chains):
        modes = np.abs(np.fft.fftn(np.asarray(fields[c], dtype=np.float64), axes=lattice.axes) / lattice.sites) ** 2
        flat = modes.reshape(samples, -1)
        for s in range(shells.size):
            power[c, :, s] = flat[:, inverse.ravel() == s].mean(axis=1)
    m = estimators.magnetization(fields, lattice)
    if signs is not None:
        m = m * signs
    value, error = np.zeros(shells.size), np.zeros(shells.size)
    series = {f"s{s}": power[..., s] for s in range(shells.size)}
    series["M"] = m
    obs = primaries(series, markov=True)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for s in range(shells.size):
            o = obs[f"s{s}"] - obs["M"] ** 2 if s == 0 else obs[f"s{s}"]
            est = evaluate(o, markov=True)
            value[s] = lattice.volume * est.value
            error[s] = lattice.volume * (est.error or 0.0)
    return shells, value, error, counts


def propagator(fields: np.ndarray, theory: Phi4, path, measurement=None) -> None:
    """The inverse propagator 1/G2(p) per momentum shell on log axes, with the fit
    Z^-1 (|phat|^2 + m_R^2) of the second-moment estimators (m_R, Z of `measurement`, measured
    here when not given), and the ratio of the data to that fit.

    Errors: Gamma method per shell (chains as replicas). p = 0 (|phat|^2 = 0, not on a log axis) is
    the dotted level 1/G2(0) = m_R^2/Z, which the fit meets as |phat|^2 -> 0.
    """
    fields = np.asarray(fields)
    lat = theory.lattice
    if measurement is None:
        measurement = estimators.measure(fields, lat, markov=True, correlators=False)
    m = estimators.magnetization(fields, lat)
    signs = np.where(m >= 0, 1.0, -1.0) if measurement.meta.get("vacuum") == "mapped" else None
    shells, g2, g2_err, counts = _shell_power(fields, lat, signs)
    inv, inv_err = 1.0 / g2, g2_err / g2**2
    mR, Z = measurement.observables["m_R"], measurement.observables["Z"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.9), gridspec_kw={"width_ratios": [3, 2]})
    x, y, e = shells[1:], inv[1:], np.abs(inv_err[1:])
    a1.errorbar(x, y, yerr=e, fmt="o", ms=3, lw=0.8, label="sampled 1/G2(p), one point per |phat|^2 shell")
    a1.axhline(inv[0], ls=":", color="gray", lw=1,
               label=f"p = 0: 1/G2(0) = {format_value_error(inv[0], inv_err[0])}")
    low = x.min() / 3 if not mR.defined else min(x.min() / 3, mR.value**2 / 10)
    xs = np.geomspace(low, x.max() * 1.2, 200)
    if mR.defined and Z.defined and Z.value > 0:
        fit = (xs + mR.value**2) / Z.value
        a1.plot(xs, fit, "-", color="C1", lw=1.2,
                label=f"Z^-1 (|phat|^2 + m_R^2): m_R = {format_value_error(mR.value, mR.error)}, "
                      f"Z = {format_value_error(Z.value, Z.error)}")
        ratio = y * Z.value / (x + mR.value**2)
        ratio_err = e * Z.value / (x + mR.value**2)
        a2.errorbar(x, ratio, yerr=ratio_err, fmt="o", ms=3, lw=0.8, color="C0")
        a2.axhline(1.0, color="C1", lw=1)
        a2.set_ylabel("1/G2(p)  /  [Z^-1 (|phat|^2 + m_R^2)]")
        a2.set_title("data / fit (1 for a free field of mass m_R; p = 0 and p1 fix the fit)", fontsize=8)
    else:
        a2.text(0.5, 0.5, "m_R or Z undefined (G2(0)/G2(p1) <= 1): no fit", ha="center", va="center", transform=a2.transAxes)
    tree = -2.0 * theory.m2 if (signs is not None and theory.m2 < 0) else (theory.m2 if theory.m2 > 0 else None)
    if tree is not None:
        a1.plot(xs, xs + tree, "--", color="k", lw=0.8, zorder=3,
                label=f"tree level |phat|^2 + {tree:g}" + (" (= -2 m2, about the vacuum)" if theory.m2 < 0 else " (= m2)"))
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("|phat|^2  (lattice momentum squared, 1/length^2)")
        ax.grid(alpha=0.3, which="both")
    a1.set_yscale("log")
    a1.set_ylabel("1 / G2(p)")
    a1.legend(fontsize=7, loc="upper left")
    a2.set_xlim(a1.get_xlim())
    _plain_numbers(a2)
    fig.suptitle(f"inverse propagator: {theory_label(theory)} (vacuum {measurement.meta.get('vacuum')})", fontsize=9)
    fig.tight_layout()
    save(fig, path)


def correlators(corr: dict, theory: Phi4, path, measurement=None) -> None:
    """G(x) and C(t) along an axis (log scale, Gamma-method errors) and the cosh effective mass
    m_eff(t) beside the second-moment m_R; `corr` is `estimators.correlator_estimates` (or
    `Measurement.correlators`)."""
    lat = theory.lattice
    sep = np.asarray(corr["separation"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, label, marker in (("G_x", "G(x) = <phi(0) phi(x e_i)>_c", "o"), ("C_t", "C(t) = L^(d-1) <S(0) S(t)>_c  (slice means)", "s")):
        v = np.array([np.nan if a is None else a for a in corr[name]["value"]], dtype=float)
        e = np.array([np.nan if a is None else a for a in corr[name]["error"]], dtype=float)
        pos = v > 0
        a1.errorbar(sep[pos], v[pos], yerr=e[pos], fmt=marker + "-", ms=3, lw=0.8, label=label)
    a1.set_yscale("log")
    a1.set_xlabel("separation x, t (length; half the box)")
    a1.set_ylabel("connected correlator")
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3, which="both")
    me = corr["m_eff"]
    ms = np.asarray(me["separation"])
    mv = np.array([np.nan if a is None else a for a in me["value"]], dtype=float)
    mer = np.array([np.nan if a is None else a for a in me["error"]], dtype=float)
    a2.errorbar(ms, mv, yerr=mer, fmt="o", ms=3, lw=0.8, label="cosh effective mass m_eff(t)")
    star = corr.get("effective_mass_separation")
    if star is not None:
        a2.axvline(star, color="k", lw=0.6, ls=":", label=f"t* = {star:.3g} (reported as effective_mass)")
    if measurement is not None and measurement.observables["m_R"].defined:
        mR = measurement.observables["m_R"]
        a2.axhspan(mR.value - mR.error, mR.value + mR.error, color="C1", alpha=0.3,
                   label=f"second-moment m_R = {format_value_error(mR.value, mR.error)}")
    finite = mv[np.isfinite(mv)]
    if finite.size:
        lo, hi = np.quantile(finite, [0.0, 1.0])
        pad = 0.5 * (hi - lo) + 0.1 * abs(hi)
        a2.set_ylim(lo - pad, hi + pad)
    a2.set_xlabel("separation t (length)")
    a2.set_ylabel("m_eff (1/length)")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    _plain_numbers(a2)
    fig.suptitle(f"correlators along an axis: {theory_label(theory)}; eps = {lat.spacing:g}", fontsize=9)
    fig.tight_layout()
    save(fig, path)


# flows ------------------------------------------------------------------------------------


def flow_panels(dim: int) -> tuple[tuple[str, str], ...]:
    """The default panels of `flows`: (observable, axis label), labels for dimension `dim`."""
    k = 4 - dim
    return (
        ("m_R", "m_R (second-moment mass)"),
        ("Z", "Z (wave-function renormalization)"),
        ("lambda_R", f"lambda_R (= r_t^{k} lambda_R_hat)"),
        ("max_abs_phi", "<max_n |phi(n)|>"),
        ("m_R_hat", "m_R_hat = m_R / r_t"),
        ("lambda_R_hat", f"lambda_R_hat = lambda_R / r_t^{k}"),
    )


FLOW_PANELS = flow_panels(2)  # the panels of a d = 2 flow; `flows` labels them for the flow's own d


def _flow_dim(flow: dict) -> int | None:
    meta = flow.get("meta") or {}
    lat = meta.get("lattice") or {}
    th = meta.get("theory") or {}
    d = lat.get("dim", th.get("dim"))
    return int(d) if d is not None else None


def _cutoff_closes(flow: dict) -> float | None:
    """The time 1/(2 s M^2) from which r_t = 0 (effective cutoff closed, [7.3]), if the flow reaches it."""
    r = flow.get("r_t") or []
    M = flow.get("M")
    if not M or not any(x == 0 for x in r):
        return None
    speed = ((flow.get("meta") or {}).get("scheme") or {}).get("speed", 1.0) or 1.0
    return 1.0 / (2.0 * float(speed) * float(M) ** 2)


def _log_y(ax, span: float) -> None:
    """A log y axis with readable labels: 1, 2, 5 per decade over a short range, decades only
    (every few decades) over a long one; minor ticks unlabelled."""
    ax.set_yscale("log")
    if span < 1e3:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=7))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _robust_limits(values: list[np.ndarray], errors: list[np.ndarray]):
    """y-limits that hold every point but the outliers (beyond 4 interquartile ranges of the
    values), and how many points fell outside."""
    v = np.concatenate([x[np.isfinite(x)] for x in values]) if values else np.array([])
    if v.size < 4:
        return None, 0
    q1, q3 = np.quantile(v, [0.25, 0.75])
    iqr = max(q3 - q1, 1e-12 * max(abs(q1), abs(q3), 1e-300))
    lo_ok, hi_ok = q1 - 4 * iqr, q3 + 4 * iqr
    inside = (v >= lo_ok) & (v <= hi_ok)
    if inside.all():
        return None, 0
    kept = v[inside]
    err = np.concatenate([e[np.isfinite(x)] for x, e in zip(values, errors)])[inside]
    err = np.where(np.isfinite(err), err, 0.0)
    lo, hi = float(np.min(kept - err)), float(np.max(kept + err))
    pad = 0.08 * (hi - lo if hi > lo else abs(hi) or 1.0)
    return (lo - pad, hi + pad), int((~inside).sum())


def flows(flow_jsons: list[tuple[str, dict]], path, title: str, panels=None, xscale: str = "log") -> None:
    """Observables against RG time t, one line (with a 1-sigma band) per labelled FLOW.json.

    The time axis is logarithmic with t = 0 at its left edge (`xscale="linear"` for a linear one;
    "symlog" is read as "log"). A panel whose values are all positive and span more than a factor
    30 gets a log y axis (e.g. Polchinski's m_R and Z, driven to zero); an outlier does not set
    the y range (it is marked at the edge). The r_t-rescaled couplings are undefined once the
    effective cutoff has closed, r_t = 0 for t >= 1/(2 M^2) [7.3]: a shaded region says so.
    """
    dims = {d for d in (_flow_dim(fj) for _, fj in flow_jsons) if d is not None}
    dim = dims.pop() if len(dims) == 1 else None
    if panels is None:
        panels = flow_panels(dim or 2)
    n = len(panels)
    cols = 3 if n > 4 else (2 if n == 4 else n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.3 * rows), squeeze=False)
    all_t = np.unique(np.concatenate([np.asarray(fj["t"], dtype=float) for _, fj in flow_jsons]))
    closes = [c for c in (_cutoff_closes(fj) for _, fj in flow_jsons) if c is not None]
    for ax, (name, ylabel) in zip(axes.flat, panels):
        xs_all = log_time_axis(ax, all_t) if xscale != "linear" else all_t
        vals, errs = [], []
        for label, fj in flow_jsons:
            if name not in fj["observables"]:
                continue
            o = fj["observables"][name]
            t = np.asarray(fj["t"], dtype=float)
            x = np.interp(t, all_t, xs_all) if xscale != "linear" else t
            v = np.array([np.nan if a is None else a for a in o["value"]], dtype=float)
            e = np.array([np.nan if a is None else a for a in o["error"]], dtype=float)
            line = ax.plot(x, v, "o-", ms=3, lw=1.2, label=label)[0]
            ax.fill_between(x, v - e, v + e, alpha=0.25, color=line.get_color(), lw=0)
            vals.append(v)
            errs.append(e)
        finite = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([])
        if finite.size and np.all(finite > 0) and finite.max() / finite.min() > 30:
            _log_y(ax, finite.max() / finite.min())
        else:
            limits, outside = _robust_limits(vals, errs)
            if limits is not None:
                ax.set_ylim(*limits)
                ax.text(0.98, 0.02, f"{outside} point{'s' if outside > 1 else ''} off scale", transform=ax.transAxes,
                        ha="right", va="bottom", fontsize=7, color="gray")
            _plain_numbers(ax)
        if name.endswith("_hat") and closes:
            tc = min(closes)
            right = ax.get_xlim()[1]
            ax.axvspan(tc, right, color="gray", alpha=0.15, lw=0)
            ax.text(math.sqrt(tc * right) if xscale != "linear" else 0.5 * (tc + right), 0.5,
                    f"undefined: r_t = 0\n(cutoff closed for\nt >= 1/(2M^2) = {tc:.3g})", transform=ax.get_xaxis_transform(),
                    ha="center", va="center", rotation=90, fontsize=7, color="dimgray")
            ax.set_xlim(right=right)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)


def flow_rows(rows: list[tuple[str, np.ndarray, np.ndarray]], theory: Phi4, path, title: str, max_cols: int = 7) -> None:
    """Rows of one configuration along each flow: rows = [(label, times, configs (times, *lattice))].

    Every frame shares one colour scale (the colorbar), so the decay of the field along the flow
    is visible; each frame is annotated with its mean and standard deviation over the sites. A
    field of one sign is drawn with a sequential map, one of both signs with a diverging map
    symmetric about 0. d = 1: lines; d = 3: the slice n_1 = 0.
    """
    lat = theory.lattice
    wrapped = []
    for label, times, configs in rows:  # long rows continue on the next line, at most `max_cols` frames each
        for k, j in enumerate(range(0, len(times), max_cols)):
            wrapped.append((label if k == 0 else f"{label} (cont.)", np.asarray(times)[j : j + max_cols], configs[j : j + max_cols]))
    rows = wrapped
    ncol = max(len(t) for _, t, _ in rows)
    images = [[(c if lat.dim == 2 else np.atleast_2d(c[0] if lat.dim == 3 else c)) for c in configs] for _, _, configs in rows]
    every = np.concatenate([np.ravel(np.asarray(c)) for _, _, configs in rows for c in configs])
    lo, hi = float(np.quantile(every, 0.001)), float(np.quantile(every, 0.999))
    if lo < 0 < hi and min(-lo, hi) > 0.05 * max(-lo, hi):
        vmax = max(-lo, hi)
        cmap, vmin = "RdBu_r", -vmax
    else:
        cmap, vmin, vmax = "viridis", lo, hi
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.75 * ncol + 1.2, 2.0 * len(rows) + 0.6), squeeze=False)
    im = None
    for r, (label, times, configs) in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(times):
                ax.axis("off")
                continue
            phi = np.asarray(configs[c])
            if lat.dim == 1:
                ax.plot(phi, lw=1)
                ax.set_ylim(vmin, vmax)
            else:
                im = ax.imshow(images[r][c], cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
            ax.set_title(f"t = {times[c]:.3g}\n{phi.mean():.3g} ± {phi.std():.2g}", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9, pad=0.015, label="phi(n)")
    fig.suptitle(f"{title}\n{theory_label(theory)}; one colour scale for every frame; "
                 "under each time: site mean ± standard deviation", fontsize=9)
    save(fig, path)


def couplings(table: dict, theory: Phi4, scheme, path) -> None:
    """The learned running couplings of an EFT score [5.26], read as (Z_t, m2_t, lam_t).

    s = f_1 Delta phi + f_2 phi + f_3 phi^3 = eps^d Z (Delta phi - m2 phi - lam/6 phi^3), so
    Z_t = f_1/eps^d, m2_t = -f_2/f_1, lam_t = -6 f_3/f_1; dashed: the bare values (t = 0 truth),
    dotted: the scheme's stationary law (the IR end). RG time on a log axis, t = 0 at its left edge.
    """
    lat = theory.lattice
    e = lat.spacing**lat.dim
    t = np.asarray(table["t"], dtype=float)
    f1, f2, f3 = (np.asarray(table[k], dtype=float) for k in ("kinetic", "mass", "quartic"))
    g1, g2, g3 = prior_couplings(scheme, lat)
    panels = (
        ("Z_t = f_1 / eps^d", f1 / e, 1.0, g1 / e),
        ("m2_t = -f_2 / f_1", -f2 / f1, theory.m2, -g2 / g1),
        ("lam_t = -6 f_3 / f_1", -6 * f3 / f1, theory.lam, -6 * g3 / g1),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (label, y, bare, ir) in zip(axes, panels):
        x = log_time_axis(ax, t)
        ax.plot(x[t > 0], y[t > 0], lw=1.5, color="C0", label="learned")
        if np.any(t == 0):
            ax.plot(x[t == 0], y[t == 0], "o", ms=4, color="C0", label="learned at t = 0")
        ax.axhline(bare, ls="--", color="k", lw=0.8, label=f"bare (UV truth) {bare:.4g}")
        ax.axhline(ir, ls=":", color="gray", lw=0.8, label=f"stationary law (IR) {ir + 0.0:.4g}")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        _plain_numbers(ax)
    for ax in axes:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.3), frameon=False, ncol=2)
    fig.suptitle(f"learned running couplings (EFT score [5.26])\n{theory_label(theory)}; RG scheme {scheme_label(scheme)}",
                 fontsize=9)
    fig.tight_layout()
    save(fig, path)
