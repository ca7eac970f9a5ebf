"""The model directory: a contract between `rgdiff train` and every command that reads a model.

    DIR/config.toml     everything needed to rebuild the model and rerun the training
                        ([model], [scheme], [theory], [data], [training], [versions]); [scheme] is
                        the scheme's `describe()`, rebuilt by `rgdiff.rg.scheme_from_description`;
                        params_sha256: the SHA-256 of params.eqx, checked on every load
    DIR/params.eqx      final parameters (Equinox serialization, `eqx.tree_serialise_leaves`)
    DIR/metrics.jsonl   one JSON record per logged step (loss and diagnostics)
    DIR/COUPLINGS.json  (EFT models) {"t": [...], "kinetic": [...], "mass": [...], "quartic": [...]}
    DIR/couplings.png   (EFT models) the learned running couplings f_i(t)

Integrity: `write_model` writes params.eqx, then config.toml with its `params_sha256`; every load
(`load_model_dir`, `rgdiff info`) hashes params.eqx and refuses a mismatch (one flipped bit), and
config.toml's tables and values are type-checked. A model directory written before rgdiff recorded
the checksum (no `params_sha256`) still loads, with a warning line (`RgdiffWarning`) saying that
its parameters cannot be verified: refusing it would strand every model trained until then.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from rgdiff.io import _toml
from rgdiff.io.atomic import atomic_path, file_checksum
from rgdiff.io.reading import loads_toml, read_text, require_regular_file
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


def _check_reloadable(folder: Path, config: dict) -> None:
    if "scheme" in config:
        try:
            scheme_from_description(config["scheme"])
        except InvalidSchemeError as exc:
            raise WriteOutputError(f"cannot save the model in {folder}: {exc}") from None


def write_config(path: Path, config: dict) -> None:
    """Write config.toml; a scheme that `load_model_dir` could not rebuild is refused first."""
    _check_reloadable(Path(path).parent, config)
    with atomic_path(path) as tmp:
        tmp.write_text(_toml.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **config}))


def write_params(path: Path, model) -> str:
    """Write params.eqx; returns its SHA-256 (record it in config.toml: `write_model`)."""
    with atomic_path(path) as tmp:
        eqx.tree_serialise_leaves(tmp, model)
        return file_checksum(tmp)


def write_model(folder: Path, config: dict, model) -> None:
    """params.eqx, then config.toml recording its SHA-256 (`params_sha256`)."""
    _check_reloadable(Path(folder), config)  # before anything is written
    sha = write_params(Path(folder) / PARAMS, model)
    write_config(Path(folder) / CONFIG, {**config, "params_sha256": sha})


def verify_params(path: Path, config: dict, error: type[RgdiffError] = RgdiffError) -> str:
    """Check params.eqx in the model directory `path` against config.toml's `params_sha256`;
    returns what was verified, in words. A directory without the checksum (written by an older
    rgdiff) gets a warning line."""
    import warnings

    from rgdiff.errors import RgdiffWarning

    recorded = config.get("params_sha256")
    if recorded is None:
        warnings.warn(RgdiffWarning(
            f"{path / CONFIG} records no checksum of {PARAMS} (written by an older rgdiff); its parameters cannot "
            "be verified"
        ), stacklevel=2)
        return "not verified: no params_sha256 in config.toml (written by an older rgdiff)"
    if not isinstance(recorded, str) or file_checksum(require_regular_file(path / PARAMS, error)) != recorded:
        raise error(f"{path / PARAMS} is corrupt: its SHA-256 does not match the one recorded in {CONFIG}")
    return "verified: params.eqx matches the SHA-256 in config.toml"


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
        if not (path / name).exists():
            raise ReadModelError(f"{path} is not a complete model directory: {name} is missing")
        require_regular_file(path / name, ReadModelError)
    config = loads_toml(read_text(path / CONFIG, ReadModelError), path / CONFIG, ReadModelError)
    if config.get("format") != FORMAT:
        raise ReadModelError(f"{path / CONFIG} is not an rgdiff model config (format {config.get('format')!r:.60})")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ReadModelError(f"{path / CONFIG} is damaged: format_version must be an integer, got {version!r:.60}")
    if version != FORMAT_VERSION:
        raise ReadModelError(f"{path} has model format version {version}, expected {FORMAT_VERSION}")
    for name in ("theory", "scheme", "model", "training"):
        if not isinstance(config.get(name), dict):
            raise ReadModelError(f"{path / CONFIG} is damaged: [{name}] must be a table, got {config.get(name)!r:.60}")
    horizon = config["training"].get("horizon")
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or not math.isfinite(horizon) or horizon <= 0:
        raise ReadModelError(f"{path / CONFIG} is damaged: training.horizon must be a finite time > 0, got {horizon!r:.60}")
    verify_params(path, config, ReadModelError)
    try:
        th = config["theory"]
        lattice = Lattice(int(th["dim"]), int(th["size"]), float(th["length"]))
        theory = Phi4(lattice, float(th["m2"]), float(th["lam"]))
        scheme = scheme_from_description(config["scheme"])
        skeleton = build_model(config["model"], lattice, key=jax.random.key(0))
        dtype = config["training"]["dtype"]
        if dtype not in ("float32", "float64"):
            raise ValueError(f"training.dtype must be float32 or float64, got {dtype!r:.60}")
        dtype = jnp.dtype(dtype)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, ArithmeticError, RgdiffError) as exc:
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
