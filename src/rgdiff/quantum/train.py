"""Optax training of the flow ansatz on the score-form energy [6.13] (pathwise gradient).

Each step draws fresh white noise, pushes it through the flow (samples + scores) and takes one
Adam step on the batch-mean score-form energy; the learning rate follows a cosine decay to 10% of
its initial value. Progress goes to a callback(stage, done, total) (see `rgdiff.progress`).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rgdiff.errors import RgdiffError
from rgdiff.quantum.ansatz import FlowAnsatz
from rgdiff.quantum.energy import energy_loss, noise
from rgdiff.quantum.hamiltonian import Hamiltonian


class InvalidGroundStateSettingsError(RgdiffError):
    """Training settings of the ground-state ansatz out of range."""


@dataclasses.dataclass(frozen=True)
class GroundStateSettings:
    """Settings of one variational ground-state run.

    - `steps`: Adam steps; `batch`: configurations per step; `learning_rate`: initial rate.
    - `ode_steps`: RK4 steps of the flow; `eval_samples`: samples of the final energy estimate.
    - `init_mass_sq`: M^2 of the prior at the start (None: the best Gaussian's M^2).
    """

    steps: int = 500
    batch: int = 256
    learning_rate: float = 0.02
    ode_steps: int = 16
    eval_samples: int = 8192
    init_mass_sq: float | None = None
    seed: int = 0

    def __post_init__(self):
        for name, lo in (("steps", 0), ("batch", 2), ("ode_steps", 1), ("eval_samples", 16)):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
                raise InvalidGroundStateSettingsError(f"{name.replace('_', '-')} must be an integer >= {lo}, got {val!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidGroundStateSettingsError(f"learning rate must be > 0, got {self.learning_rate!r}")
        if self.init_mass_sq is not None and not (math.isfinite(self.init_mass_sq) and self.init_mass_sq > 0):
            raise InvalidGroundStateSettingsError(f"initial M^2 must be > 0, got {self.init_mass_sq!r}")
        if not 0 <= self.seed < 2**63:
            raise InvalidGroundStateSettingsError(f"seed must be in [0, 2^63), got {self.seed}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_ADAM = optax.scale_by_adam()  # one object: the jitted step is shared by every run of the same shapes


@eqx.filter_jit
def _step(model, opt_state, xi, learning_rate):
    """One Adam step on the batch score-form energy; the rate is traced, so schedules never retrace."""
    loss, grads = eqx.filter_value_and_grad(energy_loss)(model, xi)
    updates, opt_state = _ADAM.update(grads, opt_state)
    updates = jax.tree_util.tree_map(lambda u: -learning_rate * u, updates)
    return eqx.apply_updates(model, updates), opt_state, loss


def train(h: Hamiltonian, settings: GroundStateSettings, init_mass_sq: float, key, progress=None):
    """Train a `FlowAnsatz` from the Gaussian of mass^2 `init_mass_sq`; returns (model, per-step batch energies)."""
    model = FlowAnsatz(h, init_mass_sq, steps=settings.ode_steps)
    schedule = optax.cosine_decay_schedule(settings.learning_rate, max(settings.steps, 1), alpha=0.1)
    opt_state = _ADAM.init(eqx.filter(model, eqx.is_array))
    history = np.empty(settings.steps)
    report = progress or (lambda *a: None)
    for i in range(settings.steps):
        xi = noise(jax.random.fold_in(key, i), h, settings.batch)
        model, opt_state, loss = _step(model, opt_state, xi, jnp.asarray(np.float64(schedule(i))))
        history[i] = float(loss)
        if not math.isfinite(history[i]):
            raise RgdiffError(f"training diverged at step {i} (energy {history[i]}); lower --lr or raise --ode-steps")
        report("train", i + 1, settings.steps)
    return model, history
