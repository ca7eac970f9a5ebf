import h5py
import numpy as np
import pytest

from rgdiff.io.atomic import atomic_path
from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
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


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.attrs.__setitem__("theory", "{not json"), "damaged metadata"),
        (lambda f: f.attrs.__setitem__("theory", '{"dim": 2, "size": 4, "length": 1.0, "m2": -1.0, "lam": 0.0}'), "invalid theory"),
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
