"""Variational energy of Psi = sqrt(p) [6.13] in two forms, the variational gradient, and the
control of the transport's integration error.

With Psi = sqrt(p) and H = -1/2 eps^-d Lap + V:

- score form (what [6.13] integrates to by parts):
      E = E_p[ eps^-d/8 |grad log p|^2 + V ],
- local-energy form, E_loc = (H Psi)/Psi:
      E = E_p[ V - eps^-d/2 ( 1/2 Lap log p + 1/4 |grad log p|^2 ) ].

They agree in expectation (integration by parts); the local form has zero variance at an
eigenstate, the score form does not, and the local form needs Lap log p (an exact Hessian trace,
propagated along the flow as the trace of the (V, V) Hessian of log p, affordable for
<= LAPLACIAN_MAX_SITES sites).

Variational gradient: the reparameterised (pathwise) derivative of the score form,
grad_theta E = E_xi[ grad_theta ( eps^-d/8 |score_theta(phi_theta(xi))|^2 + V(phi_theta(xi)) ) ],
with xi the white noise fed to the flow. It is unbiased because the noise law does not depend on
theta; `tests/quantum/test_quantum_ansatz.py` checks it against the closed-form Gaussian energy.

Integration error. Both forms are energies of a normalized state only when the samples, the score
and Lap log p are those of the exact ODE. The fixed-step RK4 values are not, and a variational
optimizer that descends the RK4 energy finds the flows (large rates and kernels, a narrow prior
expanded fast) whose discretised score is too small: the RK4 energy then falls far below the
ground energy while the state's true energy rises (measured: d = 1, N = 8, lam = 0 after 1000
steps, RK4(16) score form 3.95 and local form -1800, the same flow at 256 steps 32.0 and 25.9,
exact 6.71). Hence:

- training (`training_objective`): the flow runs at n and n/2 steps on the same noise; the
  per-sample score-form energies e_n, e_{n/2} give the RK4 error of e_n to leading order,
  (e_{n/2} - e_n)/15, and the objective is mean(e_n) + w mean|e_n - e_{n/2}|. For w >= 1/15 it is
  (to leading order) never below the exact-transport energy, so descending it cannot profit from
  the error; the default w = 1 also keeps the flow where RK4 at n steps is accurate.
- evaluation (`measure_energy`): step doubling n -> 2n -> 4n ... on the same samples until the
  Richardson estimate of the remaining error, mean(e_n - e_2n)/15 with its standard error, is
  below a tolerance for every form; the estimates are reported at the finest step count.
- `reverse_check`: the samples integrated back to the prior must return to their noise, and the
  backward log p must equal the forward one (a non-invertible or badly integrated flow fails);
  the step doubling goes on until it passes too.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.observables.stats import Estimate
from rgdiff.quantum.ansatz import FlowAnsatz
from rgdiff.quantum.hamiltonian import Hamiltonian

LAPLACIAN_MAX_SITES = 16  # the (V, V) Hessian flow costs O(V^3) per RK4 stage and sample
RICHARDSON = 2**4 - 1  # RK4 is 4th order: err(n) ~ (value(n/2) - value(n)) / 15
INTEGRATION_SIGMA = 0.25  # the transport's error may be at most this fraction of the statistical error
INTEGRATION_RELATIVE = 1e-5  # ... or of |E|, whichever is larger (the local form can have zero variance)
MAX_DOUBLINGS = 4  # evaluation goes up to 16x the training's RK4 steps
REVERSE_SAMPLES = 256
REVERSE_TOLERANCE = 1e-3  # round trip |z - xi-field| / sigma and |log p forward - log p backward| (nats)


def score_form(h: Hamiltonian, phi, score):
    """Per-configuration eps^-d/8 |score|^2 + V(phi)."""
    return h.kinetic_prefactor() / 8.0 * jnp.sum(score**2, axis=h.axes) + h.potential(phi)


def local_form(h: Hamiltonian, phi, score, laplacian):
    """Per-configuration E_loc = V - eps^-d/2 (1/2 Lap log p + 1/4 |grad log p|^2)."""
    grad_sq = jnp.sum(score**2, axis=h.axes)
    return h.potential(phi) - 0.5 * h.kinetic_prefactor() * (0.5 * laplacian + 0.25 * grad_sq)


def mean_estimate(values) -> Estimate:
    """Mean of independent samples with its standard error (tau_int = 1/2)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return Estimate(float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)), 0.5)


def noise(key, h: Hamiltonian, n: int):
    return jax.random.normal(key, (n,) + h.shape)


@eqx.filter_jit
def energy_loss(model: FlowAnsatz, xi):
    """Score-form energy averaged over the batch of white noise `xi` (RK4 at `model.steps`)."""
    x, _, score = jax.vmap(model.flow)(xi)
    return jnp.mean(score_form(model.h, x, score))


def coarse_steps(steps: int) -> int:
    """The step count the training compares with (half, so the error ratio is 2^4)."""
    return max(steps // 2, 1)


@eqx.filter_jit
def training_objective(model: FlowAnsatz, xi, error_weight: float):
    """mean(e_n) + error_weight * mean|e_n - e_{n/2}| over the batch `xi` (module docstring).

    e_k is the per-sample score-form energy with the flow integrated in k RK4 steps, n = model.steps.
    **Returns:** `(objective, (mean e_n, mean |e_n - e_{n/2}|))`; the second is the batch's
    integration gap, whose 1/15 estimates the RK4 error of e_n.
    """
    h = model.h
    x, _, score = jax.vmap(model.flow)(xi)
    fine = score_form(h, x, score)
    xc, _, sc = jax.vmap(lambda z: model.flow(z, steps=coarse_steps(model.steps)))(xi)
    gap = jnp.mean(jnp.abs(fine - score_form(h, xc, sc)))
    energy = jnp.mean(fine)
    return energy + error_weight * gap, (energy, gap)


@eqx.filter_jit
def sample(model: FlowAnsatz, xi, steps: int | None = None):
    """Fields, log p_theta and scores (forward-propagated) for a batch of white noise."""
    return jax.vmap(lambda z: model.flow(z, steps=steps))(xi)


@eqx.filter_jit
def sample_with_laplacian(model: FlowAnsatz, xi, steps: int | None = None):
    """Fields, log p, scores and Lap log p (forward-propagated Hessian) for a batch of white noise."""
    return jax.vmap(lambda z: model.flow(z, hessian=True, steps=steps))(xi)


def estimate_energy(model: FlowAnsatz, key, samples: int, chunk: int = 512, local: bool | None = None,
                    steps: int | None = None) -> dict:
    """Score-form and (where affordable) local-form energies on the same samples, with errors,
    the flow integrated in `steps` RK4 steps (default `model.steps`).

    Returns the per-sample arrays too, for observables and tests. The samples depend on `key`
    only, so two calls at different `steps` see the same noise (paired differences).
    """
    h = model.h
    if local is None:
        local = h.sites <= LAPLACIAN_MAX_SITES
    steps = int(steps or model.steps)
    traced = jnp.asarray(steps)  # a traced step count: one compilation for every count
    xs, score_vals, local_vals = [], [], []
    for i, start in enumerate(range(0, samples, chunk)):
        n = min(chunk, samples - start)
        xi = noise(jax.random.fold_in(key, i), h, chunk)  # always a full chunk: one compiled shape
        if local:
            x, _, score, lap = (a[:n] for a in sample_with_laplacian(model, xi, traced))
            local_vals.append(np.asarray(local_form(h, x, score, lap)))
        else:
            x, _, score = (a[:n] for a in sample(model, xi, traced))
        xs.append(np.asarray(x))
        score_vals.append(np.asarray(score_form(h, x, score)))
    out = {"fields": np.concatenate(xs), "score_values": np.concatenate(score_vals), "steps": steps}
    out["score_form"] = mean_estimate(out["score_values"])
    if local:
        out["local_values"] = np.concatenate(local_vals)
        out["local_form"] = mean_estimate(out["local_values"])
    return out


FORMS = ("score_form", "local_form")
_VALUES = {"score_form": "score_values", "local_form": "local_values"}


def richardson_error(coarse: np.ndarray, fine: np.ndarray) -> Estimate:
    """The RK4 error (value - exact-transport value) of mean(fine) from paired per-sample values at
    n (coarse) and 2n (fine) steps: e_n - e_2n = (2^4 - 1) err(e_2n) to leading order, so
    mean(coarse - fine) / 15, with its standard error."""
    return mean_estimate((np.asarray(coarse) - np.asarray(fine)) / RICHARDSON)


def integration_tolerance(form: Estimate) -> float:
    return max(INTEGRATION_SIGMA * (form.error or 0.0), INTEGRATION_RELATIVE * abs(form.value))


def measure_energy(model: FlowAnsatz, key, samples: int, *, chunk: int = 512, local: bool | None = None,
                   max_doublings: int = MAX_DOUBLINGS, reverse_key=None, callback=None) -> dict:
    """`estimate_energy` with the transport's error under control: double the RK4 steps from
    `model.steps` until (a) the Richardson error of every form is below `integration_tolerance`
    (|mean| + 2 standard errors) and (b) `reverse_check` passes at that step count, or until
    `max_doublings` doublings (>= 1).

    **Returns:** `estimate_energy`'s dict at the finest step count, plus `integration`:
    {"steps": the step counts used, "converged" (a), per form an `Estimate` of the remaining error
    and its "tolerance"}, and `reverse` (`reverse_check` at the final step count, noise from
    `reverse_key`, default a key derived from `key`). `callback(done, total)` after each solve.
    """
    if max_doublings < 1:
        raise ValueError("measure_energy needs at least one doubling to estimate the error")
    reverse_key = jax.random.fold_in(key, 0xFFFFFFFF) if reverse_key is None else reverse_key
    steps = model.steps
    prev = estimate_energy(model, key, samples, chunk, local, steps)
    tried, reverse = [steps], None
    for k in range(max_doublings):
        if callback is not None:
            callback(k + 1, max_doublings + 1)
        steps *= 2
        cur = estimate_energy(model, key, samples, chunk, local, steps)
        tried.append(steps)
        errors, ok = {}, True
        for form in FORMS:
            if form not in cur:
                continue
            err = richardson_error(prev[_VALUES[form]], cur[_VALUES[form]])
            tol = integration_tolerance(cur[form])
            errors[form] = {"error": err, "tolerance": tol}
            ok &= bool(abs(err.value) + 2.0 * err.error <= tol)
        prev = cur
        reverse = reverse_check(model, reverse_key, steps) if ok else None
        if ok and reverse["ok"]:
            break
    if reverse is None:
        reverse = reverse_check(model, reverse_key, steps)
    if callback is not None:
        callback(max_doublings + 1, max_doublings + 1)
    prev["integration"] = {"steps": tried, "converged": ok, **errors}
    prev["reverse"] = reverse
    return prev


@eqx.filter_jit
def _round_trip(model: FlowAnsatz, xi, steps):
    def one(z):
        x, logp, _ = model.flow(z, steps=steps)
        back, logp_back = model.pullback(x, steps)
        return jnp.max(jnp.abs(back - model.prior_sample(z))), logp - logp_back

    return jax.vmap(one)(xi)


def reverse_check(model: FlowAnsatz, key, steps: int, samples: int = REVERSE_SAMPLES) -> dict:
    """Integrate samples forward (noise -> phi, log p) and back (phi -> z, log p) at `steps` RK4 steps.

    **Returns:** {"samples", "steps", "field" (max |z - prior field| / sigma), "log_prob"
    (max |log p forward - log p backward|), "tolerance", "ok"}.
    """
    field, dlogp = _round_trip(model, noise(key, model.h, samples), jnp.asarray(steps))
    field = float(jnp.max(field)) / model.scale
    dlogp = float(jnp.max(jnp.abs(dlogp)))
    ok = math.isfinite(field) and math.isfinite(dlogp) and max(field, dlogp) <= REVERSE_TOLERANCE
    return {"samples": samples, "steps": steps, "field": field, "log_prob": dlogp, "tolerance": REVERSE_TOLERANCE,
            "ok": bool(ok)}
