"""Ensembles in the formats the field's tools read: NumPy, netCDF-4 (xarray) and ArviZ.

Python::

    import arviz as az
    import rgdiff

    az.summary(rgdiff.to_arviz("uv.h5"))      # R-hat, ESS, MCSE of M, |M|, S, max|phi| (no fields read)
    rgdiff.to_xarray(ensemble)                # xarray.Dataset, dims (chain, draw, x, y[, z])

Command line (`rgdiff.cli.app`)::

    rgdiff export uv.h5 --to npz --out uv.npz
    rgdiff export uv.h5 --to netcdf --out uv.nc
    rgdiff import phi.npy --units lattice --m2 -4 --lam 36.048 [--markov|--independent] --out uv.h5
    rgdiff import uv.npz --out back.h5        # an rgdiff export: the theory comes from its provenance

Layouts (the variables mirror the HDF5 ensemble, `rgdiff.io.ensemble`):

- npz (`numpy.load`, no pickle): `fields` float64 (chains, samples, *lattice); `action`,
  `magnetization`, `max_abs_phi` float64 (chains, samples); `mc_time` int64 (samples,);
  `provenance`: a 0-d unicode array holding the provenance record (JSON).
- netCDF-4 (xarray, netCDF4-python, NCO, ...): dimensions `chain, draw, x, y, z` (as many lattice
  axes as the theory has); coordinates `chain`, `draw` (indices from 0), `x`, `y`, `z` (site
  indices) and `mc_time(draw)`; variables `phi(chain, draw, x, ...)` (deflate-compressed, chunks
  of one chain), `M`, `abs_M`, `action`, `max_abs_phi` (chain, draw); global attributes
  `rgdiff_provenance` (the JSON record) and, for convenience, `lattice_dim`, `lattice_size`,
  `lattice_length`, `m2`, `lam`, `markov` (1 or 0).
- ArviZ: `to_arviz` puts `M`, `abs_M`, `action`, `max_abs_phi` (and with `fields=True` also
  `phi`) in the posterior group; every chain is an ArviZ chain and every sample a draw.

The provenance record is the ensemble's (`Ensemble.provenance`: theory, sampler, diagnostics,
seed, markov, units, versions, created, extra) plus `format`, `format_version` and
`exported_from` (the file and its SHA-256). An import keeps it and records the imported file
(path, SHA-256, format) under `extra.import`; an array without provenance takes its theory from
the command line and records the same.

xarray, h5netcdf and arviz are optional (`pip install 'rgdiff[arviz]'`); without them these
functions raise `MissingExtraError` (an ImportError, and for the command line one clear line).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np

from rgdiff.errors import RgdiffError
from rgdiff.io.atomic import atomic_path, file_checksum
from rgdiff.io.ensemble import FORMAT, FORMAT_VERSION, SERIES, Ensemble, load_ensemble, load_series
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4

EXTRA = "pip install 'rgdiff[arviz]'"
LATTICE_DIMS = ("x", "y", "z")
TARGETS = {"npz": ".npz", "netcdf": ".nc"}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# per-configuration series: HDF5/npz name -> xarray/arviz name
SERIES_NAMES = {"magnetization": "M", "action": "action", "max_abs_phi": "max_abs_phi"}


class MissingExtraError(RgdiffError, ImportError):
    """An optional dependency (the 'arviz' extra) is not installed."""


class ReadArrayError(RgdiffError):
    """A file to import is missing, unreadable, or not an ensemble of field configurations."""


def _require(module: str, what: str):
    import importlib

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")  # its refactoring notice
            return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{what} needs the Python package {module}, which is not installed: {EXTRA}") from None


# provenance --------------------------------------------------------------------------------


def provenance_record(ens: Ensemble, source: str | os.PathLike | None = None) -> dict:
    """The provenance carried by an exported file (see the module docstring)."""
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **ens.provenance()}
    if source is not None:
        record["exported_from"] = {"file": str(source), "sha256": file_checksum(source)}
    return record


def _series_of(ens: Ensemble, series: dict | None) -> dict:
    return ens.series() if series is None else {k: np.asarray(series[k]) for k in SERIES}


# xarray and arviz --------------------------------------------------------------------------


def to_xarray(source, *, fields: bool = True, series: dict | None = None):
    """An ensemble (an `Ensemble` or the path of an ensemble file) as an `xarray.Dataset`.

    Dimensions (chain, draw, x, y, z): `phi` (unless `fields=False`) and the per-configuration
    `M`, `abs_M`, `action`, `max_abs_phi`; coordinate `mc_time(draw)`; the provenance record in
    `attrs["rgdiff_provenance"]`. `series`: the stored series (default: computed from the fields,
    or read from the file without the fields when `fields=False`).
    """
    xr = _require("xarray", "rgdiff.to_xarray")
    if isinstance(source, Ensemble):
        ens, prov = source, provenance_record(source)
        series = _series_of(ens, series)
        theory, markov, mc_time, phi = ens.theory, ens.markov, ens.monte_carlo_time(), ens.fields if fields else None
    elif fields:
        ens = load_ensemble(source)
        return to_xarray(ens, series=series if series is not None else load_series(source)[1])
    else:
        header, stored = load_series(source)
        theory, markov, mc_time, phi = header.theory, header.markov, stored["mc_time"], None
        series = series if series is not None else stored
        prov = {"format": FORMAT, "format_version": FORMAT_VERSION, "theory": theory.describe(),
                "sampler": header.sampler, "diagnostics": header.diagnostics, "seed": header.seed, "markov": markov,
                "units": header.units, "versions": header.versions, "created": header.created, "extra": header.extra}
    lat = theory.lattice
    chains, samples = np.shape(series["magnetization"])
    space = LATTICE_DIMS[: lat.dim]
    m = np.asarray(series["magnetization"], dtype=np.float64)
    data = {
        "M": (("chain", "draw"), m, {"long_name": "magnetization M = V^-1 sum_n phi(n)"}),
        "abs_M": (("chain", "draw"), np.abs(m), {"long_name": "|M|"}),
        "action": (("chain", "draw"), np.asarray(series["action"], dtype=np.float64),
                   {"long_name": "action S[phi] (rgdiff conventions, Phi4.action)"}),
        "max_abs_phi": (("chain", "draw"), np.asarray(series["max_abs_phi"], dtype=np.float64),
                        {"long_name": "max_n |phi(n)|"}),
    }
    if phi is not None:
        data["phi"] = (("chain", "draw", *space), np.asarray(phi, dtype=np.float64), {"long_name": "field phi(n)"})
    coords = {"chain": np.arange(chains), "draw": np.arange(samples),
              "mc_time": ("draw", np.asarray(mc_time, dtype=np.int64), {"long_name": "Monte Carlo time of each sample"}),
              **{d: np.arange(lat.size) for d in space}}
    attrs = {
        "rgdiff_provenance": json.dumps(prov),
        "lattice_dim": lat.dim,
        "lattice_size": lat.size,
        "lattice_length": lat.length,
        "m2": theory.m2,
        "lam": theory.lam,
        "markov": int(bool(markov)),
    }
    return xr.Dataset({k: xr.Variable(dims, v, attrs=a) for k, (dims, v, a) in data.items()}, coords=coords, attrs=attrs)


def to_arviz(source, *, fields: bool = False):
    """An ensemble (an `Ensemble` or the path of an ensemble file) as an `arviz.InferenceData`
    whose posterior holds `M`, `abs_M`, `action` and `max_abs_phi` per (chain, draw), and with
    `fields=True` also `phi` (chain, draw, x, y, z). From a path with `fields=False` only the
    stored series are read. Then `arviz.summary(idata)` gives R-hat and ESS in one line."""
    az = _require("arviz", "rgdiff.to_arviz")
    ds = to_xarray(source, fields=fields)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        return az.convert_to_inference_data(ds)


# writers -----------------------------------------------------------------------------------


def write_npz(path: str | os.PathLike, ens: Ensemble, *, series: dict | None = None,
              source: str | os.PathLike | None = None) -> None:
    """Write `ens` as an .npz file (layout in the module docstring), atomically."""
    series = _series_of(ens, series)
    arrays = {
        "fields": np.asarray(ens.fields, dtype=np.float64),
        **{k: np.asarray(series[k], dtype=np.float64) for k in SERIES},
        "mc_time": ens.monte_carlo_time(),
        "provenance": np.array(json.dumps(provenance_record(ens, source))),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: numpy would append ".npz" to a name
            np.savez(f, **arrays)


def write_netcdf(path: str | os.PathLike, ens: Ensemble, *, series: dict | None = None,
                 source: str | os.PathLike | None = None) -> None:
    """Write `ens` as a netCDF-4 file (layout in the module docstring) with xarray and h5netcdf, atomically."""
    _require("h5netcdf", "netCDF export")
    ds = to_xarray(ens, series=series)
    ds.attrs["rgdiff_provenance"] = json.dumps(provenance_record(ens, source))
    chains, samples = ens.fields.shape[:2]
    per_config = max(1, int(np.prod(ens.lattice.shape)) * 8)
    k = int(min(samples, max(1, 2**20 // per_config)))
    encoding = {name: {"_FillValue": None} for name in ds.data_vars}
    encoding["phi"].update({"zlib": True, "complevel": 1, "shuffle": True, "chunksizes": (1, k, *ens.lattice.shape)})
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)


def writer(to: str):
    """The writer of an export target ("npz" or "netcdf"), checking its optional packages first."""
    if to == "npz":
        return write_npz
    if to == "netcdf":
        _require("xarray", "netCDF export")
        _require("h5netcdf", "netCDF export")
        return write_netcdf
    raise RgdiffError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")


# reading arrays to import ------------------------------------------------------------------


@dataclasses.dataclass
class ArraySource:
    """Configurations read from a file to import, with whatever provenance it carries."""

    path: Path
    kind: str  # "npy", "npz" or "netcdf"
    fields: np.ndarray  # (chains, samples, *lattice), as stored (may be a read-only memory map)
    provenance: dict | None = None  # the record of an rgdiff export
    mc_time: np.ndarray | None = None


def read_array(path: str | os.PathLike) -> ArraySource:
    """Read configurations to import: a NumPy .npy array (chains, samples, *lattice), an .npz with
    a `fields` array (or a single array), or a netCDF file written by `rgdiff export`. The kind
    is told by the file's content, not its name. The fields are checked (`check_fields`)."""
    path = Path(path)
    if not path.exists():
        raise ReadArrayError(f"{path} does not exist")
    if path.is_dir():
        raise ReadArrayError(f"{path} is a folder, not an array file")
    from rgdiff.io.reading import require_regular_file

    require_regular_file(path, ReadArrayError, "array file")  # a FIFO would hang, /dev/zero never end
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
    except OSError as exc:
        raise ReadArrayError(f"cannot read {path} ({exc.strerror})") from None
    src = _read_netcdf(path) if magic == HDF5_MAGIC else _read_numpy(path)
    check_fields(src.path, src.fields)
    if src.mc_time is not None:
        t = np.asarray(src.mc_time)
        if t.shape != (src.fields.shape[1],) or t.dtype.kind not in "iu":
            raise ReadArrayError(f"{path}: mc_time must be {src.fields.shape[1]} integers, got shape {t.shape} dtype {t.dtype}")
    return src


def check_fields(path: Path, fields: np.ndarray) -> None:
    """One clear error unless `fields` are finite floats of shape (chains >= 1, samples >= 2, N, ..., N)
    with 1 to 3 lattice axes of one length N."""
    shape, dtype = fields.shape, fields.dtype
    if dtype.kind != "f" or dtype.itemsize > 8:
        raise ReadArrayError(f"{path} holds {dtype} values; expected floating point (float64, float32 or float16)")
    if not 3 <= len(shape) <= 5:
        raise ReadArrayError(
            f"{path} holds an array of shape {shape}; expected (chains, samples, *lattice) with 1 to 3 lattice axes"
        )
    if len(set(shape[2:])) != 1:
        raise ReadArrayError(f"{path}: the lattice axes of shape {shape} differ in length; expected N x ... x N")
    if shape[0] < 1 or shape[1] < 2:
        raise ReadArrayError(f"{path}: an ensemble needs at least one chain of two samples, got shape {shape}")
    bad = 0
    for c in range(shape[0]):  # chain by chain: bounded memory for a memory-mapped array
        bad += int(np.count_nonzero(~np.isfinite(fields[c])))
    if bad:
        raise ReadArrayError(f"{path} contains {bad} NaN or infinite values; an ensemble must be finite")


def _read_numpy(path: Path) -> ArraySource:
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ReadArrayError(f"{path} is not a NumPy .npy/.npz file (or holds Python objects, which are not read)") from None
        raise ReadArrayError(f"{path} is a damaged NumPy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ReadArrayError(f"{path} is not a readable NumPy file ({exc.__class__.__name__})") from None
    if isinstance(loaded, np.ndarray):
        if loaded.dtype.hasobject:
            raise ReadArrayError(f"{path} holds Python objects; expected floating point")
        return ArraySource(path, "npy", loaded)
    with loaded:
        names = list(loaded.files)
        try:
            if "fields" in names:
                fields = loaded["fields"]
            elif len(names) == 1:
                fields = loaded[names[0]]
            else:
                raise ReadArrayError(f"{path} holds arrays {', '.join(names) or '(none)'}; expected one named 'fields'")
            provenance = _provenance(path, str(loaded["provenance"][()])) if "provenance" in names else None
            mc_time = loaded["mc_time"] if "mc_time" in names else None
        except ReadArrayError:
            raise
        except Exception as exc:  # damaged zip members: zipfile.BadZipFile, ValueError, EOFError, ...
            raise ReadArrayError(f"{path} is a damaged .npz file ({exc.__class__.__name__})") from None
    return ArraySource(path, "npz", fields, provenance, mc_time)


def _read_netcdf(path: Path) -> ArraySource:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            is_ensemble = isinstance(fmt, str) and fmt == FORMAT
    except Exception:  # not readable by HDF5: xarray says so below
        is_ensemble = False
    if is_ensemble:
        raise ReadArrayError(f"{path} is already an rgdiff ensemble; there is nothing to import")
    xr = _require("xarray", "netCDF import")
    _require("h5netcdf", "netCDF import")
    try:
        with xr.open_dataset(path, engine="h5netcdf", mask_and_scale=False, decode_times=False,
                             decode_timedelta=False) as ds:
            if "phi" not in ds.data_vars:
                raise ReadArrayError(
                    f"{path} has no variable 'phi' (rgdiff imports the netCDF files that `rgdiff export --to netcdf` writes)"
                )
            phi = ds["phi"]
            space = [d for d in LATTICE_DIMS if d in phi.dims]
            if set(phi.dims) != {"chain", "draw", *space}:
                raise ReadArrayError(f"{path}: 'phi' has dimensions {phi.dims}; expected (chain, draw, x[, y, z])")
            fields = phi.transpose("chain", "draw", *space).values
            mc_time = ds["mc_time"].values if "mc_time" in ds.coords else None
            record = ds.attrs.get("rgdiff_provenance")
    except ReadArrayError:
        raise
    except Exception as exc:  # xarray/h5netcdf raise many types for files that are not netCDF
        raise ReadArrayError(f"{path} is HDF5 but not a readable netCDF file ({exc.__class__.__name__})") from None
    return ArraySource(path, "netcdf", fields, None if record is None else _provenance(path, str(record)), mc_time)


def _provenance(path: Path, text: str) -> dict:
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError("not an rgdiff provenance record")
        desc = record["theory"]
        Phi4(Lattice(int(desc["dim"]), int(desc["size"]), float(desc["length"])), float(desc["m2"]), float(desc["lam"]))
        if not isinstance(record.get("markov"), bool):
            raise ValueError("markov is not true or false")
    except RgdiffError as exc:
        raise ReadArrayError(f"{path} records an invalid theory: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ReadArrayError(f"{path} has a damaged provenance record ({exc.__class__.__name__}: {exc})") from None
    return record


def imported_ensemble(src: ArraySource, *, theory: Phi4 | None = None, markov: bool | None = None,
                      units: dict | None = None) -> Ensemble:
    """The ensemble of an imported file. With a provenance record (an rgdiff export) the theory,
    seed, sampler, diagnostics, units, versions and creation time are the record's, and `theory`
    and `markov`, if given, must agree with it; otherwise `theory` is required and `markov`
    defaults to True (Markov chains: errors by the Gamma method)."""
    record = {"source": str(src.path), "source_sha256": file_checksum(src.path), "source_format": src.kind}
    fields = np.array(src.fields, dtype=np.float64)  # a copy: never a view of the source's memory map
    prov = src.provenance
    if prov is not None:
        desc = prov["theory"]
        recorded = Phi4(Lattice(int(desc["dim"]), int(desc["size"]), float(desc["length"])), float(desc["m2"]), float(desc["lam"]))
        if theory is not None and theory != recorded:
            raise ReadArrayError(
                f"{src.path} records the theory {_theory_text(recorded)}; the options given describe "
                f"{_theory_text(theory)} (leave them out to import it as recorded)"
            )
        if markov is not None and markov != prov["markov"]:
            raise ReadArrayError(
                f"{src.path} records {'Markov chains' if prov['markov'] else 'independent samples'}; "
                f"drop --{'markov' if markov else 'independent'} to import it as recorded"
            )
        theory = recorded
        extra = prov.get("extra") if isinstance(prov.get("extra"), dict) else {}
        ens = Ensemble(theory, fields, markov=prov["markov"], seed=prov.get("seed"), sampler=prov.get("sampler") or {},
                       diagnostics=prov.get("diagnostics") or {}, units=prov.get("units") or {},
                       extra={**extra, "import": record}, versions=prov.get("versions") or {},
                       created=str(prov.get("created") or ""), mc_time=src.mc_time)
    else:
        if theory is None:
            raise ReadArrayError(
                f"{src.path} records no theory: give it as for rgdiff sample (--units, --m2 and --lam, or --kappa and --lambda-h)"
            )
        ens = Ensemble(theory, fields, markov=True if markov is None else markov, sampler={},
                       units={k: v for k, v in (units or {}).items() if v is not None},
                       extra={"command": "rgdiff import", "import": record}, mc_time=src.mc_time)
    if fields.shape[2:] != theory.lattice.shape:
        raise ReadArrayError(
            f"{src.path} holds configurations of shape {fields.shape[2:]}, but the theory's lattice is {theory.lattice.shape}"
        )
    return ens


def _theory_text(t: Phi4) -> str:
    lat = t.lattice
    return f"d={lat.dim} N={lat.size} L={lat.length:g} m2={t.m2:g} lam={t.lam:g}"
