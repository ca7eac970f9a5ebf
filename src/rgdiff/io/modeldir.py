"""The model directory: a contract between `rgdiff train` and every command that reads a model.

    DIR/config.toml     everything needed to rebuild the model and rerun the training
                        ([model], [scheme], [theory], [data], [training], [versions]); [scheme] is
                        the scheme's `describe()`, rebuilt by `rgdiff.rg.scheme_from_description`
    DIR/params.eqx      final parameters (Equinox serialization, `eqx.tree_serialise_leaves`)
    DIR/metrics.jsonl   one JSON record per logged step (loss and diagnostics)
    DIR/COUPLINGS.json  (EFT models) {"t": [...], "kinetic": [...], "mass": [...], "quartic": [...]}
    DIR/couplings.png   (EFT models) the learned running couplings f_i(t)
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from rgdiff.io import _toml
from rgdiff.io.atomic import atomic_path
from rgdiff.errors import InvalidSchemeError, RgdiffError, WriteOutputError
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg.description import scheme_from_description
from rgdiff.theory.phi4 import Phi4

CONFIG, PARAMS, METRICS, COUPLINGS = "config.toml", "params.eqx", "metrics.jsonl", "COUPLINGS.json"
FORMAT = "rgdiff-model"
FORMAT_VERSION = 1


class ReadModelError(RgdiffError):
    """A model directory is missing, incomplete, damaged, or does not fit the data given."""


@dataclasses.dataclass
class LoadedModel:
    model: object
    scheme: object
    theory: Phi4
    config: dict
    path: Path

    @property
    def lattice(self) -> Lattice:
        return self.theory.lattice

    @property
    def horizon(self) -> float:
        return float(self.config["training"]["horizon"])

    def check_compatible(self, theory: Phi4, what: str) -> None:
        """Refuse data from another lattice (the model is tied to its lattice)."""
        if theory.lattice != self.lattice:
            raise ReadModelError(
                f"{what} is on lattice {theory.lattice.describe()}, but the model in {self.path} was "
                f"trained on {self.lattice.describe()}"
            )


def write_config(path: Path, config: dict) -> None:
    """Write config.toml; a scheme that `load_model_dir` could not rebuild is refused first."""
    if "scheme" in config:
        try:
            scheme_from_description(config["scheme"])
        except InvalidSchemeError as exc:
            raise WriteOutputError(f"cannot save the model in {Path(path).parent}: {exc}") from None
    with atomic_path(path) as tmp:
        tmp.write_text(_toml.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **config}))


def write_params(path: Path, model) -> None:
    with atomic_path(path) as tmp:
        eqx.tree_serialise_leaves(tmp, model)


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def couplings_table(model, horizon: float, n: int = 101) -> dict:
    """COUPLINGS.json: the EFT coefficients of (Delta phi, phi, phi^3) in the score on a t grid:
    t = 0 and n - 1 log-spaced times from 0.01 / Lambda_0^2 (the UV modes relax on the time scale
    1/Lambda_0^2, where the couplings run fastest) to the horizon."""
    t = jnp.asarray(couplings_times(horizon, n, getattr(model, "lattice", None)))
    f1, f2, f3 = (jnp.asarray(x, jnp.float64) for x in jax.vmap(model.couplings)(t))
    return {"t": [float(x) for x in t], "kinetic": f1.tolist(), "mass": f2.tolist(), "quartic": f3.tolist()}


def couplings_times(horizon: float, n: int = 101, lattice: Lattice | None = None):
    """The t grid of COUPLINGS.json: 0, then n - 1 times log-spaced from t_min to `horizon`, with
    t_min = 0.01 / Lambda_0^2 of the lattice (1e-5 horizon without one), at most horizon / 100."""
    import numpy as np

    horizon = float(horizon)
    t_min = horizon * 1e-5 if lattice is None else 0.01 / lattice.cutoff**2
    t_min = min(t_min, horizon / 100.0)
    return np.concatenate([[0.0], np.geomspace(t_min, horizon, n - 1)]) if n > 1 else np.array([0.0])


def load_model_dir(path: str | Path) -> LoadedModel:
    from rgdiff.models import build_model

    path = Path(path)
    if not path.exists():
        raise ReadModelError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ReadModelError(f"{path} is not a model directory (it is a file)")
    for name in (CONFIG, PARAMS):
        if not (path / name).is_file():
            raise ReadModelError(f"{path} is not a complete model directory: {name} is missing")
    try:
        config = tomllib.loads((path / CONFIG).read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ReadModelError(f"{path / CONFIG} is not valid TOML ({exc})") from None
    if config.get("format") != FORMAT:
        raise ReadModelError(f"{path / CONFIG} is not an rgdiff model config (format {config.get('format')!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise ReadModelError(f"{path} has model format version {config.get('format_version')}, expected {FORMAT_VERSION}")
    try:
        th = config["theory"]
        lattice = Lattice(int(th["dim"]), int(th["size"]), float(th["length"]))
        theory = Phi4(lattice, float(th["m2"]), float(th["lam"]))
        scheme = scheme_from_description(config["scheme"])
        skeleton = build_model(config["model"], lattice, key=jax.random.key(0))
        dtype = jnp.dtype(config["training"]["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, RgdiffError):
            raise ReadModelError(f"{path / CONFIG} describes an invalid model: {exc}") from None
        raise ReadModelError(f"{path / CONFIG} is damaged ({exc.__class__.__name__}: {exc})") from None
    from rgdiff.models.base import cast_model

    skeleton = cast_model(skeleton, dtype)
    try:
        model = eqx.tree_deserialise_leaves(path / PARAMS, skeleton)
    except Exception as exc:  # equinox raises a variety of errors for a foreign or truncated file
        raise ReadModelError(f"{path / PARAMS} does not fit the model in {CONFIG} or is damaged ({exc.__class__.__name__})") from None
    return LoadedModel(model, scheme, theory, config, path)
