"""Convergence order of the fixed-step solvers against closed forms (diffrax's `test_ode_order` habit).

For each solver the error against the exact answer is measured at 3 step counts and the slope of
log(error) against log(dt) is fitted; it must lie within 0.3 of the solver's order. Every quantity
is deterministic (one fixed configuration, no sample averages), so a test cannot pass by noise.

- RK4 of `rgdiff.generate.transport.integrate` on a linear velocity field
  g(phi, s) = r cos(s) phi (elementwise rates r): phi(s1) = phi(s0) exp(r (sin s1 - sin s0)),
  and the log-density increment int div g ds = sum(r) (sin s1 - sin s0). Order 4.
- The probability-flow ODE [6.14] (`decode`) with the exact free-field score
  (`GaussianFlowScore`): per mode the flow is linear and keeps the marginal G_t = a_t^2 G_0 + v_t
  (`rgdiff.rg.flowed_spectrum`), so it maps phi_T to F^-1[sqrt(G_0 / G_T) F phi_T] exactly.
  Euler 1, Heun 2, Bosh3 3 (fixed "log" grid: uniform in a smooth reparametrization of t).
- Euler-Maruyama for the reverse SDE [5.25] (`reverse_sde`), weak order 1: the solver is linear
  in phi_T for a Gaussian score, so with one key the difference of the outputs for phi_T and for 0
  is the discrete conditional-mean map applied to phi_T, noise-free. The exact one is the
  posterior mean E[phi~_0 | phi~_T] = a_T G_0 / G_T phi~_T per mode.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice
from rgdiff.generate.diffusion import decode, reverse_sde
from rgdiff.generate.transport import integrate
from rgdiff.models.gaussian_score import GaussianFlowScore
from rgdiff.rg import Carosso, flowed_spectrum
from rgdiff.theory.gaussian import free_field_spectrum, sample_gaussian_field

SCHEME = Carosso(1.0)


def fitted_order(steps, errors) -> float:
    """Slope of log(error) against log(dt), dt ~ 1 / steps."""
    return float(np.polyfit(-np.log(np.asarray(steps, float)), np.log(np.asarray(errors, float)), 1)[0])


def relative_error(x, exact) -> float:
    return float(jnp.max(jnp.abs(x - exact)) / jnp.max(jnp.abs(exact)))


class _LinearField(eqx.Module):
    """g(phi, s) = r cos(s) phi: the two methods `integrate` calls on a `ContinuousFlow`."""

    rates: jax.Array

    def velocity(self, phi, s):
        return self.rates * jnp.cos(s) * phi

    def divergence(self, phi, s):
        return jnp.cos(s) * jnp.sum(self.rates)


def test_rk4_transport_is_fourth_order():
    field = _LinearField(jnp.linspace(-1.5, 1.0, 16).reshape(4, 4))
    phi0 = jax.random.normal(jax.random.key(0), (4, 4), jnp.float64)
    s0, s1 = 1.0, -1.0  # decoding runs s downwards
    growth = jnp.sin(s1) - jnp.sin(s0)
    exact_phi, exact_delta = phi0 * jnp.exp(field.rates * growth), jnp.sum(field.rates) * growth
    steps = (4, 8, 16)
    run = eqx.filter_jit(integrate)
    err_phi, err_delta = [], []
    for n in steps:
        phi, delta = run(field, phi0, s0, s1, n)
        err_phi.append(relative_error(phi, exact_phi))
        err_delta.append(abs(float(delta - exact_delta)) / abs(float(exact_delta)))
    assert abs(fitted_order(steps, err_phi) - 4) < 0.3, err_phi
    assert abs(fitted_order(steps, err_delta) - 4) < 0.3, err_delta


# the probability-flow ODE and the reverse SDE on the free field -------------------------------

LAT = Lattice(2, 4, 2.0)  # eps = 1/2: every eps^d factor enters
M2_UV = 4.0
T_ODE = 6.0


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2), ("bosh3", 3)])
def test_probability_flow_ode_order(solver, order):
    model = GaussianFlowScore.free_field(LAT, SCHEME, M2_UV)
    g0 = free_field_spectrum(LAT, M2_UV)
    gT = flowed_spectrum(SCHEME, LAT, g0, T_ODE)
    phi_T = sample_gaussian_field(jax.random.key(0), LAT, gT, (1,))
    exact = LAT.fourier_multiply(phi_T, jnp.sqrt(g0 / gT))
    steps = (8, 16, 32)
    errors = []
    for n in steps:
        phi, _ = decode(model, SCHEME, phi_T, T=T_ODE, steps=n, solver=solver, grid="log", log_prob=False)
        errors.append(relative_error(phi, exact))
    assert abs(fitted_order(steps, errors) - order) < 0.3, errors


def test_reverse_sde_euler_maruyama_is_weak_order_one():
    # lattice units (beta_max = 8 + M^2 = 9) and T = 2 on a uniform grid: h beta_max <= 9/8 at
    # 16 steps, inside Euler's stability region, so no step is split (max_step = T)
    lattice = Lattice.lattice_units(2, 4)
    T, m2 = 2.0, 1.0
    model = GaussianFlowScore.free_field(lattice, SCHEME, m2)
    g0 = free_field_spectrum(lattice, m2)
    gT = flowed_spectrum(SCHEME, lattice, g0, T)
    a_T, _ = SCHEME.kernel(T, lattice)
    phi_T = sample_gaussian_field(jax.random.key(0), lattice, gT, (2,))
    exact_mean = lattice.fourier_multiply(phi_T, a_T * g0 / gT)
    steps = (16, 32, 64)
    errors = []
    for n in steps:
        key = jax.random.key(n)
        options = dict(T=T, steps=n, solver="euler", grid="uniform", max_step=T)
        mean = reverse_sde(model, SCHEME, key, phi_T, **options) - reverse_sde(model, SCHEME, key, 0 * phi_T, **options)
        errors.append(relative_error(mean, exact_mean))
    assert abs(fitted_order(steps, errors) - 1) < 0.3, errors
