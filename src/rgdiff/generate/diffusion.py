"""Generating fields from a score model: the reverse SDE [5.25] and the probability-flow ODE [6.14].

The forward RG flow of a linear scheme (`rgdiff.rg`) is the SDE ::

    d phi = f(phi, t) dt + G_t dW,   f = F^-1[-beta_t F phi],   G_t G_t^T = eps^-d F^-1 gamma_t F,

with W a standard Wiener process per site (`rgdiff.rg.sde`). Given a score model
s_theta(phi, t) ~ grad log p_t(phi) (`rgdiff.models.base.AbstractScoreModel`), two processes run
it backwards from the scheme's p_T (its stationary law, exact samples and density) to t_end >= 0:

- the reverse SDE [5.25]: d phi = [f - G G^T s_theta] dt + G dW-bar, t running from T down to
  t_end (`sample_reverse_sde`, `reverse_sde`). Works for any model and any linear scheme. The
  default solver ("exp") is an exponential integrator around an exact Gaussian reference, see
  below.
- the probability-flow ODE [6.14]: d phi / dt = v(phi, t) = f - 1/2 G G^T s_theta, which has the
  same marginals p_t when s_theta is exact, and is a deterministic, invertible map. Along a
  trajectory d/dt log p_t(phi_t) = -div v (continuity equation), so ::

      log p^theta_{t_end}(phi_{t_end}) = log p_T(phi_T) + int_{t_end}^T div v(phi_t, t) dt,

  with div v = -sum_p beta_t(p) - 1/2 eps^-d gamma_t div s_theta when gamma_t(p) = gamma_t does
  not depend on p (Carosso: gamma = 2 noise speed). The sum runs over the FULL momentum grid (the
  drift is diagonal in the unitary plane-wave basis with eigenvalues -beta_t(p)).
  `sample_ode`/`decode` generate (T -> t_end) and `encode`/`log_likelihood` go back (0 -> T).

Exact likelihoods therefore need (i) a model with an exact divergence
(`rgdiff.models.base.AbstractExactScoreModel`) and (ii) a scheme whose noise is white (gamma
p-independent): for a coloured noise the divergence of G G^T s_theta needs off-diagonal Jacobian
entries of s_theta, which no cheap exact formula gives (`likelihood_available` says whether both
hold). Both are refused with a clear error; SDE sampling and ODE sampling without the
log-density work for any model and scheme. `ode_proposal` packs the checked ODE setup as an
`AbstractProposal` (draws with their exact log q, and log q of given fields) for exact samplers
such as the bridge (`rgdiff.samplers.bridge`).

Time grid. A mode p relaxes on the time scale 1/beta_t(p), so near t = 0 the UV modes (up to
beta ~ Lambda_0^2) move fast and at late times only the IR ones do (v_t ~ 2t, a_t ~ 1 - w t at
small t). The default grid ("log") is uniform in u = log(1 + t / t_c) with t_c = 1 / max_p
beta_0(p) (`characteristic_time`; the warp `rgdiff.rg.time.LogTime` with floor t_c): steps of about t_c du at t << t_c, growing geometrically
(t du) beyond, so every mode sees about the same number of steps per e-fold of its relaxation.
"uniform" is also offered. Fixed grids use `diffrax.StepTo`; the ODE also accepts an adaptive
`diffrax.PIDController` (give `rtol`). The reverse SDE also splits steps longer than
1 / max_p beta_t(p): its drift stays stiff on relaxed UV modes (see `reverse_sde`), the ODE's
does not.

Which sampler is faithful. On the UV modes of a fine lattice both processes are stiff: the drift
of mode p is a cancellation of two terms of size beta_t(p) ~ |phat|^2 (up to Lambda_0^2 = 3200 at
the paper's point). In the probability-flow ODE that cancellation is neutrally stable: a relative
error e of the learned score in a relaxed mode gives that mode a drift e beta, so its amplitude
drifts by exp(e beta T) over the horizon T, without limit (measured on an EFT model at the
paper's point whose per-mode Stein ratios -V <s~(p) phi~(p)*> were within 1-5% of the exact 1 on
the true p_t: the generated power spectrum came out 10^2-10^4 times the true one at t = 0, for
every solver tolerance). The reverse SDE contracts the same modes at rate ~beta, so the same
error only shifts their variance by ~e. Its explicit solvers need steps below 1/beta_max
(`stability_caps`: ~T Lambda_0^2 steps); the exponential integrator ("exp") does not:

    phi~_s = rho phi~_t + w (gamma_t / eps^d) delta~(phi_t, t) + sqrt(G_s v_{t|s} / (G_t L^d)) z,

for a step t -> s < t, per mode, with G_t = a_t^2 P_ref + v_t the exact flowed spectrum of a
Gaussian reference (P_ref: the data's power spectrum where known, else the stationary law's),
rho = a_{t|s} G_s / G_t and G_s v_{t|s} / G_t the reference's exact reverse transition (Gaussian
ancestral sampling), delta = s_theta + F^-1[eps^d phi~ / G_t] the model's departure from the
reference score, and w = h (1 - rho) / (-log rho) the integrating factor of a constant forcing
over the step (h = t - s). With the exact score of a Gaussian of spectrum P_ref the step is exact
for any h; otherwise only delta is treated explicitly, and on the UV modes it is small.

All functions act on batches `(*batch, *lattice)` by `jax.vmap` of one-configuration functions;
solves are jitted (`equinox.filter_jit`), and the time grid is a traced array, so changing T or
t_end does not recompile.
"""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSamplerSettingsError, InvalidSchemeError, RgdiffError
from rgdiff.generate.proposal import AbstractProposal
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.base import AbstractExactScoreModel, AbstractScoreModel
from rgdiff.rg.base import AbstractLinearScheme, check_times
from rgdiff.rg.time import LogTime
from rgdiff.theory.gaussian import as_complex, gaussian_field_log_prob, sample_gaussian_field, standard_half_spectrum_noise

__all__ = [
    "LikelihoodUnavailableError",
    "ODEProposal",
    "ODE_SOLVERS",
    "SDE_SOLVERS",
    "characteristic_time",
    "check_likelihood_available",
    "decode",
    "encode",
    "forward_drift",
    "likelihood_available",
    "log_likelihood",
    "noise_covariance_apply",
    "ode_proposal",
    "probability_flow_divergence",
    "probability_flow_field",
    "reverse_drift",
    "reverse_sde",
    "sample_ode",
    "sample_reverse_sde",
    "cap_steps",
    "stability_caps",
    "time_grid",
]

ODE_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "ralston": diffrax.Ralston,
    "midpoint": diffrax.Midpoint,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
}
# "euler" is a hand-written Euler-Maruyama scan; the rest go through diffrax.diffeqsolve. The scan
# stays because diffrax.Euler through the same MultiTerm is slower at the same law (measured on the
# CPU, 4 x 4 lattice, 256 configurations, 375 steps: 0.70 s hand-written, 1.08 s with an
# UnsafeBrownianPath, 16.5 s with the default VirtualBrownianTree; compile 26 s vs 53 s).
# Heun converges to the Stratonovich solution, which equals the Ito one for additive noise;
# ShARK and SRA1 are the additive-noise Runge-Kutta methods (strong order 1.5).
SDE_SOLVERS = ("exp", "euler", "heun", "shark", "sra1")
GRIDS = ("log", "uniform")
BROWNIAN_PATHS = ("virtual", "unsafe")


class LikelihoodUnavailableError(RgdiffError):
    """An exact likelihood was asked of a score model without an exact divergence."""


# the vector fields (one configuration) -------------------------------------------------------


def _rates(scheme: AbstractLinearScheme, lattice: Lattice, t, dtype):
    return scheme.rates(jnp.asarray(t, dtype), lattice, dtype)


def forward_drift(scheme: AbstractLinearScheme, lattice: Lattice, phi, t):
    """f(phi, t) = F^-1[-beta_t F phi], the drift of the forward RG SDE (one configuration)."""
    beta, _ = _rates(scheme, lattice, t, phi.dtype)
    return lattice.fourier_multiply(phi, -beta)


def noise_covariance_apply(scheme: AbstractLinearScheme, lattice: Lattice, x, t):
    """G_t G_t^T x = eps^-d F^-1[gamma_t F x] (one configuration)."""
    _, gamma = _rates(scheme, lattice, t, x.dtype)
    return lattice.fourier_multiply(x, gamma / lattice.spacing**lattice.dim)


def _combined(model, scheme, phi, t, weight):
    """F^-1[-beta F phi - weight eps^-d gamma F s_theta(phi, t)] with one inverse transform."""
    lattice = model.lattice
    beta, gamma = _rates(scheme, lattice, t, phi.dtype)
    score = model(phi, t)
    modes = lattice.rfourier(phi)
    score_modes = lattice.rfourier(score)
    noise = weight * gamma / lattice.spacing**lattice.dim
    out = as_complex(-beta, modes) * modes - as_complex(noise, score_modes) * score_modes
    return lattice.inverse_rfourier(out).astype(phi.dtype)


def reverse_drift(model: AbstractScoreModel, scheme: AbstractLinearScheme, phi, t):
    """f - G G^T s_theta(phi, t), the drift of the reverse SDE [5.25] in the time t (run backwards)."""
    return _combined(model, scheme, phi, t, 1.0)


def probability_flow_field(model: AbstractScoreModel, scheme: AbstractLinearScheme, phi, t):
    """v(phi, t) = f - 1/2 G G^T s_theta(phi, t), the probability-flow ODE [6.14]."""
    return _combined(model, scheme, phi, t, 0.5)


def probability_flow_divergence(model: AbstractScoreModel, scheme: AbstractLinearScheme, phi, t):
    """div v = -sum_{p, full grid} beta_t(p) - 1/2 eps^-d gamma_t div s_theta(phi, t).

    Valid only for p-independent gamma_t (checked by `check_likelihood_available`, not here: this
    function is called inside solvers); gamma is read at the zero mode.
    """
    lattice = model.lattice
    beta, gamma = _rates(scheme, lattice, t, phi.dtype)
    weights = jnp.asarray(lattice.half_multiplicity(), phi.dtype)
    trace_drift = -jnp.sum(weights * beta)
    white = gamma.reshape(-1)[0] / lattice.spacing**lattice.dim
    return trace_drift - 0.5 * white * model.divergence(phi, t)


# time grids ----------------------------------------------------------------------------------


def _default_float():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def characteristic_time(scheme: AbstractLinearScheme, lattice: Lattice) -> float:
    """t_c = 1 / max_p |beta_0(p)|, the relaxation time of the fastest mode at t = 0 (inf if none)."""
    beta, _ = scheme.rates(0.0, lattice, _default_float())
    fastest = float(jnp.max(jnp.abs(beta)))
    return 1.0 / fastest if fastest > 0 else math.inf


def time_grid(t_lo: float, t_hi: float, steps: int, t_c: float = math.inf, grid: str = "log") -> np.ndarray:
    """`steps + 1` increasing times from `t_lo` to `t_hi` (float64 numpy).

    "log": uniform in u = log(1 + t / t_c), i.e. t = t_c expm1(u); "uniform": uniform in t (also
    what "log" becomes for t_c = inf).
    """
    if grid not in GRIDS:
        raise InvalidSamplerSettingsError(f"unknown time grid {grid!r}; choose one of {', '.join(GRIDS)}")
    return LogTime(t_hi, t_c if grid == "log" else math.inf).grid(t_lo, t_hi, steps)


def cap_steps(ts: np.ndarray, max_step) -> np.ndarray:
    """Split every interval of the increasing grid `ts` longer than `max_step` into equal parts.

    `max_step` is a number or an array of one cap per interval (`len(ts) - 1`).
    """
    caps = np.broadcast_to(np.asarray(max_step, dtype=np.float64), (len(ts) - 1,))
    pieces = [ts[:1]]
    for lo, hi, cap in zip(ts[:-1], ts[1:], caps):
        parts = max(1, int(math.ceil((hi - lo) / cap * (1 - 1e-12))))
        pieces.append(np.linspace(lo, hi, parts + 1)[1:])
    return np.concatenate(pieces)


def stability_caps(scheme: AbstractLinearScheme, lattice: Lattice, ts: np.ndarray) -> np.ndarray:
    """Per interval of `ts`: 1 / max_p |beta_t(p)| over its two ends (the fastest local rate)."""
    beta, _ = scheme.rates(np.asarray(ts, dtype=np.float64), lattice, _default_float())
    fastest = np.max(np.abs(np.asarray(beta)).reshape(len(ts), -1), axis=1)
    fastest = np.maximum(fastest[:-1], fastest[1:])
    return np.where(fastest > 0, 1.0 / np.maximum(fastest, 1e-300), np.inf)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidSamplerSettingsError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _grid(scheme, lattice, t_lo, t_hi, steps, grid):
    check_times(t_hi, t_lo)
    t_lo, t_hi = float(t_lo), float(t_hi)
    if t_hi == t_lo:
        raise InvalidSchemeError(f"the integration interval is empty: t_end = T = {t_hi}")
    return time_grid(t_lo, t_hi, _check_count("steps", steps), characteristic_time(scheme, lattice), grid)


# checks --------------------------------------------------------------------------------------


def _check_model(model, scheme) -> Lattice:
    if not isinstance(model, AbstractScoreModel):
        raise InvalidSamplerSettingsError(f"expected a score model (AbstractScoreModel), got {type(model).__name__}")
    if not isinstance(scheme, AbstractLinearScheme):
        raise InvalidSchemeError(f"expected a linear RG scheme, got {scheme!r}")
    return model.lattice


def _white_noise(scheme: AbstractLinearScheme, lattice: Lattice, times) -> bool:
    """Whether gamma_t(p) is the same on every mode p at each of `times` and their midpoints."""
    times = np.asarray(times, dtype=np.float64)
    probe = np.concatenate([times, 0.5 * (times[1:] + times[:-1])])
    _, gamma = scheme.rates(probe, lattice, _default_float())
    gamma = np.asarray(gamma).reshape(len(probe), -1)
    spread = gamma.max(axis=1) - gamma.min(axis=1)
    return not np.any(spread > 1e-12 * np.maximum(np.abs(gamma).max(axis=1), 1e-300))


def likelihood_available(model: AbstractScoreModel, scheme: AbstractLinearScheme, times=(0.0, 1.0)) -> bool:
    """Whether the probability-flow ODE gives `model` an exact likelihood under `scheme`: the model
    has an exact divergence (`AbstractExactScoreModel`) and the scheme's noise is white (gamma_t
    p-independent) at `times` (`check_likelihood_available` checks the solver's own grid)."""
    return isinstance(model, AbstractExactScoreModel) and _white_noise(scheme, _check_model(model, scheme), times)


def check_likelihood_available(model: AbstractScoreModel, scheme: AbstractLinearScheme, times) -> None:
    """Refuse an exact likelihood where it does not exist.

    - `LikelihoodUnavailableError` for a model without an exact divergence (not an
      `AbstractExactScoreModel`);
    - `InvalidSchemeError` for a scheme whose noise rate gamma_t(p) depends on p at any of
      `times` (the solver's grid and its midpoints): then div(G G^T s_theta) is not
      gamma_t div s_theta.
    """
    lattice = _check_model(model, scheme)
    if not isinstance(model, AbstractExactScoreModel):
        raise LikelihoodUnavailableError(
            f"{type(model).__name__} has no exact divergence, so the probability-flow likelihood is "
            "unavailable; use a model with an exact divergence (an AbstractExactScoreModel; sampling "
            "works without it)"
        )
    if not _white_noise(scheme, lattice, times):
        raise InvalidSchemeError(
            f"the exact likelihood is only available for schemes with p-independent noise such as "
            f"Carosso; the scheme {scheme.describe().get('name')!r} has a momentum-dependent noise "
            "rate gamma_t(p), for which div(G G^T s) needs the off-diagonal Jacobian of the score "
            "(sample with the reverse SDE or the ODE without log-density instead)"
        )


def _prior(scheme, lattice, prior_spectrum, dtype, name: str = "prior_spectrum"):
    """The half-grid spectrum of the Gaussian p_T: the scheme's stationary law unless given."""
    half_shape = lattice.half_shape
    if prior_spectrum is None:
        return scheme.prior_spectrum(lattice, dtype)  # InvalidSchemeError if there is none
    spectrum = jnp.asarray(prior_spectrum, dtype)
    if spectrum.shape != half_shape:
        raise InvalidSchemeError(f"{name} must have the half-grid shape {half_shape}, got {spectrum.shape}")
    if not bool(jnp.all(spectrum > 0)):
        raise InvalidSchemeError(f"{name} must be positive on every mode")
    return spectrum


def _flatten(phi, lattice: Lattice):
    lattice.check_field(phi)
    phi = jnp.asarray(phi)
    if not jnp.issubdtype(phi.dtype, jnp.floating):
        raise InvalidSamplerSettingsError(f"fields must be real floating-point arrays, got dtype {phi.dtype}")
    batch = phi.shape[: phi.ndim - lattice.dim]
    return phi.reshape((-1,) + lattice.shape), batch


# the probability-flow ODE [6.14] -------------------------------------------------------------


def _ode_solver(name: str):
    if name not in ODE_SOLVERS:
        raise InvalidSamplerSettingsError(f"unknown ODE solver {name!r}; choose one of {', '.join(ODE_SOLVERS)}")
    return ODE_SOLVERS[name]()


def _flow_one(model, scheme, phi, ts, solver, rtol, atol, max_steps, with_log_prob):
    """Integrate [6.14] along `ts` (increasing or decreasing) for one configuration.

    Returns (phi at ts[-1], ell) with d ell / dt = -div v along the path (ell = 0 at ts[0]), i.e.
    ell = log p(phi_end, ts[-1]) - log p(phi_start, ts[0]) for the model's flow.
    """

    def field(t, y, args):
        phi, _ = y
        v = probability_flow_field(model, scheme, phi, t)
        if not with_log_prob:
            return v, jnp.zeros((), phi.dtype)
        return v, -probability_flow_divergence(model, scheme, phi, t)

    if rtol is None:
        controller, dt0 = diffrax.StepTo(ts=ts), None
    else:
        controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), ts[1] - ts[0]
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        ts[0],
        ts[-1],
        dt0,
        (phi, jnp.zeros((), phi.dtype)),
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    phi_end, ell = solution.ys
    return phi_end[0], ell[0]


@eqx.filter_jit
def _flow_batch(model, scheme, phi, ts, solver, rtol, atol, max_steps, with_log_prob):
    return jax.vmap(lambda y: _flow_one(model, scheme, y, ts, solver, rtol, atol, max_steps, with_log_prob))(phi)


class _ODEPlan(eqx.Module):
    """A checked ODE setup: the grid (increasing times), solver and controller options."""

    ts: jax.Array
    solver: diffrax.AbstractSolver
    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)


def _ode_plan(model, scheme, t_lo, t_hi, steps, solver, grid, rtol, atol, max_steps, with_log_prob, dtype):
    lattice = _check_model(model, scheme)
    ts = _grid(scheme, lattice, t_lo, t_hi, steps, grid)
    if with_log_prob:
        check_likelihood_available(model, scheme, ts)
    if rtol is not None:
        rtol = float(rtol)
        atol = rtol * 1e-2 if atol is None else float(atol)
        if not (rtol > 0 and atol > 0):
            raise InvalidSamplerSettingsError(f"rtol and atol must be > 0, got {rtol}, {atol}")
    if max_steps is None:
        max_steps = len(ts) - 1 if rtol is None else 64 * len(ts)
    return _ODEPlan(jnp.asarray(ts, dtype), _ode_solver(solver), rtol, atol, int(max_steps))


def _run_plan(model, scheme, plan: _ODEPlan, phi, forward: bool, with_log_prob: bool):
    ts = plan.ts if forward else plan.ts[::-1]
    return _flow_batch(model, scheme, phi, ts, plan.solver, plan.rtol, plan.atol, plan.max_steps, with_log_prob)


class ODEProposal(AbstractProposal):
    """q = p^theta_{t_end} of an exact score model: the probability-flow ODE [6.14] from p_T at T
    down to t_end, with the exact log-density (build it with `ode_proposal`).

    `sample(key, n)` draws phi_T ~ p_T and decodes; `log_prob(fields)` encodes `(n, *lattice)`
    fields back to T. Both run the same checked grid and solver.

    The latent phi_T is also exposed, for samplers that move in it (`rgdiff.samplers.tempering`):
    `sample_prior(key, shape)` draws phi_T ~ p_T, `decode(phi_T)` and `encode(fields)` map
    between the two ends with the exact log-density, and `regridded(ts)` puts the same model on
    another time grid of the same length (e.g. another t_end; `ts` may be traced, so one compiled
    solve serves a whole ladder of t_end under `jax.vmap`).
    """

    model: AbstractExactScoreModel
    scheme: AbstractLinearScheme = eqx.field(static=True)
    plan: _ODEPlan
    prior: jax.Array
    dtype: np.dtype = eqx.field(static=True)

    @property
    def lattice(self) -> Lattice:
        return self.model.lattice

    @property
    def grid(self) -> jax.Array:
        """The increasing time grid, from t_end to T (shape `(steps + 1,)`)."""
        return self.plan.ts

    def regridded(self, ts: jax.Array) -> "ODEProposal":
        """The same proposal on the increasing grid `ts` of the same length (t_end = ts[0], T = ts[-1]);
        not checked (build grids with `ode_proposal(...).grid`)."""
        return eqx.tree_at(lambda p: p.plan.ts, self, jnp.asarray(ts, self.plan.ts.dtype))

    def sample_prior(self, key, shape=()) -> jax.Array:
        """phi_T ~ p_T exactly, shape `(*shape, *lattice)`."""
        return sample_gaussian_field(key, self.lattice, self.prior, tuple(shape), self.dtype)

    def decode(self, phi_T):
        """`(phi, log q)`: latents `(n, *lattice)` at T decoded to t_end, with log q = log p^theta_{t_end}(phi)."""
        phi, ell = _run_plan(self.model, self.scheme, self.plan, phi_T, forward=False, with_log_prob=True)
        return phi, gaussian_field_log_prob(phi_T, self.lattice, self.prior) + ell

    def encode(self, fields):
        """`(phi_T, log q)`: fields `(n, *lattice)` at t_end encoded to T, with their log q at t_end."""
        phi_T, ell = _run_plan(self.model, self.scheme, self.plan, fields, forward=True, with_log_prob=True)
        return phi_T, gaussian_field_log_prob(phi_T, self.lattice, self.prior) - ell

    def sample(self, key, n: int):
        return self.decode(self.sample_prior(key, (n,)))

    def log_prob(self, fields):
        return self.encode(fields)[1]


def ode_proposal(
    model: AbstractExactScoreModel,
    scheme: AbstractLinearScheme,
    *,
    T: float,
    t_end: float = 0.0,
    steps: int = 64,
    solver: str = "tsit5",
    grid: str = "log",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    prior_spectrum=None,
    dtype=jnp.float64,
) -> ODEProposal:
    """The checked `ODEProposal` of `model` (options as in `decode`; refuses a model or scheme
    without an exact likelihood, see `check_likelihood_available`)."""
    dtype = jnp.dtype(dtype)
    lattice = _check_model(model, scheme)
    plan = _ode_plan(model, scheme, t_end, T, steps, solver, grid, rtol, atol, max_steps, True, dtype)
    return ODEProposal(model, scheme, plan, _prior(scheme, lattice, prior_spectrum, dtype), dtype)


def decode(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    phi_T,
    *,
    T: float,
    t_end: float = 0.0,
    steps: int = 64,
    solver: str = "tsit5",
    grid: str = "log",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    prior_spectrum=None,
    log_prob: bool = True,
):
    """Integrate the probability-flow ODE [6.14] from given fields at time T down to `t_end`.

    **Arguments:**

    - `model`, `scheme`: the score model (its `lattice` is used) and the linear RG scheme.
    - `phi_T`: fields `(*batch, *lattice)` at time T (float32 or float64, kept).
    - `T`, `t_end`: start and end times, 0 <= t_end < T.
    - `steps`, `grid`: the fixed time grid (`time_grid`); with `rtol` it only sets the first step.
    - `solver`: a name of `ODE_SOLVERS` (default "tsit5", 5th order).
    - `rtol`, `atol`: give `rtol` for an adaptive PID step-size controller (atol default rtol/100).
    - `max_steps`: solver step limit (default: the grid size, or 64x it when adaptive).
    - `prior_spectrum`: half-grid spectrum of the Gaussian p_T (default: the scheme's stationary
      law; pass e.g. the exact marginal `rgdiff.rg.flowed_spectrum(...)` at finite T).
    - `log_prob`: also integrate the log-density (needs an exact likelihood, see module doc).

    **Returns:** `(phi, log_q)`: the fields at `t_end` and log p^theta_{t_end}(phi) (shape
    `batch`), or `None` for `log_q` when `log_prob` is False.
    """
    lattice = _check_model(model, scheme)
    flat, batch = _flatten(phi_T, lattice)
    plan = _ode_plan(model, scheme, t_end, T, steps, solver, grid, rtol, atol, max_steps, log_prob, flat.dtype)
    prior = _prior(scheme, lattice, prior_spectrum, flat.dtype) if log_prob else None
    phi, ell = _run_plan(model, scheme, plan, flat, forward=False, with_log_prob=log_prob)
    phi = phi.reshape(batch + lattice.shape)
    if not log_prob:
        return phi, None
    return phi, (gaussian_field_log_prob(flat, lattice, prior) + ell).reshape(batch)


def sample_ode(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    key,
    n: int,
    *,
    T: float,
    t_end: float = 0.0,
    steps: int = 64,
    solver: str = "tsit5",
    grid: str = "log",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    prior_spectrum=None,
    dtype=jnp.float64,
    log_prob: bool = True,
):
    """Generate `n` fields: phi_T ~ p_T exactly, then the probability-flow ODE [6.14] down to `t_end`.

    Options as in `decode`. **Returns:** `(phi, log_q)`, `phi` of shape `(n, *lattice)` and
    `log_q` = log p^theta_{t_end}(phi) of shape `(n,)` (None if `log_prob` is False).
    """
    lattice = _check_model(model, scheme)
    n = _check_count("n", n)
    prior = _prior(scheme, lattice, prior_spectrum, jnp.dtype(dtype))
    phi_T = sample_gaussian_field(key, lattice, prior, (n,), jnp.dtype(dtype))
    return decode(
        model, scheme, phi_T, T=T, t_end=t_end, steps=steps, solver=solver, grid=grid, rtol=rtol, atol=atol,
        max_steps=max_steps, prior_spectrum=prior, log_prob=log_prob,
    )


def encode(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    phi,
    *,
    T: float,
    t_start: float = 0.0,
    steps: int = 64,
    solver: str = "tsit5",
    grid: str = "log",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    prior_spectrum=None,
):
    """The inverse map: integrate [6.14] from `t_start` up to T and return the exact log-density.

    log p^theta_{t_start}(phi) = log p_T(phi_T) + int_{t_start}^T div v(phi_t, t) dt.

    Options as in `decode`. **Returns:** `(phi_T, log_q)` with `log_q` of shape `batch`.
    """
    lattice = _check_model(model, scheme)
    flat, batch = _flatten(phi, lattice)
    plan = _ode_plan(model, scheme, t_start, T, steps, solver, grid, rtol, atol, max_steps, True, flat.dtype)
    prior = _prior(scheme, lattice, prior_spectrum, flat.dtype)
    phi_T, ell = _run_plan(model, scheme, plan, flat, forward=True, with_log_prob=True)
    log_prior = gaussian_field_log_prob(phi_T, lattice, prior)
    return phi_T.reshape(batch + lattice.shape), (log_prior - ell).reshape(batch)


def log_likelihood(model: AbstractScoreModel, scheme: AbstractLinearScheme, phi, *, T: float, **options):
    """log p^theta_0(phi) through `encode` (same options). **Returns:** shape `batch`."""
    return encode(model, scheme, phi, T=T, **options)[1]


# the reverse SDE [5.25] ----------------------------------------------------------------------


def _noise_amplitude(scheme, lattice, t, dtype):
    """The half-grid multiplier of G_t: eps^-d/2 sqrt(gamma_t(p))."""
    _, gamma = _rates(scheme, lattice, t, dtype)
    return jnp.sqrt(gamma / lattice.spacing**lattice.dim)


def _euler_one(model, scheme, key, phi, ts):
    """Euler-Maruyama along decreasing `ts`: phi <- phi - h (f - G G^T s) + G sqrt(h) z."""
    lattice = model.lattice

    def step(phi, k):
        t, t_next = ts[k], ts[k + 1]
        h = t - t_next
        z = jax.random.normal(jax.random.fold_in(key, k), lattice.shape, phi.dtype)
        noise = lattice.fourier_multiply(z, _noise_amplitude(scheme, lattice, t, phi.dtype))
        return phi - h * reverse_drift(model, scheme, phi, t) + jnp.sqrt(h) * noise, None

    phi, _ = jax.lax.scan(step, phi, jnp.arange(ts.shape[0] - 1))
    return phi


class _FourierControlTerm(diffrax.ControlTerm):
    """ControlTerm whose vector field is a half-grid real multiplier applied to dW by FFT.

    Returning the multiplier as a plain array (not a lineax operator) lets the additive-noise
    Runge-Kutta solvers (ShARK, SRA1) form g(t1) - g(t0) leafwise, which is exact by linearity.
    """

    lattice: Lattice = eqx.field(static=True)

    def __init__(self, vector_field, control, lattice):
        super().__init__(vector_field, control)
        self.lattice = lattice

    def prod(self, vf, control):
        return self.lattice.fourier_multiply(control, vf)


def _diffrax_sde_one(model, scheme, key, phi, ts, solver, brownian, tol):
    """The reverse SDE in s = T - t (so diffrax runs forward): dy = -(f - G G^T s) ds + G dW_s."""
    lattice = model.lattice
    T = ts[0]
    s_grid = T - ts  # increasing from 0 to T - t_end

    def time(s):
        return jnp.maximum(T - s, 0.0)  # T - (T - t_end) may round below 0

    def drift(s, y, args):
        return -reverse_drift(model, scheme, y, time(s))

    def diffusion(s, y, args):
        return _noise_amplitude(scheme, lattice, time(s), y.dtype)

    levy = diffrax.SpaceTimeLevyArea if isinstance(solver, (diffrax.ShARK, diffrax.SRA1)) else diffrax.BrownianIncrement
    shape = jax.ShapeDtypeStruct(lattice.shape, phi.dtype)
    if brownian == "virtual":
        path = diffrax.VirtualBrownianTree(s_grid[0], s_grid[-1], tol=tol, shape=shape, key=key, levy_area=levy)
    else:
        path = diffrax.UnsafeBrownianPath(shape=shape, key=key, levy_area=levy)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), _FourierControlTerm(diffusion, path, lattice))
    solution = diffrax.diffeqsolve(
        terms,
        solver,
        s_grid[0],
        s_grid[-1],
        None,
        phi,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.StepTo(ts=s_grid),
        max_steps=ts.shape[0] - 1,
        # an UnsafeBrownianPath cannot be checkpointed; nothing is differentiated here anyway
        adjoint=diffrax.ForwardMode() if brownian == "unsafe" else diffrax.RecursiveCheckpointAdjoint(),
    )
    return solution.ys[0]


def _exponential_one(model, scheme, key, phi, ts, reference):
    """The exponential integrator along decreasing `ts` (see the module docstring). `reference`:
    (P_ref, vacuum): with vacuum > 0 the reference's zero mode is centred at +-vacuum a_t(0), on
    the side of the field's current magnetization (one Gaussian per vacuum)."""
    lattice = model.lattice
    eps_d = lattice.spacing**lattice.dim
    spectrum, vacuum = reference
    zero = (0,) * lattice.dim

    def step(phi, k):
        t, s = ts[k], ts[k + 1]
        a, v = scheme.transition(s, t, lattice, phi.dtype)
        a_t, v_t = scheme.kernel(t, lattice, phi.dtype)  # once per time: G and the centre both need a
        a_s, v_s = scheme.kernel(s, lattice, phi.dtype)
        g_t, g_s = a_t**2 * spectrum + v_t, a_s**2 * spectrum + v_s  # rg.flowed_spectrum, kernel shared
        rho = a * g_s / g_t
        log_rho = jnp.log(rho)
        h = t - s
        small = jnp.abs(log_rho) < 1e-8
        weight = jnp.where(small, h, h * (1.0 - rho) / jnp.where(small, -1.0, -log_rho))
        _, gamma = _rates(scheme, lattice, t, phi.dtype)
        side = jnp.where(jnp.mean(phi) >= 0, 1.0, -1.0).astype(phi.dtype)
        modes = lattice.rfourier(phi - vacuum * a_t[zero] * side)  # the departure from the reference's mean
        score_modes = lattice.rfourier(model(phi, t))
        delta = score_modes + as_complex(eps_d / g_t, modes) * modes  # the departure from the reference score
        z = standard_half_spectrum_noise(jax.random.fold_in(key, k), lattice, (), phi.dtype)
        out = (as_complex(rho, modes) * modes + as_complex(weight * gamma / eps_d, delta) * delta
               + as_complex(jnp.sqrt(g_s * v / (g_t * lattice.volume)), z) * z)
        return (lattice.inverse_rfourier(out) + vacuum * a_s[zero] * side).astype(phi.dtype), None

    phi, _ = jax.lax.scan(step, phi, jnp.arange(ts.shape[0] - 1))
    return phi


@eqx.filter_jit
def _reverse_batch(model, scheme, keys, phi, ts, solver, brownian, tol, reference):
    if solver == "exp":
        return jax.vmap(lambda k, y: _exponential_one(model, scheme, k, y, ts, reference))(keys, phi)
    if solver == "euler":
        return jax.vmap(lambda k, y: _euler_one(model, scheme, k, y, ts))(keys, phi)
    solver_obj = {"heun": diffrax.Heun, "shark": diffrax.ShARK, "sra1": diffrax.SRA1}[solver]()
    return jax.vmap(lambda k, y: _diffrax_sde_one(model, scheme, k, y, ts, solver_obj, brownian, tol))(keys, phi)


def reverse_sde(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    key,
    phi_T,
    *,
    T: float,
    t_end: float = 0.0,
    steps: int = 512,
    solver: str | None = None,
    grid: str = "log",
    brownian: str = "virtual",
    max_step: float | None = None,
    reference_spectrum=None,
    reference_vacuum: float = 0.0,
):
    """Integrate the reverse SDE [5.25] from given fields at time T down to `t_end`.

    **Arguments:**

    - `model`, `scheme`: the score model (any; no divergence needed) and the linear scheme.
    - `key`: a JAX PRNG key; each configuration gets its own noise.
    - `phi_T`: fields `(*batch, *lattice)` at time T.
    - `T`, `t_end`: 0 <= t_end < T.
    - `steps`, `grid`: the fixed time grid (`time_grid`, default "log"), then every step longer
      than `max_step` is split (`cap_steps`), so the solver takes at least `steps` steps.
    - `reference_spectrum`: P_ref, the half-grid spectrum at t = 0 of the "exp" solver's Gaussian
      reference (default: the scheme's stationary law; give the data's `Lattice.power_spectrum`
      when known; for a scheme without a stationary law "exp" needs it, and the default solver
      is then "euler").
    - `reference_vacuum`: in the broken phase, <|M|> of the data: the reference's zero mode is then
      a Gaussian of variance P_ref(0) / L^d about +-reference_vacuum a_t(0), on the side of each
      field's current magnetization (give P_ref(0) as the variance within one vacuum, see
      `rgdiff.observables.compare.reference_spectrum`). Default 0: one Gaussian about 0.
    - `max_step` (explicit solvers only): default: locally 1 / max_p |beta_t(p)| (`stability_caps`). Unlike the ODE,
      whose field nearly vanishes on relaxed modes, the reverse drift keeps contracting the UV
      modes at rate ~beta(p) at all times (for a relaxed mode gamma / G_t = 2 beta, so
      f - G G^T s = +beta phi per mode, run backwards), so explicit solvers need
      h beta_max <~ 1 for stability. The errors made on those steps are forgotten (damped at
      rate beta) before t_end, where the "log" grid is fine. The cost is ~ T beta_max steps:
      the ODE is much cheaper on fine lattices.
    - `solver`: "exp" (the exponential integrator of the module docstring, no step cap; the
      default when there is a reference: a given `reference_spectrum` or a stationary law),
      "euler" (hand-written Euler-Maruyama; the default otherwise), or through `diffrax.diffeqsolve` "heun", "shark" or
      "sra1" (additive-noise Runge-Kutta, strong order 1.5).
    - `brownian`: for the diffrax solvers, "virtual" (`VirtualBrownianTree`, tolerance a quarter
      of the smallest step) or "unsafe" (`UnsafeBrownianPath`: statistically the same for these
      fixed-step, forward-only solves and ~10x faster on CPU).

    **Returns:** the fields at `t_end`, shape and dtype of `phi_T`.
    """
    lattice = _check_model(model, scheme)
    if solver is None:
        # the exponential integrator needs a Gaussian reference at t = 0; a scheme without a
        # stationary law (Polchinski: phi_t -> 0) offers none, and its p_T is no stand-in for one
        solver = "exp" if (reference_spectrum is not None or scheme.has_prior) else "euler"
    if solver not in SDE_SOLVERS:
        raise InvalidSamplerSettingsError(f"unknown SDE solver {solver!r}; choose one of {', '.join(SDE_SOLVERS)}")
    if brownian not in BROWNIAN_PATHS:
        raise InvalidSamplerSettingsError(
            f"unknown Brownian path {brownian!r}; choose one of {', '.join(BROWNIAN_PATHS)}"
        )
    flat, batch = _flatten(phi_T, lattice)
    ts = _grid(scheme, lattice, t_end, T, steps, grid)
    reference = None
    if solver == "exp":
        if reference_spectrum is None and not scheme.has_prior:
            raise InvalidSchemeError(
                f"the exponential integrator needs a reference spectrum: the scheme {scheme.describe().get('name')!r} "
                "has no stationary law; pass reference_spectrum (e.g. the data's power spectrum) or use solver='euler'"
            )
        if isinstance(reference_vacuum, bool) or not (isinstance(reference_vacuum, (int, float)) and reference_vacuum >= 0
                                                      and math.isfinite(reference_vacuum)):
            raise InvalidSamplerSettingsError(f"reference_vacuum must be a finite number >= 0, got {reference_vacuum!r}")
        reference = (_prior(scheme, lattice, reference_spectrum, flat.dtype, "reference_spectrum"),
                     jnp.asarray(reference_vacuum, flat.dtype))
    elif max_step is None:
        ts = cap_steps(ts, stability_caps(scheme, lattice, ts))
    elif isinstance(max_step, bool) or not (isinstance(max_step, (int, float)) and max_step > 0):
        raise InvalidSamplerSettingsError(f"max_step must be a number > 0, got {max_step!r}")
    else:
        ts = cap_steps(ts, float(max_step))
    ts = ts[::-1].copy()  # decreasing: T -> t_end
    tol = float(np.min(-np.diff(ts))) / 4.0
    keys = jax.random.split(key, flat.shape[0])
    ts, tol = jnp.asarray(ts, flat.dtype), jnp.asarray(tol, flat.dtype)
    out = _reverse_batch(model, scheme, keys, flat, ts, solver, brownian, tol, reference)
    return out.reshape(batch + lattice.shape)


def sample_reverse_sde(
    model: AbstractScoreModel,
    scheme: AbstractLinearScheme,
    key,
    n: int,
    *,
    T: float,
    t_end: float = 0.0,
    steps: int = 512,
    solver: str | None = None,
    grid: str = "log",
    brownian: str = "virtual",
    max_step: float | None = None,
    prior_spectrum=None,
    reference_spectrum=None,
    reference_vacuum: float = 0.0,
    dtype=jnp.float64,
):
    """Generate `n` fields: phi_T ~ p_T exactly, then the reverse SDE [5.25] down to `t_end`.

    Options as in `reverse_sde`; `prior_spectrum` as in `decode`. **Returns:** `(n, *lattice)`.
    """
    lattice = _check_model(model, scheme)
    n = _check_count("n", n)
    k_prior, k_path = jax.random.split(key)
    prior = _prior(scheme, lattice, prior_spectrum, jnp.dtype(dtype))
    phi_T = sample_gaussian_field(k_prior, lattice, prior, (n,), jnp.dtype(dtype))
    return reverse_sde(
        model, scheme, k_path, phi_T, T=T, t_end=t_end, steps=steps, solver=solver, grid=grid, brownian=brownian,
        max_step=max_step, reference_spectrum=reference_spectrum, reference_vacuum=reference_vacuum,
    )
