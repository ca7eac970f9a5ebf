"""Training a score model on UV data with Optax (denoising score matching, `rgdiff.objectives`).

The step is one `eqx.filter_jit`-compiled function of (model, optimizer state, batch, key), so it
compiles once; batches are drawn on the host from the UV ensemble with random Z2 flips
phi -> -phi (an exact symmetry of the theory and of every linear scheme, so the model learns both
vacua even when the chains never tunnel).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgdiff.train import parallel
from rgdiff.errors import RgdiffError
from rgdiff.lattice.geometry import Lattice
from rgdiff.objectives.score_matching import training_loss


class NonFiniteLossError(RgdiffError):
    """The training loss became NaN or infinite."""


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
      (`rgdiff.objectives.anchor_loss`), used for models with an exact divergence; 0 turns it off.
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

    def describe(self) -> dict:
        return dataclasses.asdict(self)

    def optimizer(self) -> optax.GradientTransformation:
        schedule = optax.exponential_decay(self.learning_rate, self.decay_steps, self.decay_rate)
        adam = optax.adam(schedule, b1=self.b1, b2=self.b2)
        return optax.chain(adam, _parameter_average(self.ema)) if self.ema > 0 else adam


def _parameter_average(decay: float) -> optax.GradientTransformation:
    """Leaves the updates alone and keeps ema <- decay ema + (1 - decay) (params + updates) in its
    state, bias-corrected like Adam's moments (`averaged_parameters` reads it)."""

    def init(params):
        return (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))

    def update(updates, state, params):
        ema, count = state
        new = jax.tree.map(lambda e, p, u: decay * e + (1 - decay) * (p + u), ema, params, updates)
        return updates, (new, count + 1)

    return optax.GradientTransformation(init, update)


def averaged_parameters(model, opt_state, decay: float):
    """The model with the bias-corrected parameter average of `_parameter_average`."""
    ema, count = opt_state[-1]
    correction = 1.0 - decay ** count.astype(jnp.float64)
    averaged = jax.tree.map(lambda e: (e / correction).astype(e.dtype), ema)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return eqx.combine(averaged, static)


def cast_model(model, dtype):
    """The model with every floating-point array cast to `dtype`."""
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model)


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
    - `checkpoint`: a `rgdiff.checkpoint.Checkpointer`: the run starts from its saved state (if
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
    opt = settings.optimizer()
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    schedule = optax.exponential_decay(settings.learning_rate, settings.decay_steps, settings.decay_rate)
    horizon, t_min = settings.horizon, settings.t_min * settings.horizon
    anchor = settings.anchor_weight if getattr(model, "has_exact_divergence", False) else 0.0
    mesh = mesh if mesh is not None else parallel.mesh_for_batch(settings.batch)
    parallel.check_divisible(settings.batch, mesh)

    @eqx.filter_jit
    def step(model, opt_state, data, key):
        k_idx, k_flip, k_loss = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (settings.batch,), 0, data.shape[0])
        flips = jnp.where(jax.random.bernoulli(k_flip, 0.5, (settings.batch,)), 1.0, -1.0).astype(data.dtype)
        batch = data[idx] * flips.reshape(-1, *([1] * lattice.dim))
        batch = parallel.constrain_batch(batch, mesh)  # data parallel: split over the mesh
        loss, grads = eqx.filter_value_and_grad(training_loss)(
            model, scheme, lattice, batch, k_loss, horizon, t_min, anchor
        )
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    # one code path for 1 or n devices: parameters and data replicated, each batch split (above)
    model, opt_state = parallel.replicate((model, opt_state), mesh)
    data = parallel.replicate(jnp.asarray(data), mesh)
    callback = callback or (lambda *a: None)
    t0 = time.perf_counter()
    running, count, start = 0.0, 0, 0
    if checkpoint is not None:
        start, model, opt_state, (running, count) = checkpoint.restore_training(model, opt_state)
    for i in range(start, settings.steps):
        model, opt_state, loss = step(model, opt_state, data, jax.random.fold_in(key, i))
        loss = float(loss)
        if not math.isfinite(loss):
            kept = f"; {checkpoint.last_good()}" if checkpoint is not None else ""
            raise NonFiniteLossError(f"the training loss became {loss} at step {i}; lower the learning rate{kept}")
        running += loss
        count += 1
        if (i + 1) % settings.log_every == 0 or i + 1 == settings.steps:
            record = {
                "step": i + 1,
                "loss": running / count,
                "learning_rate": float(schedule(i)),
                "seconds": time.perf_counter() - t0,
            }
            running, count = 0.0, 0
            if on_log is not None:
                on_log(record, model)
        callback("training", i + 1, settings.steps)
        if checkpoint is not None:
            checkpoint.after_training_step(i + 1, model, opt_state, (running, count))
    if settings.ema > 0:
        return averaged_parameters(model, opt_state, settings.ema)
    return model


def default_horizon(scheme, fields: np.ndarray, lattice: Lattice, tol: float = 1e-2) -> float:
    """The RG time T at which p_T is indistinguishable from the scheme's stationary law.

    The memory of the UV in mode p is a_T(p) phi~_0(p); we ask that its rms be below `tol` times
    the kernel noise sqrt(v_T(p) / L^d) in every mode, using the data's power per mode. Bisection
    in log T. Needs a scheme with a stationary law (e.g. Carosso with M > 0).
    """
    from rgdiff.errors import InvalidSchemeError

    if not getattr(scheme, "has_prior", False):
        raise InvalidSchemeError(
            f"the scheme {scheme.describe().get('name')!r} has no stationary law to start generation from; "
            "use carosso with M > 0"
        )
    flat = np.asarray(fields, dtype=np.float64).reshape(-1, *lattice.shape)
    power = lattice.volume * np.mean(np.abs(np.fft.rfftn(flat, axes=lattice.axes) / lattice.sites) ** 2, axis=0)

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
