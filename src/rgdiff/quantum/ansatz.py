"""A renormalizing-flow variational ansatz Psi_theta = sqrt(p_theta) (paper section 6.3).

p_theta is the push-forward of an IR prior by a neural ODE run from RG time t = T = 1 (the IR) down
to t = 0 (the UV ground state). We integrate in flow time s = 1 - t, s in [0, 1]:

- prior (s = 0): |Psi_M|^2, the free-field ground state of mass M (trainable), a Gaussian whose
  position-space covariance is diagonal in momentum with eigenvalues c_p = eps^-d / (2 omega_p),
  omega_p = sqrt(|phat|^2 + M^2) (so G2(p) = L^d <|phi~(p)|^2> = 1/(2 omega_p));
- vector field, translation- and point-group-invariant and odd in phi (the ground state's Z2):

      v(phi, s)(n) = [A_s phi](n) + sigma sum_f sum_y K_{f,s}(n - y) F_f(phi(y) / sigma)

  with A_s diagonal in momentum (one rate a_s(p) per orbit of p under the lattice point group),
  kernels K_{f,s}(r) (one weight per orbit of r), fixed odd features F_f (tanh(w u)/w at three
  widths and u^3/(1+u^2)), sigma the initial prior's per-site width, and every coefficient a cubic
  polynomial in s (Legendre basis). Only the kernel's centre weight touches the divergence, which
  is therefore exact and cheap:

      div v = sum_p a_s(p) + sum_f K_{f,s}(0) sum_n F_f'(u(n)),   u = phi / sigma.

Along a trajectory, log p and the score obey [6.14] and the system of section 6.3,

      d log p / ds = -div v,      d score / ds = -J^T score - grad div v,

(and, for the local-energy form, the Hessian of log p: see `_rhs`), so one fixed-step RK4 solve
(`integrate`, steps of `rgdiff.generate.rk4`) gives samples, log p_theta, the score and optionally
Lap log p together (its error is measured and controlled by `rgdiff.quantum.energy`);
J^T score and the Hessian terms are in closed form because v is linear plus feature-wise. With all flow
coefficients zero the ansatz is exactly the Gaussian |Psi_M|^2. `log_prob` integrates backwards
from a given field (a cross-check of the forward-propagated score, by autodiff).

The lattices here are small (V <= a few hundred sites), so the circulant operators are dense
(V, V) matrices: faster to compile and differentiate twice than FFTs.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.generate.rk4 import rk4
from rgdiff.quantum.hamiltonian import Hamiltonian

TIME_BASIS = 4  # Legendre polynomials P_0..P_3 in 2s - 1
FEATURE_WIDTHS = (0.5, 1.0, 2.0)  # tanh(w u)/w, then u^3/(1 + u^2)
FEATURES = len(FEATURE_WIDTHS) + 1


def feature_derivatives(u):
    """F_f(u) and its first three derivatives in closed form, each stacked to shape (FEATURES, ...).

    Closed forms keep the RK4 graph small (compilation dominates on CPU); a test checks them
    against autodiff.
    """
    f, d1, d2, d3 = [], [], [], []
    for w in FEATURE_WIDTHS:
        t = jnp.tanh(w * u)
        sech2 = 1.0 - t**2
        f.append(t / w)
        d1.append(sech2)
        d2.append(-2.0 * w * t * sech2)
        d3.append(-2.0 * w**2 * sech2 * (sech2 - 2.0 * t**2))
    q = 1.0 + u**2
    f.append(u**3 / q)
    d1.append((3.0 * u**2 + u**4) / q**2)
    d2.append((6.0 * u - 2.0 * u**3) / q**3)
    d3.append((6.0 - 36.0 * u**2 + 6.0 * u**4) / q**4)
    return tuple(jnp.stack(x) for x in (f, d1, d2, d3))


@functools.lru_cache(maxsize=32)
def _tables_np(h: Hamiltonian):
    n, d = h.size, h.dim
    pts = np.stack(np.meshgrid(*([np.arange(n)] * d), indexing="ij"), axis=-1).reshape(-1, d)
    cos = np.cos(2.0 * np.pi * (pts @ pts.T) / n)  # cos(2 pi p.r / N), rows p, columns r
    diff = (pts[:, None, :] - pts[None, :, :]) % n
    index = np.ravel_multi_index(tuple(diff[..., i] for i in range(d)), (n,) * d)
    return cos, index


def integrate(field, y0, t0: float, t1: float, steps):
    """`steps` equal RK4 steps of dy/dt = field(y, t) from t0 to t1 (`rgdiff.generate.rk4`, one step
    at a time). `steps` a Python int: a scan, reverse-mode differentiable (training); a traced
    integer: a while loop, so one compilation serves every step count (the evaluation's step
    doubling)."""
    if isinstance(steps, int):
        h = (t1 - t0) / steps
    else:
        steps = jnp.asarray(steps)
        h = (t1 - t0) / steps.astype(jnp.result_type(float))

    def one(i, y):
        t = t0 + h * jnp.asarray(i).astype(jnp.result_type(h))
        return rk4(field, y, t, t + h, 1)[0]

    return jax.lax.fori_loop(0, steps, one, y0)


def _time_basis(s):
    x = 2.0 * s - 1.0
    return jnp.stack([jnp.ones_like(x), x, 0.5 * (3 * x**2 - 1), 0.5 * (5 * x**3 - 3 * x)])


class FlowAnsatz(eqx.Module):
    """Variational state sqrt(p_theta): Gaussian prior of mass M + a translation-invariant neural ODE.

    **Arguments:** `h` the Hamiltonian (its lattice fixes the geometry), `mass_sq` the initial M^2
    of the prior, `steps` RK4 steps of the flow. Trainable leaves: `log_mass_sq`, `rates`,
    `kernels` (all flow coefficients start at zero: the Gaussian state of mass M).
    """

    h: Hamiltonian = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    log_mass_sq: jax.Array
    rates: jax.Array  # (TIME_BASIS, momentum orbits)
    kernels: jax.Array  # (FEATURES, TIME_BASIS, distance orbits)

    def __init__(self, h: Hamiltonian, mass_sq: float, steps: int = 16):
        self.h = h
        self.steps = int(steps)
        w = h.omega(mass_sq)
        self.scale = float(math.sqrt(np.sum(1.0 / (2.0 * w)) / h.length**h.dim))
        self.log_mass_sq = jnp.asarray(np.float64(math.log(mass_sq)))  # not weakly typed: no retrace after a step
        n_p = int(h.momentum_classes().max()) + 1
        n_r = int(h.distance_classes().max()) + 1
        self.rates = jnp.zeros((TIME_BASIS, n_p))
        self.kernels = jnp.zeros((FEATURES, TIME_BASIS, n_r))

    # circulant operators ----------------------------------------------------------------------
    def _circulant(self, spectrum):
        """The real translation-invariant (V, V) matrix with eigenvalues spectrum(p) (flat FFT grid)."""
        cos, index = _tables_np(self.h)
        kernel = (spectrum @ jnp.asarray(cos)) / self.h.sites
        return kernel[index]

    # prior --------------------------------------------------------------------------------
    @property
    def mass_sq(self):
        return jnp.exp(self.log_mass_sq)

    def prior_variances(self):
        """c_p = eps^-d / (2 omega_p): eigenvalues of the prior's position-space covariance (flat)."""
        w = jnp.sqrt(jnp.asarray(self.h.phat_sq().reshape(-1)) + self.mass_sq)
        return 1.0 / (2.0 * self.h.cell * w)

    def prior_sample(self, noise):
        """phi = C^(1/2) xi for white noise xi (one configuration)."""
        root = self._circulant(jnp.sqrt(self.prior_variances()))
        return (root @ noise.reshape(-1)).reshape(self.h.shape)

    def prior_log_prob(self, x):
        c = self.prior_variances()
        y = x.reshape(-1)
        return -0.5 * y @ (self._circulant(1.0 / c) @ y) - 0.5 * jnp.sum(jnp.log(2.0 * jnp.pi * c))

    def prior_score(self, x):
        return -(self._circulant(1.0 / self.prior_variances()) @ x.reshape(-1)).reshape(self.h.shape)

    # vector field ---------------------------------------------------------------------------
    def _coefficients(self, s):
        """A_s as a (V, V) matrix and the kernels K_{f,s} as (FEATURES, V, V) circulant matrices."""
        b = _time_basis(s)
        rates = jnp.einsum("k,kc->c", b, self.rates)[self.h.momentum_classes().reshape(-1)]
        kern = jnp.einsum("k,fkc->fc", b, self.kernels)[:, self.h.distance_classes().reshape(-1)]
        _, index = _tables_np(self.h)
        return self._circulant(rates), kern[:, index]

    def _field_terms(self, y, s):
        """A, K, F', F'', F''', K(0), v, div v, grad div v at the flat field y."""
        A, K = self._coefficients(s)
        f, d1, d2, d3 = feature_derivatives(y / self.scale)
        centre = K[:, 0, 0]
        v = A @ y + self.scale * jnp.einsum("fnm,fm->n", K, f)
        div = jnp.trace(A) + centre @ jnp.sum(d1, axis=-1)
        grad_div = (centre @ d2) / self.scale
        return A, K, d1, d2, d3, centre, v, div, grad_div

    def velocity(self, x, s):
        """v(phi, s) for one configuration (shape of the lattice)."""
        return self._field_terms(x.reshape(-1), s)[6].reshape(self.h.shape)

    def divergence(self, x, s):
        """div v and grad div v, exact (only the rates and K_{f,s}(0) enter)."""
        terms = self._field_terms(x.reshape(-1), s)
        return terms[7], terms[8].reshape(self.h.shape)

    def _rhs(self, state, s):
        """d/ds of (phi, log p, score[, Hessian of log p]) along a trajectory ([6.14], section 6.3):

        d log p/ds = -div v,   d score/ds = -J^T score - grad div v,
        d Hess/ds = -J^T Hess - Hess J - diag( sum_f (K_f^T score) F_f''/sigma + K_f(0) F_f'''/sigma^2 ),

        with J = dv/dphi = A + sum_f K_f diag(F_f'(u)); v is linear plus feature-wise, so its second
        derivatives are diagonal and everything is in closed form.
        """
        y, _, score = state[:3]
        A, K, d1, d2, d3, centre, v, div, grad_div = self._field_terms(y, s)
        kts = jnp.einsum("fnm,n->fm", K, score)  # (K_f^T score)_m
        jt_score = A.T @ score + jnp.sum(d1 * kts, axis=0)
        out = (v, -div, -jt_score - grad_div)
        if len(state) == 4:
            hess = state[3]
            J = A + jnp.einsum("fnm,fm->nm", K, d1)
            w = jnp.sum(kts * d2, axis=0) / self.scale + (centre @ d3) / self.scale**2
            out = out + (-(J.T @ hess) - hess @ J - jnp.diag(w),)
        return out

    # integration ---------------------------------------------------------------------------
    def flow(self, noise, keep: tuple[int, ...] = (), hessian: bool = False, steps: int | None = None):
        """From white noise (one configuration) to (phi, log p_theta(phi), score[, Lap log p][, path]).

        `hessian`: also propagate the Hessian of log p (V x V) and return its trace (for the
        local-energy form). `keep`: RK4 step indices whose fields are returned as `path` (0 = the
        prior), pictures of the RG-flowed state at RG times t = 1 - step/steps. `steps`: RK4 steps
        (default `self.steps`); the same flow at two step counts measures the integration error
        (`rgdiff.quantum.energy`).
        """
        x0 = self.prior_sample(noise).reshape(-1)
        state = (x0, self.prior_log_prob(x0), self.prior_score(x0).reshape(-1))
        if hessian:
            state = state + (-self._circulant(1.0 / self.prior_variances()),)
        steps = self.steps if steps is None else steps
        if keep:
            state, path = rk4(self._rhs, state, 0.0, 1.0, steps, observe=lambda y: y[0])
        else:
            state = integrate(self._rhs, state, 0.0, 1.0, steps)
        shape = self.h.shape
        out = (state[0].reshape(shape), state[1], state[2].reshape(shape))
        if hessian:
            out = out + (jnp.trace(state[3]),)
        if keep:
            path = jnp.concatenate([x0[None], path], axis=0)[jnp.asarray(keep)]
            out = out + (path.reshape((len(keep),) + shape),)
        return out

    def pullback(self, x, steps: int | None = None):
        """(z, log p_theta(phi)) for one configuration phi: the ODE integrated backwards to the prior
        (z is the prior field the flow maps to phi), log p_theta(phi) = log p_M(z) - int_0^1 div v ds."""
        def rhs(state, s):
            terms = self._field_terms(state[0], s)
            return terms[6], terms[7]

        z, integral = integrate(rhs, (x.reshape(-1), jnp.zeros(())), 1.0, 0.0, self.steps if steps is None else steps)
        # integral = int_1^0 div ds = -int_0^1 div ds, and log p_1 = log p_0 - int_0^1 div ds.
        return z.reshape(self.h.shape), self.prior_log_prob(z) + integral

    def log_prob(self, x, steps: int | None = None):
        """log p_theta(phi) for one configuration, by integrating the ODE backwards to the prior."""
        return self.pullback(x, steps)[1]
