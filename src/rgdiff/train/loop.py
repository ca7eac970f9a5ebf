"""The one training loop: score models, RG-time flows and the ground-state ansatz all train with `fit`.

A run is `steps` Optax steps of a pure objective

    loss_fn(model, state, data, key) -> (loss, (state, metrics))

- `model`: the PyTree trained (its inexact arrays are the parameters);
- `state`: what the objective carries from step to step besides the parameters (e.g. the UV
  Markov chains of the RG objective [5.22]); saved in checkpoints; None when there is none;
- `data`: a constant input (e.g. the UV ensemble), passed as an argument so it is not baked
  into the compiled step; never saved;
- `key`: the key of step i is fold_in(key, i), so a run resumed at step k draws exactly what the
  uninterrupted run draws, and ends bitwise equal on the CPU;
- `metrics`: a dict of scalars, logged every `log_every` steps.

The step (`step`) is one `eqx.filter_jit` function, compiled once per run. Around it `fit` does
what every loop needs once: the parameter average (`parameter_average`), checkpoints and resume
(`rgdiff.io.checkpoint.Checkpointer`), data parallelism (`rgdiff.parallel`), and one rule
for numerical faults: a non-finite loss or gradient stops the run at that step with
`NonFiniteLossError`, which names the step and the last good checkpoint (kept untouched): the last
one whose parameters gave a finite loss and gradient (steps are counted from 1; the checkpoint of
step k holds the state after k steps).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from rgdiff.io.checkpoint import NumericalFaultError
from rgdiff import parallel


class NonFiniteLossError(NumericalFaultError):
    """The training loss or its gradient became NaN or infinite; the message names the step."""


# the parameter average -------------------------------------------------------------------------


def parameter_average(decay: float) -> optax.GradientTransformation:
    """Leaves the updates alone and keeps ema <- decay ema + (1 - decay) (params + updates) in its
    state, bias-corrected like Adam's moments (`averaged_parameters` reads it)."""

    def init(params):
        return (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))

    def update(updates, state, params):
        ema, count = state
        new = jax.tree.map(lambda e, p, u: decay * e + (1 - decay) * (p + u), ema, params, updates)
        return updates, (new, count + 1)

    return optax.GradientTransformation(init, update)


def with_parameter_average(optimizer: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
    """`optimizer` followed by `parameter_average(decay)` (the average last in the state); decay 0: off."""
    return optax.chain(optimizer, parameter_average(decay)) if decay > 0 else optimizer


def averaged_parameters(model, opt_state, decay: float):
    """The model with the bias-corrected average sum_j decay^(k-j) (1 - decay) theta_j / (1 - decay^k)
    of the parameters theta_j after steps j = 1..k (`with_parameter_average`'s last state)."""
    ema, count = opt_state[-1]
    correction = 1.0 - decay ** count.astype(jnp.float64)
    averaged = jax.tree.map(lambda e: (e.astype(correction.dtype) / correction).astype(e.dtype), ema)
    _, static = eqx.partition(model, eqx.is_inexact_array)
    return eqx.combine(averaged, static)


# the step and the loop -------------------------------------------------------------------------


def _stop(fault: NumericalFaultError, checkpoint) -> None:
    """Raise `fault`, naming the kept checkpoint; it is marked so that it resumes with a smaller
    learning rate (`Checkpointer.RELAXED_AFTER_FAULT`)."""
    if checkpoint is None:
        raise fault
    marked = checkpoint.mark_fault(str(fault))
    advice = (f"; resume with --resume {checkpoint.folder} (a smaller --lr is allowed after this stop)"
              if marked else "")
    raise type(fault)(f"{fault}; {checkpoint.last_good()}{advice}") from None


@eqx.filter_jit
def step(loss_fn: Callable, optimizer: optax.GradientTransformation, model, opt_state, state, data, key):
    """One gradient step of `loss_fn` at `model` (the objective's state moves in the same forward pass).

    **Returns:** `(model, opt_state, state, loss, grads_finite, metrics)`.
    """
    (loss, (state, metrics)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, state, data, key)
    finite = jnp.array(True)
    for g in jax.tree.leaves(grads):
        finite = finite & jnp.all(jnp.isfinite(g))
    with jax.numpy_dtype_promotion("standard"):  # optax's bias corrections mix Python floats and int32 counts
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, state, loss, finite, metrics


def fit(
    model,
    optimizer: optax.GradientTransformation,
    loss_fn: Callable,
    *,
    key,
    steps: int,
    state=None,
    data=None,
    ema: float = 0.0,
    log_every: int = 1,
    on_log: Callable[[dict, object], None] | None = None,
    callback: Callable[[str, int, int], None] | None = None,
    stage: str = "train",
    checkpoint=None,
    mesh=None,
    hint: str = "lower the learning rate",
):
    """Train `model` for `steps` steps of `loss_fn` (module docstring); returns `(model, state)`.

    **Arguments:**

    - `optimizer`: an Optax transformation of the gradients; its state is initialized here.
    - `ema`: decay of the parameter average (0: off); with it the averaged model is returned
      (`averaged_parameters`), and the average is part of the optimizer state (so of checkpoints).
    - `on_log(record, model)`: every `log_every` steps and at the last, with
      {"step", "loss" (mean since the last record), the metrics at that step, "seconds"}.
    - `callback(stage, done, steps)`: after every step (progress bars).
    - `checkpoint`: a `Checkpointer`: the run starts from its saved (model, optimizer state,
      state) when resuming, and saves them every `checkpoint.every` steps.
    - `mesh`: a 1-D device mesh: parameters, state and data are replicated on it (the objective
      splits its batch with `parallel.constrain_batch`).
    - `hint`: what the error of a non-finite loss suggests.

    **Raises:** `NonFiniteLossError` at the first step whose loss or gradient is not finite; that
    step is not applied and the checkpoint keeps its last good step.
    """
    optimizer = with_parameter_average(optimizer, ema)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    start, running, count = 0, 0.0, 0
    if checkpoint is not None:
        start, model, (opt_state, state), (running, count) = checkpoint.restore_training(model, (opt_state, state))
    if mesh is not None:  # one code path for 1 or n devices
        model, opt_state, state, data = parallel.replicate((model, opt_state, state, data), mesh)
    t0 = time.perf_counter()
    for i in range(start, steps):
        model, opt_state, state, loss, finite, metrics = step(
            loss_fn, optimizer, model, opt_state, state, data, jax.random.fold_in(key, i)
        )
        loss = float(loss)
        if not (math.isfinite(loss) and bool(finite)):
            # steps are counted from 1 (step i + 1 failed; the checkpoint of step k holds k steps done)
            what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient became non-finite (loss {loss})"
            _stop(NonFiniteLossError(f"the training {what} at step {i + 1} (at the parameters after step {i}); {hint}"),
                  checkpoint)
        if checkpoint is not None:
            checkpoint.confirm_training_step(i)  # the parameters after step i are good: keep their checkpoint
        running += loss
        count += 1
        if (i + 1) % log_every == 0 or i + 1 == steps:
            record = {"step": i + 1, "loss": running / count, **{k: float(v) for k, v in metrics.items()},
                      "seconds": time.perf_counter() - t0}
            running, count = 0.0, 0
            if on_log is not None:
                on_log(record, model)
        if callback is not None:
            callback(stage, i + 1, steps)
        if checkpoint is not None:
            try:
                checkpoint.after_training_step(i + 1, model, (opt_state, state), (running, count))
            except NumericalFaultError as exc:
                _stop(type(exc)(str(exc).split("; ")[0] + f"; {hint}"), checkpoint)
    if ema > 0:
        model = averaged_parameters(model, opt_state, ema)
    return model, state
