"""Ensembles on disk: HDF5 files with full provenance.

Layout (format "rgdiff-ensemble", version 1)::

    /fields            float64 (chains, samples, *lattice)
    attrs: format, format_version, theory (JSON), sampler (JSON), diagnostics (JSON),
           seed, markov ("true" for Markov chains, "false" for independent samples),
           units, created, versions (JSON), extra (JSON),
           sha256: SHA-256 of the fields' bytes and of every attribute above (`content_sha256`)

Files are written atomically; `load_ensemble` validates everything and raises
`ReadEnsembleError` with one clear sentence for a missing, truncated or foreign file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import numpy as np

from rgdiff.io.atomic import atomic_path, package_versions
from rgdiff.errors import ReadEnsembleError, RgdiffError
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4

FORMAT = "rgdiff-ensemble"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Ensemble:
    theory: Phi4
    fields: np.ndarray  # (chains, samples, *lattice)
    markov: bool
    seed: int | None = None
    sampler: dict = dataclasses.field(default_factory=dict)
    diagnostics: dict = dataclasses.field(default_factory=dict)
    units: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    versions: dict = dataclasses.field(default_factory=dict)
    created: str = ""

    @property
    def lattice(self) -> Lattice:
        return self.theory.lattice

    def provenance(self) -> dict:
        return {
            "theory": self.theory.describe(),
            "sampler": self.sampler,
            "diagnostics": self.diagnostics,
            "seed": self.seed,
            "markov": self.markov,
            "units": self.units,
            "versions": self.versions,
            "created": self.created,
            "extra": self.extra,
        }


HASHED_ATTRS = ("format", "format_version", "theory", "sampler", "diagnostics", "seed", "markov", "units", "extra",
                "versions", "created")


def content_sha256(fields: np.ndarray, attrs: dict) -> str:
    """SHA-256 of the fields (as little-endian float64, C order) and the metadata attributes, so
    that any damage to a file is detected when it is read, not used silently."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(fields, dtype="<f8").tobytes())
    for k in sorted(attrs):
        v = attrs[k]
        h.update(f"\0{k}={v.item() if hasattr(v, 'item') else v}".encode())
    return h.hexdigest()


def save_ensemble(path: str | os.PathLike, ens: Ensemble) -> None:
    import h5py

    fields = np.asarray(ens.fields, dtype=np.float64)
    ens.lattice.check_field(fields, "fields")
    if fields.ndim != ens.lattice.dim + 2:
        raise RgdiffError(f"fields must have shape (chains, samples, *lattice), got {fields.shape}")
    created = ens.created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    versions = ens.versions or package_versions()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("fields", data=fields)
            a = f.attrs
            a["format"] = FORMAT
            a["format_version"] = FORMAT_VERSION
            a["theory"] = json.dumps(ens.theory.describe())
            a["sampler"] = json.dumps(ens.sampler)
            a["diagnostics"] = json.dumps(ens.diagnostics)
            a["seed"] = json.dumps(ens.seed)
            a["markov"] = "true" if ens.markov else "false"
            a["units"] = json.dumps(ens.units)
            a["extra"] = json.dumps(ens.extra)
            a["versions"] = json.dumps(versions)
            a["created"] = created
            a["sha256"] = content_sha256(fields, {k: a[k] for k in HASHED_ATTRS})


def load_ensemble(path: str | os.PathLike) -> Ensemble:
    import h5py

    path = Path(path)
    if not path.exists():
        raise ReadEnsembleError(f"ensemble file {path} does not exist")
    if path.is_dir():
        raise ReadEnsembleError(f"{path} is a folder, not an ensemble file")
    try:
        f = h5py.File(path, "r")
    except Exception:  # h5py raises OSError, and others for damaged superblocks
        raise ReadEnsembleError(f"{path} is not a readable HDF5 file (truncated or not HDF5)") from None
    try:
        with f:
            return _read(path, f)
    except RgdiffError:
        raise
    except Exception as exc:  # damaged HDF5 structures surface as KeyError, OSError, RuntimeError, ...
        raise ReadEnsembleError(f"{path} is damaged: HDF5 cannot read it ({exc.__class__.__name__})") from None


def _read(path: Path, f) -> Ensemble:
    import h5py

    a = f.attrs
    if a.get("format") != FORMAT:
        raise ReadEnsembleError(f"{path} is not an rgdiff ensemble (no format attribute {FORMAT!r})")
    version = a.get("format_version")
    if version != FORMAT_VERSION:
        raise ReadEnsembleError(
            f"{path} has ensemble format version {version}, this rgdiff reads version {FORMAT_VERSION}"
        )
    try:
        desc = json.loads(a["theory"])
        lattice = Lattice(int(desc["dim"]), int(desc["size"]), float(desc["length"]))
        theory = Phi4(lattice, float(desc["m2"]), float(desc["lam"]))
        meta = {k: json.loads(a[k]) for k in ("sampler", "diagnostics", "seed", "units", "extra", "versions")}
        markov = {"true": True, "false": False}[a["markov"]]
    except RgdiffError as exc:
        raise ReadEnsembleError(f"{path} describes an invalid theory: {exc}") from None
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ReadEnsembleError(f"{path} has damaged metadata ({exc.__class__.__name__}: {exc})") from None
    if "fields" not in f or not isinstance(f["fields"], h5py.Dataset):
        raise ReadEnsembleError(f"{path} has no 'fields' dataset")
    ds = f["fields"]
    expected_tail = lattice.shape
    if ds.ndim != lattice.dim + 2 or tuple(ds.shape[2:]) != expected_tail:
        raise ReadEnsembleError(
            f"{path}: fields have shape {ds.shape}, expected (chains, samples, {', '.join(map(str, expected_tail))})"
        )
    if ds.dtype.kind != "f":
        raise ReadEnsembleError(f"{path}: fields have dtype {ds.dtype}, expected floating point")
    if ds.shape[0] < 1 or ds.shape[1] < 2:
        raise ReadEnsembleError(f"{path}: an ensemble needs at least one chain of two samples, got shape {ds.shape}")
    try:
        fields = ds[...]
    except OSError:
        raise ReadEnsembleError(f"{path} is truncated: the fields cannot be read") from None
    if not np.all(np.isfinite(fields)):
        raise ReadEnsembleError(f"{path} contains NaN or infinite field values")
    recorded = a.get("sha256")
    if recorded is not None:  # files written before checksums were recorded have none
        try:
            attrs = {k: a[k] for k in HASHED_ATTRS}
        except KeyError:
            raise ReadEnsembleError(f"{path} has damaged metadata (an attribute is missing)") from None
        if content_sha256(fields, attrs) != recorded:
            raise ReadEnsembleError(
                f"{path} is corrupt: its content does not match the SHA-256 recorded when it was written"
            )
    return Ensemble(
        theory=theory,
        fields=fields.astype(np.float64),
        markov=markov,
        seed=meta["seed"],
        sampler=meta["sampler"],
        diagnostics=meta["diagnostics"],
        units=meta["units"],
        extra=meta["extra"],
        versions=meta["versions"],
        created=str(a.get("created", "")),
    )
