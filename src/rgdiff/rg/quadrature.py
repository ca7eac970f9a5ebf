"""The Gaussian kernel of a linear RG scheme from its rates, by quadrature [5.32]-[5.36].

Per Fourier mode, d phi~ = -beta_t phi~ dt + noise with continuum-normalized variance rate gamma_t.
From time s to time t the kernel is ::

    a_{t|s} = exp(-I(t - s)),   v_{t|s} = int_0^{t-s} exp(-2 I(u)) gamma_{t-u} du,
    I(u) := int_{t-u}^{t} beta_r dr,

written in the look-back variable u = t - s' so that the integrand of v, exp(-2 I(u)), is a
boundary layer of width ~ 1/(2 beta) at u = 0. A fixed Gauss-Legendre rule cannot resolve that for
all modes at once (beta ranges over |phat|^2 in [0, Lambda_0^2]), so the rule is composite on panels
graded geometrically towards u = 0: [0, h q^(P-1)], ..., [h q^2, h q], [h q, h] with h = t - s.
Every scale of beta down to h q^(P-1) is then resolved by some panel. I(u) inside a panel is the
running integral up to the panel's left edge plus a Gauss-Legendre integral over the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_NODES = 12  # Gauss-Legendre nodes per panel
DEFAULT_PANELS = 48  # graded panels; the smallest has width (t - s) * 2^-47
PANEL_RATIO = 0.5


def _panel_edges(length, n_panels: int, dtype):
    fractions = np.concatenate([[0.0], PANEL_RATIO ** np.arange(n_panels - 1, -1, -1.0)])
    return length * jnp.asarray(fractions, dtype)


def transition_by_quadrature(rates, start, t, dtype, n_nodes: int = DEFAULT_NODES, n_panels: int = DEFAULT_PANELS):
    """(a_{t|s}, v_{t|s}) for scalar times `start` <= `t` from a rate function.

    **Arguments:**

    - `rates`: `rates(times) -> (beta, gamma)`; `times` has shape `(k,)`, and the results have
      shape `(k, *grid)`.
    - `start`, `t`: scalar times (may be traced).
    - `dtype`: real dtype of the computation.
    - `n_nodes`, `n_panels`: Gauss-Legendre nodes per panel and number of graded panels.

    **Returns:** `(a, v)`, each of shape `grid`.
    """
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    unit_nodes = jnp.asarray(0.5 * (x + 1.0), dtype)  # nodes on [0, 1]
    unit_weights = jnp.asarray(0.5 * w, dtype)
    edges = _panel_edges(t - start, n_panels, dtype)

    def weighted_sum(weights, values):
        return jnp.tensordot(weights, values, axes=(0, 0))

    def panel(carry, bounds):
        running, v_acc = carry
        lo, hi = bounds
        width = hi - lo
        u_outer = lo + width * unit_nodes  # (n,)
        beta_outer, gamma_outer = rates(t - u_outer)
        # I(u_j) = I(lo) + int_lo^{u_j} beta(t - u') du'
        u_inner = lo + (u_outer - lo)[:, None] * unit_nodes[None, :]  # (n, n)
        beta_inner, _ = rates((t - u_inner).reshape(-1))
        beta_inner = beta_inner.reshape((n_nodes, n_nodes) + beta_inner.shape[1:])
        lengths = (u_outer - lo).reshape((n_nodes,) + (1,) * (beta_inner.ndim - 2))
        partial = lengths * jnp.tensordot(unit_weights, beta_inner, axes=(0, 1))
        integral_at_nodes = running[None] + partial
        v_acc = v_acc + width * weighted_sum(unit_weights, gamma_outer * jnp.exp(-2.0 * integral_at_nodes))
        running = running + width * weighted_sum(unit_weights, beta_outer)
        return (running, v_acc), None

    probe_beta, _ = jax.eval_shape(rates, jnp.zeros((1,), dtype))
    grid = probe_beta.shape[1:]
    zeros = jnp.zeros(grid, dtype)
    (integral, v), _ = jax.lax.scan(panel, (zeros, zeros), (edges[:-1], edges[1:]))
    return jnp.exp(-integral), v
