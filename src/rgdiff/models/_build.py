"""Model names for the command line, and rebuilding a model from its description."""

from __future__ import annotations

import jax

from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4
from rgdiff.models._errors import InvalidModelError
from rgdiff.models.base import AbstractScoreModel, AbstractVelocityField
from rgdiff.models.cnf import ContinuousFlow
from rgdiff.models.convnet import ConvScore
from rgdiff.models.eft import EFTScore

MODEL_NAMES = ("score", "eft-score")
MODEL_CLASSES: dict[str, type] = {"score": ConvScore, "eft-score": EFTScore, "cnf": ContinuousFlow}
FLOW_NAMES = ("cnf",)  # CNFs in RG time (rgdiff.generate.transport); trained by rgdiff.train.cnf


def _model_class(name) -> type[AbstractScoreModel | AbstractVelocityField]:
    if name not in MODEL_CLASSES:
        raise InvalidModelError(f"unknown score model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return MODEL_CLASSES[name]


def build_model(desc: dict, lattice: Lattice, *, key: jax.Array) -> AbstractScoreModel | AbstractVelocityField:
    """Rebuild the skeleton of a model from its `describe()` output.

    The weights are fresh (from `key`); load trained ones with
    `eqx.tree_deserialise_leaves(path, build_model(desc, lattice, key=key))`.

    **Arguments:**

    - `desc`: a model's `describe()` (possibly through JSON): `desc["model"]` is one of
      `MODEL_NAMES`, `desc["lattice"]` (optional) must match `lattice`, and the other entries
      are the constructor's keyword arguments.
    - `lattice`: the `Lattice` the model acts on.
    - `key`: a JAX PRNG key (keyword-only).

    **Returns:**

    An `EFTScore`, `ConvScore` or `ContinuousFlow` with the same hyperparameters (and pytree
    structure).
    """
    if not isinstance(desc, dict) or "model" not in desc:
        raise InvalidModelError("a model description must be a dict with a 'model' entry (from model.describe())")
    cls = _model_class(desc["model"])
    if "lattice" in desc and desc["lattice"] != lattice.describe():
        raise InvalidModelError(
            f"the model was described for lattice {desc['lattice']}, not for {lattice.describe()}"
        )
    kwargs = {k: v for k, v in desc.items() if k not in ("model", "lattice")}
    try:
        return cls(lattice, **kwargs, key=key)
    except TypeError as err:
        raise InvalidModelError(f"bad description for model {desc['model']!r}: {err}") from None


def make_model(name: str, theory: Phi4, *, time_scale: float, key: jax.Array, **kwargs) -> AbstractScoreModel:
    """A fresh model for `theory` by command-line name, scaled by `from_theory`.

    `"eft-score"`: `EFTScore.from_theory` (starts at the exact UV score); `"score"`:
    `ConvScore.from_theory` (pass `uv_prior=True` to add the UV score as a fixed prior).
    `kwargs` are the other constructor arguments.
    """
    return _model_class(name).from_theory(theory, time_scale=time_scale, key=key, **kwargs)
