"""Ensembles on disk: HDF5 files with full provenance.

Layout (format "rgdiff-ensemble", version 2)::

    /fields         float64 (chains, samples, *lattice)   chunks (1, k, *lattice) of about 1 MB,
                                                          gzip (deflate) level 1 with the shuffle filter
    /action         float64 (chains, samples)   S[phi] of each configuration (`Phi4.action`)
    /magnetization  float64 (chains, samples)   M = V^-1 sum_n phi(n)
    /max_abs_phi    float64 (chains, samples)   max_n |phi(n)|
    /mc_time        int64   (samples,)          Monte Carlo time of each sample: the sampler
                                                transition after which it was recorded, thin * (1..S)
                                                for `rgdiff sample`; 1..S for other sources
    attrs: format, format_version, theory (JSON), sampler (JSON), diagnostics (JSON),
           seed, markov ("true" for Markov chains, "false" for independent samples),
           units, created, versions (JSON), extra (JSON),
           datasets (JSON): {name: {"shape", "dtype", "sha256"}} for each dataset above, the
                            SHA-256 of its bytes (little-endian, C order)
           sha256: the SHA-256 of every attribute above (`attributes_sha256`)

Every dataset is compressed with the standard deflate filter, so h5py, netCDF-4/HDF5 tools and
any HDF5 library read the file without plugins.

Integrity: `sha256` is the root of a two-level hash tree (attributes -> the datasets' hashes ->
the bytes), so the provenance can be verified without reading the fields, and any damage is
still found when the data are read:

- `read_header` (used by `rgdiff info`) reads the attributes and the datasets' shapes only and
  verifies `sha256`: the provenance it returns is exactly what was written (a damaged attribute
  is refused); the fields are *not* verified (`EnsembleHeader.integrity` says so).
- `load_series` reads the per-configuration series (action, M, max|phi|, MC time), each verified
  against its hash, without reading the fields.
- `load_ensemble` (every measurement) reads and verifies everything.

Format 1 (only `/fields`, contiguous and uncompressed; `sha256` over the fields' bytes and the
attributes, `content_sha256`) is still read; its header cannot be verified without hashing the
fields, so `read_header` does that for format-1 files. A format-1 file without `sha256` is read
(as "not verified") only if it is truly legacy: its `created` time is before
`CHECKSUMS_SINCE`, when rgdiff began to record the checksum (it wrote format 1 without one for a
few hours of development). Any later file without it had its checksum removed: it is refused,
since nothing else would catch its altered content.

Every dataset must be stored in the file itself: an external or soft link (data taken from
another file or place, outside the checksums' reach) is refused, as are attributes of the wrong
type (an array-valued or string `format_version`) and a metadata JSON nested too deeply.

Files are written atomically; readers raise `ReadEnsembleError` with one clear sentence for a
missing, truncated, damaged or foreign file.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from rgdiff.io.atomic import atomic_path, package_versions
from rgdiff.errors import ReadEnsembleError, RgdiffError
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4

CHECKSUMS_SINCE = "2026-11-29T18:18:06+00:00"  # the first rgdiff that recorded `sha256` (commit cd1ca55)
FORMAT = "rgdiff-ensemble"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
SERIES = ("action", "magnetization", "max_abs_phi")  # per configuration, shape (chains, samples)
DATASETS = ("fields", *SERIES, "mc_time")
CHUNK_BYTES = 2**20  # target size of one HDF5 chunk of the fields
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


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
    mc_time: np.ndarray | None = None  # (samples,) int; None: `default_mc_time`

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

    def monte_carlo_time(self) -> np.ndarray:
        """The MC time of each sample, shape (samples,): `mc_time` or `default_mc_time`."""
        samples = int(np.shape(self.fields)[1])
        if self.mc_time is None:
            return default_mc_time(samples, markov=self.markov, sampler=self.sampler)
        return _check_mc_time(self.mc_time, samples)

    def series(self) -> dict[str, np.ndarray]:
        """The per-configuration series `configuration_series` of these fields."""
        return configuration_series(self.theory, self.fields)


def default_mc_time(samples: int, *, markov: bool, sampler: dict | None = None) -> np.ndarray:
    """thin * (1, ..., samples) for Markov chains whose sampler records `thin`; else 1..samples."""
    thin = (sampler or {}).get("thin", 1) if markov else 1
    if isinstance(thin, bool) or not isinstance(thin, int) or thin < 1:
        thin = 1
    return thin * np.arange(1, samples + 1, dtype=np.int64)


def _check_mc_time(mc_time, samples: int) -> np.ndarray:
    t = np.asarray(mc_time)
    if t.shape != (samples,) or t.dtype.kind not in "iu":
        raise RgdiffError(f"mc_time must be {samples} integers (one per sample), got shape {t.shape} dtype {t.dtype}")
    return t.astype(np.int64)


def configuration_series(theory: Phi4, fields: np.ndarray) -> dict[str, np.ndarray]:
    """action S[phi] (`Phi4.action`, in float64), magnetization M and max_n |phi(n)| of every
    configuration; each of shape fields.shape[:-dim]."""
    import jax

    fields = np.asarray(fields, dtype=np.float64)
    lat = theory.lattice
    flat = fields.reshape(-1, *lat.shape)
    n = len(flat)
    batch = max(1, min(n, (16 * 2**20) // max(1, flat[0].nbytes)))  # bounded memory, one compilation
    action = np.empty(n)
    x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64  # jax < 0.7: experimental
    with x64(True):  # float64 whatever the caller's JAX setting
        for i in range(0, n, batch):
            part = flat[i:i + batch]
            if len(part) < batch:  # pad the last batch: the same shape, no recompilation
                part = np.concatenate([part, np.zeros((batch - len(part), *lat.shape))])
            action[i:i + batch] = np.asarray(_action(theory, part))[: min(batch, n - i)]
    shape = fields.shape[: fields.ndim - lat.dim]
    return {
        "action": action.reshape(shape),
        # M = phi~(0) = V^-1 sum_n phi(n), as `rgdiff.observables.estimators.magnetization` (a test
        # holds them equal); not imported from there: that package loads pyerrors, seconds for a mean
        "magnetization": np.mean(fields, axis=lat.axes),
        "max_abs_phi": np.max(np.abs(fields), axis=lat.axes),
    }


def _action(theory: Phi4, phi):
    import jax

    global _jitted_action
    if _jitted_action is None:
        _jitted_action = jax.jit(lambda th, x: th.action(x), static_argnums=0)
    return _jitted_action(theory, phi)


_jitted_action = None


# hashing -----------------------------------------------------------------------------------

HASHED_ATTRS = ("format", "format_version", "theory", "sampler", "diagnostics", "seed", "markov", "units", "extra",
                "versions", "created")
HASHED_ATTRS_V2 = (*HASHED_ATTRS, "datasets")


def _update_attrs(h, attrs: dict) -> None:
    for k in sorted(attrs):
        v = attrs[k]
        h.update(f"\0{k}={v.item() if hasattr(v, 'item') else v}".encode())


def content_sha256(fields: np.ndarray, attrs: dict) -> str:
    """Format 1: SHA-256 of the fields (as little-endian float64, C order) and the metadata attributes."""
    h = hashlib.sha256(np.ascontiguousarray(fields, dtype="<f8").tobytes())
    _update_attrs(h, attrs)
    return h.hexdigest()


def attributes_sha256(attrs: dict) -> str:
    """Format 2: SHA-256 of the attributes (which include every dataset's SHA-256)."""
    h = hashlib.sha256()
    _update_attrs(h, attrs)
    return h.hexdigest()


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's bytes, little-endian and C order (no copy for such arrays)."""
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return hashlib.sha256(memoryview(a).cast("B")).hexdigest()


# writing -----------------------------------------------------------------------------------


def save_ensemble(path: str | os.PathLike, ens: Ensemble) -> None:
    """Write `ens` to `path` (format 2, atomically: a temporary name, then rename)."""
    import h5py

    fields = np.ascontiguousarray(ens.fields, dtype=np.float64)
    ens.lattice.check_field(fields, "fields")
    if fields.ndim != ens.lattice.dim + 2:
        raise RgdiffError(f"fields must have shape (chains, samples, *lattice), got {fields.shape}")
    chains, samples = fields.shape[:2]
    data = {"fields": fields, **configuration_series(ens.theory, fields), "mc_time": ens.monte_carlo_time()}
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "theory": json.dumps(ens.theory.describe()),
        "sampler": json.dumps(ens.sampler),
        "diagnostics": json.dumps(ens.diagnostics),
        "seed": json.dumps(ens.seed),
        "markov": "true" if ens.markov else "false",
        "units": json.dumps(ens.units),
        "extra": json.dumps(ens.extra),
        "versions": json.dumps(ens.versions or package_versions()),
        "created": ens.created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "datasets": json.dumps({k: {"shape": list(v.shape), "dtype": v.dtype.newbyteorder("<").str, "sha256": array_sha256(v)}
                                for k, v in data.items()}, sort_keys=True),
    }
    attrs["sha256"] = attributes_sha256(attrs)
    per_config = max(1, fields[0, 0].nbytes)
    k = int(min(max(samples, 1), max(1, CHUNK_BYTES // per_config)))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, arr in data.items():
                if arr.size == 0:
                    f.create_dataset(name, data=arr)
                    continue
                chunks = (1, k, *arr.shape[2:]) if name == "fields" else (1, samples) if arr.ndim == 2 else (samples,)
                f.create_dataset(name, data=arr, dtype=arr.dtype.newbyteorder("<"), chunks=chunks, **COMPRESSION)
            for key, value in attrs.items():
                f.attrs[key] = value


# reading -----------------------------------------------------------------------------------


@dataclasses.dataclass
class EnsembleHeader:
    """An ensemble's provenance and shapes, read without its data (`read_header`)."""

    path: Path
    format_version: int
    theory: Phi4
    markov: bool
    seed: int | None
    sampler: dict
    diagnostics: dict
    units: dict
    extra: dict
    versions: dict
    created: str
    shape: tuple  # (chains, samples, *lattice)
    sha256: str | None  # the recorded root checksum (None: a format-1 file written before checksums)
    integrity: str  # what was verified, in words


def _open(path: str | os.PathLike):
    import h5py

    from rgdiff.io.reading import require_regular_file

    path = Path(path)
    if not path.exists():
        raise ReadEnsembleError(f"ensemble file {path} does not exist")
    if path.is_dir():
        raise ReadEnsembleError(f"{path} is a folder, not an ensemble file")
    require_regular_file(path, ReadEnsembleError, "ensemble file")  # a FIFO would hang, /dev/zero never end
    try:
        return path, h5py.File(path, "r")
    except Exception:  # h5py raises OSError, and others for damaged superblocks
        raise ReadEnsembleError(f"{path} is not a readable HDF5 file (truncated or not HDF5)") from None


def _guarded(path: str | os.PathLike, read):
    """Run `read(path, f)` on the open file; damaged HDF5 structures become one clear error."""
    path, f = _open(path)
    try:
        with f:
            return read(path, f)
    except RgdiffError:
        raise
    except Exception as exc:  # damaged HDF5 structures surface as KeyError, OSError, RuntimeError, ...
        raise ReadEnsembleError(f"{path} is damaged: HDF5 cannot read it ({exc.__class__.__name__})") from None


def read_header(path: str | os.PathLike) -> EnsembleHeader:
    """Provenance and shape of an ensemble, reading (format 2) only its attributes: verified
    against the recorded SHA-256, the fields not read (see the module docstring)."""
    return _guarded(path, _read_header)


def load_series(path: str | os.PathLike) -> tuple[EnsembleHeader, dict[str, np.ndarray]]:
    """The header and the per-configuration series (`SERIES` and "mc_time"), each verified,
    without reading the fields. Format 1 files have no series: they are computed from the
    (verified) fields."""

    def read(path, f):
        header = _read_header(path, f, verify_v1=False)
        if header.format_version == 1:
            fields = _fields_v1(path, f, header)
            return header, {**configuration_series(header.theory, fields),
                            "mc_time": default_mc_time(fields.shape[1], markov=header.markov, sampler=header.sampler)}
        specs = _specs(path, f)
        return header, {name: _verified(path, f, name, specs[name]) for name in (*SERIES, "mc_time")}

    return _guarded(path, read)


def load_ensemble(path: str | os.PathLike) -> Ensemble:
    """The whole ensemble, every byte verified against the recorded checksums."""

    def read(path, f):
        header = _read_header(path, f, verify_v1=False)
        if header.format_version == 1:
            fields, mc_time = _fields_v1(path, f, header), None
        else:
            specs = _specs(path, f)
            fields = _verified(path, f, "fields", specs["fields"], finite=True)
            for name in SERIES:
                _verified(path, f, name, specs[name])
            mc_time = _verified(path, f, "mc_time", specs["mc_time"])
        return Ensemble(
            theory=header.theory,
            fields=fields.astype(np.float64, copy=False),
            markov=header.markov,
            seed=header.seed,
            sampler=header.sampler,
            diagnostics=header.diagnostics,
            units=header.units,
            extra=header.extra,
            versions=header.versions,
            created=header.created,
            mc_time=mc_time,
        )

    return _guarded(path, read)


def _read_header(path: Path, f, verify_v1: bool = True) -> EnsembleHeader:
    import h5py

    a = f.attrs
    fmt = a.get("format")
    if not isinstance(fmt, str) or fmt != FORMAT:
        raise ReadEnsembleError(f"{path} is not an rgdiff ensemble (no format attribute {FORMAT!r})")
    version = a.get("format_version")
    if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
        shown = f"{type(version).__name__} {version!r:.40}"
        raise ReadEnsembleError(
            f"{path} has a damaged format_version attribute ({shown}); it must be an integer (one of "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    if version not in READABLE_VERSIONS:
        raise ReadEnsembleError(
            f"{path} has ensemble format version {version}, this rgdiff reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    version = int(version)
    for name in DATASETS if version == 2 else ("fields",):
        link = f.get(name, getlink=True)
        if link is not None and not isinstance(link, h5py.HardLink):
            kind = {"ExternalLink": "an external link", "SoftLink": "a soft link"}.get(type(link).__name__, "a link")
            raise ReadEnsembleError(
                f"{path}: dataset {name!r} is {kind} to data elsewhere; an ensemble must hold its data itself"
            )
    recorded = a.get("sha256")
    if version == 2:  # verify the attributes before parsing them
        try:
            attrs = {k: a[k] for k in HASHED_ATTRS_V2}
        except KeyError:
            raise ReadEnsembleError(f"{path} has damaged metadata (an attribute is missing)") from None
        if recorded is None or attributes_sha256(attrs) != recorded:
            raise ReadEnsembleError(f"{path} is corrupt: its metadata do not match the SHA-256 recorded when it was written")
    elif recorded is None and not _truly_legacy(a.get("created")):
        raise ReadEnsembleError(
            f"{path} has no checksum (its sha256 attribute is missing), although it was written after rgdiff began "
            "to record one; it may have been altered and is refused"
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
    except RecursionError:
        raise ReadEnsembleError(f"{path} has damaged metadata (JSON nested too deeply)") from None
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
    header = EnsembleHeader(path=path, format_version=version, theory=theory, markov=markov, seed=meta["seed"],
                            sampler=meta["sampler"], diagnostics=meta["diagnostics"], units=meta["units"],
                            extra=meta["extra"], versions=meta["versions"], created=str(a.get("created", "")),
                            shape=tuple(int(n) for n in ds.shape), sha256=None if recorded is None else str(recorded),
                            integrity="")
    if version == 1:
        if recorded is None:
            header.integrity = "not verified: format 1 file written before checksums were recorded"
        elif verify_v1:
            _fields_v1(path, f, header)
            header.integrity = "verified: fields and metadata (format 1: the whole content was hashed)"
        return header
    specs = _specs(path, f)
    for name in DATASETS:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise ReadEnsembleError(f"{path} has no {name!r} dataset")
        got = (list(f[name].shape), f[name].dtype.newbyteorder("<").str)
        if got != (specs[name]["shape"], specs[name]["dtype"]):
            raise ReadEnsembleError(f"{path} is corrupt: dataset {name!r} is not the one recorded when it was written")
    header.integrity = "metadata verified (SHA-256); fields not verified (every measurement verifies them)"
    return header


def _truly_legacy(created) -> bool:
    """Whether a format-1 file without a checksum was written before rgdiff recorded checksums."""
    try:
        when = datetime.datetime.fromisoformat(str(created))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        return when < datetime.datetime.fromisoformat(CHECKSUMS_SINCE)
    except (TypeError, ValueError):
        return False


def _specs(path: Path, f) -> dict:
    try:
        specs = json.loads(f.attrs["datasets"])
        for name in DATASETS:
            spec = specs[name]
            if not (isinstance(spec["shape"], list) and isinstance(spec["dtype"], str) and isinstance(spec["sha256"], str)):
                raise TypeError("bad dataset record")
        return specs
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ReadEnsembleError(f"{path} has damaged metadata ({exc.__class__.__name__}: {exc})") from None


def _read_data(path: Path, f, name: str) -> np.ndarray:
    try:
        return f[name][...]
    except OSError:
        raise ReadEnsembleError(f"{path} is truncated or damaged: the {name} cannot be read") from None


def _verified(path: Path, f, name: str, spec: dict, finite: bool = False) -> np.ndarray:
    data = _read_data(path, f, name)
    if finite and not np.all(np.isfinite(data)):
        raise ReadEnsembleError(f"{path} contains NaN or infinite field values")
    if array_sha256(data) != spec["sha256"]:
        raise ReadEnsembleError(
            f"{path} is corrupt: its {name} do not match the SHA-256 recorded when it was written"
        )
    return data


def _fields_v1(path: Path, f, header: EnsembleHeader) -> np.ndarray:
    fields = _read_data(path, f, "fields")
    if not np.all(np.isfinite(fields)):
        raise ReadEnsembleError(f"{path} contains NaN or infinite field values")
    if header.sha256 is not None:  # files written before checksums were recorded have none
        try:
            attrs = {k: f.attrs[k] for k in HASHED_ATTRS}
        except KeyError:
            raise ReadEnsembleError(f"{path} has damaged metadata (an attribute is missing)") from None
        if content_sha256(fields, attrs) != header.sha256:
            raise ReadEnsembleError(
                f"{path} is corrupt: its content does not match the SHA-256 recorded when it was written"
            )
    return fields
