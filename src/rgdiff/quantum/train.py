"""Optax training of the flow ansatz on the score-form energy [6.13] (pathwise gradient).

Each step draws fresh white noise, pushes it through the flow (samples + scores) at the RK4 step
count n and at n/2, and takes one Adam step on the batch-mean score-form energy plus
`error_weight` times the mean per-sample gap between the two (`energy.training_objective`: the
optimizer cannot lower the objective through the integration error); the learning rate follows a
cosine decay to 10% of its initial value. The loop is `rgdiff.train.loop.fit` (checkpoints, exact
resume, the non-finite rule). Progress goes to a callback(stage, done, total) (see
`rgdiff.cli.progress`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optax

from rgdiff.errors import RgdiffError
from rgdiff.quantum.ansatz import FlowAnsatz
from rgdiff.quantum.energy import noise, training_objective
from rgdiff.quantum.hamiltonian import Hamiltonian
from rgdiff.train.loop import fit


class InvalidGroundStateSettingsError(RgdiffError):
    """Training settings of the ground-state ansatz out of range."""


@dataclasses.dataclass(frozen=True)
class GroundStateSettings:
    """Settings of one variational ground-state run.

    - `steps`: Adam steps; `batch`: configurations per step; `learning_rate`: initial rate.
    - `ode_steps`: RK4 steps of the flow (>= 2: the training compares with ode_steps // 2);
      `eval_samples`: samples of the final energy estimate.
    - `init_mass_sq`: M^2 of the prior at the start (None: the best Gaussian's M^2).
    - `error_weight`: weight of the integration gap in the objective (>= 1/15 makes it an upper
      bound on the exact-transport energy to leading order; 0 trains on the bare RK4 energy).
    """

    steps: int = 500
    batch: int = 256
    learning_rate: float = 0.02
    ode_steps: int = 16
    eval_samples: int = 8192
    init_mass_sq: float | None = None
    seed: int = 0
    error_weight: float = 1.0

    def __post_init__(self):
        for name, lo in (("steps", 0), ("batch", 2), ("ode_steps", 2), ("eval_samples", 16)):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
                raise InvalidGroundStateSettingsError(f"{name.replace('_', '-')} must be an integer >= {lo}, got {val!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidGroundStateSettingsError(f"learning rate must be > 0, got {self.learning_rate!r}")
        if self.init_mass_sq is not None and not (math.isfinite(self.init_mass_sq) and self.init_mass_sq > 0):
            raise InvalidGroundStateSettingsError(f"initial M^2 must be > 0, got {self.init_mass_sq!r}")
        if not (isinstance(self.error_weight, (int, float)) and math.isfinite(self.error_weight) and self.error_weight >= 0):
            raise InvalidGroundStateSettingsError(f"ode error weight must be >= 0, got {self.error_weight!r}")
        if not 0 <= self.seed < 2**63:
            raise InvalidGroundStateSettingsError(f"seed must be in [0, 2^63), got {self.seed}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def train(h: Hamiltonian, settings: GroundStateSettings, init_mass_sq: float, key, progress=None, *, checkpoint=None,
          record: dict | None = None):
    """Train a `FlowAnsatz` from the Gaussian of mass^2 `init_mass_sq`; returns (model, per-step batch energies).

    `checkpoint`: a `rgdiff.io.checkpoint.Checkpointer`; the run continues from its saved state
    when resuming (bitwise the uninterrupted run on the CPU: the noise of step i is drawn from
    fold_in(key, i)), and the per-step records so far travel in the checkpoint's host state.
    `record`: a dict filled with the per-step arrays "energy" (the batch score-form energy at
    `ode_steps`, also returned) and "integration_gap" (mean |e_n - e_{n/2}|).
    """
    model = FlowAnsatz(h, init_mass_sq, steps=settings.ode_steps)
    optimizer = optax.adam(optax.cosine_decay_schedule(settings.learning_rate, max(settings.steps, 1), alpha=0.1))
    history: list[float] = []
    gaps: list[float] = []
    if checkpoint is not None:
        if checkpoint.resumed is not None:
            host = checkpoint.resumed[0]["host"]
            history.extend(host["history"])
            gaps.extend(host.get("integration_gap", []))
        checkpoint.host_extra = {**(checkpoint.host_extra or {}), "history": history, "integration_gap": gaps}

    def objective(model, state, data, key):  # [6.13] on fresh white noise, plus the integration gap
        loss, (energy, gap) = training_objective(model, noise(key, h, settings.batch), settings.error_weight)
        return loss, (state, {"energy": energy, "integration_gap": gap})

    def on_log(rec, _):
        history.append(rec["energy"])
        gaps.append(rec["integration_gap"])

    model, _ = fit(model, optimizer, objective, key=key, steps=settings.steps, on_log=on_log, callback=progress,
                   checkpoint=checkpoint, hint="lower --lr or raise --ode-steps")
    energies = np.asarray(history, dtype=np.float64).reshape(settings.steps)
    if record is not None:
        record["energy"] = energies
        record["integration_gap"] = np.asarray(gaps, dtype=np.float64).reshape(settings.steps)
    return model, energies
