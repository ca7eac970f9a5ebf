"""Objectives of the RG-time flow against Gaussian closed forms: reverse KL [5.5], the KL(p_t || p_t^theta)
term of [5.22], and the exact IMH move of the UV chain with the flow as proposal."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff.objectives.cnf import flowed_log_likelihood, reverse_kl_loss, rg_loss, sample_rg_times
from rgdiff.samplers import imh
from rgdiff.generate.transport import sample
from rgdiff.theory.gaussian import gaussian_field_log_prob, sample_gaussian_field
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.rg import make_scheme
from rgdiff.theory.phi4 import Phi4

LAT = Lattice(2, 4, 1.0)
SCHEME = make_scheme("carosso", M=1.0)
FREE = Phi4(LAT, 0.5, 0.0)  # the free UV theory: closed forms everywhere
STEPS = 32


@pytest.fixture(scope="module")
def linear_flow():
    """A linear flow (linear feature, one time bump): p_t^theta is Gaussian with spectrum
    G_T(p) exp(-2 khat(p) (1 - s(t))), khat the kernel's Fourier transform."""
    flow = ContinuousFlow(LAT, 3.0, frequencies=2, time_bumps=1)
    w = jnp.zeros_like(flow.weights).at[0, 0, :].set(0.25 * jax.random.normal(jax.random.key(7), flow.weights.shape[-1:]))
    return eqx.tree_at(lambda m: m.weights, flow, w)


def model_spectrum(flow, t):
    khat = jnp.fft.fftn(flow.kernels(0.0)[0]).real
    return SCHEME.prior_spectrum(LAT, half=False) * jnp.exp(-2.0 * khat * (1.0 - flow.s_of_t(t)))


def gaussian_log_prob_at_zero(spectrum_full):
    half = spectrum_full[..., : LAT.size // 2 + 1]
    return float(gaussian_field_log_prob(jnp.zeros(LAT.shape), LAT, half))


def test_reverse_kl_matches_closed_form(linear_flow):
    """E_q[log q + S] = KL(q || p_0) + log p_0(0), KL = 1/2 sum_p (r - 1 - log r), r = G_q / G_0."""
    loss, (phi, log_q) = reverse_kl_loss(linear_flow, SCHEME, FREE, jax.random.key(1), 4000, STEPS)
    per = np.asarray(log_q + FREE.action(phi))
    r = np.asarray(model_spectrum(linear_flow, 0.0) * (LAT.phat_sq() + FREE.m2))
    exact = 0.5 * np.sum(r - 1 - np.log(r)) + gaussian_log_prob_at_zero(FREE.free_propagator())
    assert float(loss) == pytest.approx(per.mean())
    assert abs(per.mean() - exact) < 5 * per.std() / np.sqrt(per.size)
    assert np.std(per) > 0  # the flow is not the target: the test has power


def test_flowed_log_likelihood_matches_cross_entropy(linear_flow):
    """-E_{p_t}[log p_t^theta] = -log q_t(0) + 1/2 sum_p G_t(p) / G_t^theta(p), G_t = a_t^2 G_0 + v_t."""
    t = 0.05
    uv = sample_gaussian_field(jax.random.key(2), LAT, 1.0 / (LAT.phat_sq_half() + FREE.m2), (4000,))
    log_p = np.asarray(flowed_log_likelihood(linear_flow, SCHEME, jax.random.key(3), uv, STEPS, times=jnp.full((4000,), t)))
    a, v = SCHEME.kernel(t, LAT, half=False)
    g_true = a**2 * FREE.free_propagator() + v
    g_model = model_spectrum(linear_flow, t)
    exact = -gaussian_log_prob_at_zero(g_model) + 0.5 * float(jnp.sum(g_true / g_model))
    assert abs(-log_p.mean() - exact) < 5 * log_p.std() / np.sqrt(log_p.size)


def test_rg_loss_is_reverse_plus_weighted_cross_entropy(linear_flow):
    uv = sample_gaussian_field(jax.random.key(4), LAT, 1.0 / (LAT.phat_sq_half() + FREE.m2), (8,))
    loss, (_, _, reverse, cross) = rg_loss(linear_flow, SCHEME, FREE, jax.random.key(5), uv, 8, rg_weight=0.3)
    assert float(loss) == pytest.approx(float(reverse) + 0.3 * float(cross))


def test_rg_times_cover_all_scales(linear_flow):
    t = np.asarray(sample_rg_times(linear_flow, jax.random.key(0), 20000, jnp.float64))
    assert t.min() >= 0 and t.max() <= linear_flow.horizon
    # s uniform: the fraction below t0 is log(2) / log(1 + T / t0)
    frac = np.mean(t < linear_flow.time_floor)
    assert frac == pytest.approx(np.log(2) / linear_flow.log_span, abs=4 * np.sqrt(frac / 20000))


def test_exact_flow_gives_unit_ess_and_full_acceptance():
    """Theory = the prior (free field of mass M = 1) and the identity flow: q = p exactly."""
    theory = Phi4(LAT, 1.0, 0.0)
    flow = ContinuousFlow(LAT, 2.0)
    phi, log_q = sample(flow, SCHEME, jax.random.key(0), 64, 0.0, steps=2)
    log_w = -theory.action(phi) - log_q
    assert float(imh.importance_ess(log_w)) == pytest.approx(1.0, abs=1e-12)
    logdensity = theory.logdensity_fn()
    states = jax.vmap(lambda x, lq: imh.init(x, lq, logdensity))(phi[::-1], log_q[::-1])
    keys = jax.random.split(jax.random.key(1), phi.shape[0])
    new, info = jax.vmap(imh.build_kernel(), in_axes=(0, 0, 0, 0, None))(keys, states, phi, log_q, logdensity)
    assert bool(jnp.all(info.is_accepted)) and bool(jnp.all(new.position == phi))
