"""Training a score model on UV data with Optax (denoising score matching, `rgdiff.objectives`).

The loop is `rgdiff.train.loop.fit` (one jitted step, parameter average, checkpoints, exact
resume, the non-finite rule); each step draws its batch inside the step from the UV ensemble, with
random Z2 flips phi -> -phi (an exact symmetry of the theory and of every linear scheme, so the
model learns both vacua even when the chains never tunnel).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgdiff.errors import InvalidSchemeError, RgdiffError
from rgdiff.lattice.geometry import Lattice
from rgdiff.models.base import AbstractExactScoreModel
from rgdiff.objectives.score_matching import training_loss
from rgdiff import parallel
from rgdiff.models.base import cast_model
from rgdiff.train.loop import fit


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimization settings.

    - `steps`: gradient steps; `batch`: UV configurations per step.
    - `learning_rate`, decayed exponentially by `decay_rate` every `decay_steps` (Optax).
    - `b1`, `b2`: Adam moments.
    - `horizon`: T, the largest RG time trained on (the prior p_T is used beyond it).
    - `t_min`: smallest time sampled, as a fraction of T.
    - `dtype`: "float32" (fast) or "float64".
    - `log_every`: steps between metric records.
    - `ema`: decay of an exponential moving average of the parameters (0: off), returned
      instead of the last iterate; kept in the optimizer state, so checkpoints carry it.
    - `anchor_weight`: weight of the implicit score-matching anchor at t = 0
      (`rgdiff.objectives.anchor_loss`), used for `AbstractExactScoreModel`s; 0 turns it off.
    - `zero_mode_target`: "marginal" (the zero mode's DSM target is its exact marginal score,
      `rgdiff.objectives.zero_mode_marginal_score`) or "dsm" (the plain conditional score).
    """

    steps: int = 2000
    batch: int = 64
    learning_rate: float = 3e-3
    decay_rate: float = 0.1
    decay_steps: int = 4000
    b1: float = 0.9
    b2: float = 0.999
    horizon: float = 1.0
    t_min: float = 1e-4
    dtype: str = "float32"
    log_every: int = 50
    anchor_weight: float = 1.0
    ema: float = 0.995
    zero_mode_target: str = "marginal"

    def __post_init__(self):
        for name in ("steps", "batch", "decay_steps", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise RgdiffError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("learning_rate", "horizon"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise RgdiffError(f"{name} must be a finite number > 0, got {v!r}")
        if not (isinstance(self.anchor_weight, (int, float)) and math.isfinite(self.anchor_weight) and self.anchor_weight >= 0):
            raise RgdiffError(f"anchor_weight must be a finite number >= 0, got {self.anchor_weight!r}")
        if not (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1):
            raise RgdiffError(f"ema must be a number in [0, 1), got {self.ema!r}")
        if not 0 < self.t_min < 1:
            raise RgdiffError(f"t_min is a fraction of T in (0, 1), got {self.t_min}")
        if self.dtype not in ("float32", "float64"):
            raise RgdiffError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.zero_mode_target not in ("marginal", "dsm"):
            raise RgdiffError(f"zero_mode_target must be marginal or dsm, got {self.zero_mode_target!r}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)

    def schedule(self) -> optax.Schedule:
        return optax.exponential_decay(self.learning_rate, self.decay_steps, self.decay_rate)

    def optimizer(self) -> optax.GradientTransformation:
        """Adam on `schedule`; `train` adds the parameter average (`rgdiff.train.loop.with_parameter_average`)."""
        return optax.adam(self.schedule(), b1=self.b1, b2=self.b2)


def train(
    model,
    scheme,
    lattice: Lattice,
    fields: np.ndarray,
    settings: TrainSettings,
    *,
    key,
    callback: Callable[[str, int, int], None] | None = None,
    on_log: Callable[[dict], None] | None = None,
    checkpoint=None,
    mesh=None,
):
    """Train `model` by denoising score matching; returns the trained model.

    **Arguments:**

    - `fields`: UV configurations, shape (n, *lattice) or (chains, samples, *lattice).
    - `on_log(record, model)`: called every `settings.log_every` steps with
      {"step", "loss", "learning_rate", "seconds"} (the loss averaged since the last record)
      and the current model.
    - `checkpoint`: a `rgdiff.io.checkpoint.Checkpointer`: the run starts from its saved state (if
      resuming) and saves (model, optimizer state) every `checkpoint.every` steps. The key of step
      i is fold_in(key, i), so a resumed run is bitwise the uninterrupted one (on the CPU).
    - `mesh`: a 1-D device mesh (`rgdiff.parallel.batch_mesh`) to split each batch over (data
      parallel; parameters replicated); default: as many devices as divide `settings.batch`.
    """
    dtype = jnp.dtype(settings.dtype)
    data = np.asarray(fields, dtype=dtype).reshape(-1, *lattice.shape)
    if data.shape[0] < 2:
        raise RgdiffError(f"need at least 2 UV configurations to train, got {data.shape[0]}")
    model = cast_model(model, dtype)
    schedule = settings.schedule()
    horizon, t_min = settings.horizon, settings.t_min * settings.horizon
    anchor = settings.anchor_weight if isinstance(model, AbstractExactScoreModel) else 0.0
    mesh = mesh if mesh is not None else parallel.mesh_for_batch(settings.batch)
    parallel.check_divisible(settings.batch, mesh)

    # the UV magnetizations, symmetrized like the batches (phi -> -phi): the zero mode's exact marginal
    m0 = np.mean(data, axis=tuple(range(1, data.ndim)))
    m0 = np.concatenate([m0, -m0]) if settings.zero_mode_target == "marginal" else None

    def loss_fn(model, state, data, key):
        fields, m0 = data
        k_idx, k_flip, k_loss = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (settings.batch,), 0, fields.shape[0])
        flips = jnp.where(jax.random.bernoulli(k_flip, 0.5, (settings.batch,)), 1.0, -1.0).astype(fields.dtype)
        batch = fields[idx] * flips.reshape(-1, *([1] * lattice.dim))
        batch = parallel.constrain_batch(batch, mesh)  # data parallel: split over the mesh
        return training_loss(model, scheme, lattice, batch, k_loss, horizon, t_min, anchor, m0), (state, {})

    def log(record, current):
        on_log({"step": record["step"], "loss": record["loss"], "learning_rate": float(schedule(record["step"] - 1)),
                "seconds": record["seconds"]}, current)

    trained, _ = fit(model, settings.optimizer(), loss_fn, key=key, steps=settings.steps,
                   data=(jnp.asarray(data), None if m0 is None else jnp.asarray(m0)),
                   ema=settings.ema, log_every=settings.log_every, on_log=log if on_log is not None else None,
                   callback=callback, stage="training", checkpoint=checkpoint, mesh=mesh)
    if m0 is not None and getattr(trained, "zero_mode_features", 0) > 0:
        trained = fit_zero_mode(trained, scheme, lattice, m0, data, horizon, key=jax.random.fold_in(key, settings.steps))
    return trained


ZERO_MODE_FIT_SAMPLES = 32768


def fit_zero_mode(model, scheme, lattice: Lattice, m0: np.ndarray, fields: np.ndarray, horizon: float, *, key,
                  samples: int = ZERO_MODE_FIT_SAMPLES, ridge: float = 1e-8):
    """Solve the EFT model's zero-mode term in closed form: least squares of its weights W against
    the exact marginal score of M_t (`rgdiff.objectives.zero_mode_marginal_score`).

    g(M, t) is linear in W, so the weights that make the model's zero-mode component
    sum_n s(phi_t)(n) closest to the exact marginal score of M_t, over `samples` draws of t (uniform
    in the zero mode's warped time, where the two vacua separate) and phi_t (the symmetrized UV data
    pushed through the exact kernel), weighted by the width sigma_M(t) of M_t within a vacuum (so
    that relative errors count alike at every t), are one linear solve. Gradient descent reaches them only slowly: the zero mode is one of V modes of the loss,
    and its score needs percent precision where the vacua separate (a_t(0) <|M_0|> ~ a few
    widths), or generated trajectories lag there and the mid-t G2(0) comes out ~2x too wide.
    **Returns:** the model with the solved weights (its other parameters untouched).
    """
    import equinox as eqx

    from rgdiff.objectives.score_matching import zero_mode_marginal_score

    dtype = jnp.float64
    work = cast_model(model, dtype)
    zero = eqx.tree_at(lambda m: m.zero_mode_weights, work, jnp.zeros_like(work.zero_mode_weights))
    flat = jnp.asarray(fields, dtype).reshape(-1, *lattice.shape)
    k_t, k_idx, k_flip, k_push = jax.random.split(key, 4)
    # t uniform in the zero mode's warped time u = log(1 + r t) / log(1 + r T)
    warp = work.zero_mode_embedding.warp
    u = (jnp.arange(samples, dtype=dtype) + jax.random.uniform(k_t, (), dtype)) / samples
    t = jnp.expm1(u * jnp.log1p(warp)) * horizon / warp
    idx = jax.random.randint(k_idx, (samples,), 0, flat.shape[0])
    flips = jnp.where(jax.random.bernoulli(k_flip, 0.5, (samples,)), 1.0, -1.0).astype(dtype)
    phi0 = flat[idx] * flips.reshape((-1,) + (1,) * lattice.dim)
    phi_t = scheme.push_forward(k_push, phi0, t, lattice)
    a, v = scheme.kernel(t, lattice, dtype)
    origin = (slice(None),) + (0,) * lattice.dim
    a0, v0 = a[origin], v[origin]
    m0_all = jnp.asarray(m0, dtype)
    # in chunks of t as well: the mixture is then a (256, score_matching.MIXTURE_CHUNK) array per block
    target = jax.lax.map(
        lambda xs: zero_mode_marginal_score(xs[0][None], m0_all, xs[1][None], xs[2][None])[0],
        (jnp.mean(phi_t, axis=lattice.axes), a0, v0 / lattice.volume), batch_size=256,
    )

    @jax.jit
    def features(phi, t):
        rest = jnp.sum(zero(phi, t))  # the zero-mode component of everything but the term
        jac = jax.jacfwd(lambda w: eqx.tree_at(lambda m: m.zero_mode_weights, zero, w)._zero_mode_term(phi, t)[0])
        return rest, jac(jnp.zeros_like(zero.zero_mode_weights)).reshape(-1)

    rest, design = jax.lax.map(lambda xs: features(*xs), (phi_t, t), batch_size=256)
    # weights sigma_M(t): every t counts by the relative error of the score, error x sigma_M(t), with
    # sigma_M(t)^2 = a_t(0)^2 var|M_0| + v_t(0) / L^d the width of M_t within a vacuum. (The DSM
    # weight v_t(0) L^d starves small t, where the generated G2(0) is decided: 5-6% off with it.)
    weight = jnp.sqrt(a0**2 * jnp.var(jnp.abs(m0_all)) + v0 / lattice.volume)
    a_mat = np.asarray(design * weight[:, None])
    b_vec = np.asarray((target - rest) * weight)
    gram = a_mat.T @ a_mat
    solution = np.linalg.solve(gram + ridge * np.trace(gram) / gram.shape[0] * np.eye(gram.shape[0]), a_mat.T @ b_vec)
    weights = jnp.asarray(solution.reshape(model.zero_mode_weights.shape), model.zero_mode_weights.dtype)
    return eqx.tree_at(lambda m: m.zero_mode_weights, model, weights)


def default_horizon(scheme, fields: np.ndarray, lattice: Lattice, tol: float = 1e-2) -> float:
    """The RG time T at which p_T is indistinguishable from the scheme's stationary law.

    The memory of the UV in mode p is a_T(p) phi~_0(p); we ask that its rms be below `tol` times
    the kernel noise sqrt(v_T(p) / L^d) in every mode, using the data's power per mode. Bisection
    in log T. Needs a scheme with a stationary law (e.g. Carosso with M > 0).
    """
    if not scheme.has_prior:
        raise InvalidSchemeError(
            f"the scheme {scheme.describe().get('name')!r} has no stationary law to start generation from; "
            "use carosso with M > 0"
        )
    power = lattice.power_spectrum(fields)

    def ok(t):
        a, v = (np.asarray(x) for x in scheme.kernel(t, lattice))
        return bool(np.all(a**2 * power <= tol**2 * v))

    lo, hi = 1e-6, 1.0
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise InvalidSchemeError("no horizon T up to 1e6 forgets the UV; is M > 0?")
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return float(hi)
