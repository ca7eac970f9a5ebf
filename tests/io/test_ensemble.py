"""Ensemble files: round trip, refusal of missing/damaged/foreign files, the format-2 layout
(chunked, compressed, per-configuration series checked against independent NumPy formulas),
lazily verified provenance, and format-1 files still read."""

import hashlib
import json
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest

from rgdiff.io.atomic import atomic_path
from rgdiff.io.ensemble import Ensemble, load_ensemble, load_series, read_header, save_ensemble
from rgdiff.errors import ReadEnsembleError
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4

THEORY = Phi4(Lattice(2, 4, 1.0), -2.0, 0.0017)


def make(tmp_path, name="e.h5"):
    rng = np.random.default_rng(0)
    ens = Ensemble(
        theory=THEORY,
        fields=rng.normal(size=(2, 5, 4, 4)),
        markov=True,
        seed=42,
        sampler={"algorithm": "nuts", "chains": 2},
        diagnostics={"acceptance_rate": [0.8, 0.9]},
        units={"units": "physical"},
    )
    path = tmp_path / name
    save_ensemble(path, ens)
    return ens, path


def test_round_trip_keeps_fields_and_provenance(tmp_path):
    ens, path = make(tmp_path)
    back = load_ensemble(path)
    np.testing.assert_array_equal(back.fields, ens.fields)
    assert back.theory == THEORY
    assert back.seed == 42 and back.markov is True
    assert back.sampler == ens.sampler and back.diagnostics == ens.diagnostics
    assert "jax" in back.versions and "blackjax" in back.versions
    assert back.created
    assert [p.name for p in tmp_path.iterdir()] == ["e.h5"]  # no temporary left behind


def test_missing_file(tmp_path):
    with pytest.raises(ReadEnsembleError, match="does not exist"):
        load_ensemble(tmp_path / "nope.h5")


def test_truncated_file(tmp_path):
    _, path = make(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ReadEnsembleError, match="truncated|not a readable"):
        load_ensemble(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "g.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(ReadEnsembleError, match="not a readable HDF5"):
        load_ensemble(path)


def test_foreign_hdf5(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ReadEnsembleError, match="not an rgdiff ensemble"):
        load_ensemble(path)


def resealed(f, name, value):
    """Set an attribute and record the matching checksum (a writer's bug, not damage on disk)."""
    from rgdiff.io.ensemble import HASHED_ATTRS_V2, attributes_sha256

    f.attrs[name] = value
    f.attrs["sha256"] = attributes_sha256({k: f.attrs[k] for k in HASHED_ATTRS_V2})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.attrs.__setitem__("theory", "{not json"), "is corrupt: its metadata"),  # the checksum first
        (lambda f: resealed(f, "theory", "{not json"), "damaged metadata"),
        (lambda f: resealed(f, "theory", '{"dim": 2, "size": 4, "length": 1.0, "m2": -1.0, "lam": 0.0}'), "invalid theory"),
        (lambda f: f.attrs.__setitem__("format_version", 99), "version 99"),
        (lambda f: f.__delitem__("fields"), "no 'fields'"),
        (lambda f: (f.__delitem__("fields"), f.create_dataset("fields", data=np.zeros((2, 5, 3, 4)))), "shape"),
        (lambda f: (f.__delitem__("fields"), f.create_dataset("fields", data=np.zeros((2, 5, 4, 4), dtype=int))), "dtype"),
        (lambda f: f["fields"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
    ],
)
def test_damaged_ensembles(tmp_path, mutate, message):
    _, path = make(tmp_path)
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(ReadEnsembleError, match=message):
        load_ensemble(path)


def test_interrupted_write_leaves_old_file(tmp_path):
    _, path = make(tmp_path)
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["e.h5"]


# format 2: chunked, compressed, per-configuration series, lazily verifiable provenance --------


def numpy_action(phi, m2, lam, spacing, dim):
    """S[phi] of the conventions page, written independently of `Phi4.action` (NumPy)."""
    axes = tuple(range(phi.ndim - dim, phi.ndim))
    kinetic = sum((np.roll(phi, -1, axis=ax) - phi) ** 2 for ax in axes)
    density = 0.5 * kinetic / spacing**2 + 0.5 * m2 * phi**2 + lam / 24.0 * phi**4
    return spacing**dim * density.sum(axis=axes)


def test_layout_is_chunked_compressed_with_the_series_beside_the_fields(tmp_path):
    from rgdiff.observables.estimators import magnetization

    theory = Phi4(Lattice(2, 8, 2.0), -1.5, 3.0)
    rng = np.random.default_rng(1)
    fields = rng.normal(size=(3, 40, 8, 8))
    save_ensemble(tmp_path / "e.h5", Ensemble(theory, fields, markov=True, sampler={"thin": 3}))
    with h5py.File(tmp_path / "e.h5", "r") as f:  # read with h5py alone: what any HDF5 tool sees
        assert f.attrs["format_version"] == 2
        ds = f["fields"]
        assert ds.compression == "gzip" and ds.shuffle and ds.chunks[:2] == (1, 40) and ds.chunks[2:] == (8, 8)
        np.testing.assert_array_equal(ds[...], fields)
        np.testing.assert_allclose(f["action"][...], numpy_action(fields, -1.5, 3.0, 0.25, 2), rtol=1e-13)
        np.testing.assert_array_equal(f["magnetization"][...], fields.mean(axis=(2, 3)))
        np.testing.assert_array_equal(f["magnetization"][...], magnetization(fields, theory.lattice))  # one M
        np.testing.assert_array_equal(f["max_abs_phi"][...], np.abs(fields).max(axis=(2, 3)))
        np.testing.assert_array_equal(f["mc_time"][...], 3 * np.arange(1, 41))
        specs = json.loads(f.attrs["datasets"])
        for name in ("fields", "action", "magnetization", "max_abs_phi", "mc_time"):
            assert specs[name]["sha256"] == hashlib.sha256(f[name][...].astype(f[name].dtype.newbyteorder("<")).tobytes()).hexdigest()


def test_action_of_constant_fields_is_the_closed_form(tmp_path):
    """phi = c everywhere: S = L^d (m2 c^2 / 2 + lam c^4 / 24) (no gradient term)."""
    theory = Phi4(Lattice(3, 4, 1.5), 0.7, 2.0)
    c = np.array([-1.3, 0.0, 0.4, 2.0])
    fields = np.broadcast_to(c[None, :, None, None, None], (1, 4, 4, 4, 4))
    save_ensemble(tmp_path / "c.h5", Ensemble(theory, fields, markov=False))
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_allclose(f["action"][0], 1.5**3 * (0.7 * c**2 / 2 + 2.0 * c**4 / 24), rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(f["mc_time"][...], np.arange(1, 5))  # independent samples: 1..S


def big_ensemble(path, samples=600):
    """About 20 MB of incompressible fields (random doubles), 4 chains on 32^2."""
    theory = Phi4(Lattice.lattice_units(2, 32), -4.0, 27.0)
    fields = np.random.default_rng(2).normal(size=(4, samples, 32, 32))
    save_ensemble(path, Ensemble(theory, fields, markov=True, seed=3, extra={"config": {"seed": 3}}))
    return fields


def bytes_read() -> int:
    """Bytes this process has read through read(2)-like calls (Linux /proc/self/io rchar)."""
    stats = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(stats["rchar"])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_info_reads_the_attributes_not_the_fields(tmp_path, capsys):
    from rgdiff.cli.app import main
    from rgdiff.io.provenance import describe

    path = tmp_path / "big.h5"
    fields = big_ensemble(path)
    size = path.stat().st_size
    assert size > 0.8 * fields.nbytes  # the fields are the file (random doubles barely compress)
    describe(path)  # imports done
    before = bytes_read()
    with mock.patch.object(h5py.Dataset, "__getitem__", side_effect=AssertionError("a dataset was read")):
        d = describe(path)
    assert bytes_read() - before < 0.01 * size, (bytes_read() - before, size)
    assert d["seed"] == 3 and d["shape (chains, samples, *lattice)"] == [4, 600, 32, 32]
    assert "fields not verified" in d["integrity"] and d["content_sha256"]
    assert main(["info", str(path)]) == 0
    assert "fields not verified" in capsys.readouterr().out


def test_info_never_shows_damaged_provenance_as_valid(tmp_path, capsys):
    from rgdiff.cli.app import main
    from rgdiff.io.provenance import describe

    _, path = make(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["seed"] = "43"  # valid JSON, plausible, but not what was written
    with pytest.raises(ReadEnsembleError, match="metadata do not match the SHA-256"):
        describe(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is corrupt" in err[0]
    _, path = make(tmp_path, "f.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["datasets"] = f.attrs["datasets"].replace('"fields"', '"field"')
    with pytest.raises(ReadEnsembleError, match="is corrupt"):
        read_header(path)


@pytest.mark.parametrize("name", ["fields", "action", "magnetization", "max_abs_phi", "mc_time"])
def test_damaged_data_are_found_when_read(tmp_path, name):
    """A changed value in any dataset passes the lazy header check (which says the fields are not
    verified) but is refused by every reader of the data."""
    _, path = make(tmp_path)
    with h5py.File(path, "r+") as f:
        ds = f[name]
        index = (0,) * ds.ndim
        ds[index] = ds[index] + 1
    assert "not verified" in read_header(path).integrity
    with pytest.raises(ReadEnsembleError, match=f"is corrupt: its {name} do not match"):
        load_ensemble(path)
    if name != "fields":
        with pytest.raises(ReadEnsembleError, match=f"is corrupt: its {name} do not match"):
            load_series(path)


def test_series_are_read_without_the_fields(tmp_path):
    ens, path = make(tmp_path)
    with mock.patch.object(h5py.Dataset, "__getitem__", guard_fields(h5py.Dataset.__getitem__)):
        header, series = load_series(path)
    assert header.shape == (2, 5, 4, 4)
    np.testing.assert_allclose(series["action"], numpy_action(ens.fields, THEORY.m2, THEORY.lam, 0.25, 2), rtol=1e-13)
    np.testing.assert_array_equal(series["magnetization"], ens.fields.mean(axis=(2, 3)))
    np.testing.assert_array_equal(series["mc_time"], np.arange(1, 6))


def guard_fields(original):
    def read(ds, *args):
        assert not ds.name.endswith("fields"), "the fields were read"
        return original(ds, *args)

    return read


def write_format_1(path, fields, theory, *, checksum=True):
    """A format-1 file as rgdiff 0.1 wrote it (layout and checksum from its documentation)."""
    attrs = {"format": "rgdiff-ensemble", "format_version": 1, "theory": json.dumps(theory.describe()),
             "sampler": json.dumps({"algorithm": "nuts"}), "diagnostics": json.dumps({}), "seed": json.dumps(9),
             "markov": "true", "units": json.dumps({}), "extra": json.dumps({}), "versions": json.dumps({"rgdiff": "0.1.0"}),
             "created": "2024-01-01T00:00:00+00:00"}
    h = hashlib.sha256(np.ascontiguousarray(fields, dtype="<f8").tobytes())
    for k in sorted(attrs):
        h.update(f"\0{k}={attrs[k]}".encode())
    with h5py.File(path, "w") as f:
        f.create_dataset("fields", data=fields)
        for k, v in attrs.items():
            f.attrs[k] = v
        if checksum:
            f.attrs["sha256"] = h.hexdigest()


def test_format_1_files_still_load(tmp_path):
    fields = np.random.default_rng(4).normal(size=(2, 6, 4, 4))
    write_format_1(tmp_path / "old.h5", fields, THEORY)
    ens = load_ensemble(tmp_path / "old.h5")
    np.testing.assert_array_equal(ens.fields, fields)
    assert ens.seed == 9 and ens.theory == THEORY and ens.created == "2024-01-01T00:00:00+00:00"
    header = read_header(tmp_path / "old.h5")
    assert header.format_version == 1 and "whole content was hashed" in header.integrity
    _, series = load_series(tmp_path / "old.h5")
    np.testing.assert_allclose(series["action"], numpy_action(fields, THEORY.m2, THEORY.lam, 0.25, 2), rtol=1e-13)
    with h5py.File(tmp_path / "old.h5", "r+") as f:
        f["fields"][0, 0, 0, 0] += 1.0
    with pytest.raises(ReadEnsembleError, match="is corrupt"):
        load_ensemble(tmp_path / "old.h5")
    with pytest.raises(ReadEnsembleError, match="is corrupt"):
        read_header(tmp_path / "old.h5")  # format 1: the header can only be trusted after hashing it all
    write_format_1(tmp_path / "older.h5", fields, THEORY, checksum=False)
    assert "not verified" in read_header(tmp_path / "older.h5").integrity
    np.testing.assert_array_equal(load_ensemble(tmp_path / "older.h5").fields, fields)
