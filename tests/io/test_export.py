"""Data that travel: `rgdiff export` (npz, netCDF-4) and `rgdiff import` round trips bitwise with
their provenance (checked with NumPy and h5py alone), ArviZ's ESS agrees with rgdiff's Gamma method
and with the closed form of an AR(1) chain, and every bad input is one line and exit code 2 with
nothing left on disk."""

import hashlib
import json
import sys
from unittest import mock

import h5py
import numpy as np
import pytest

import rgdiff
from rgdiff.cli.app import main
from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
from rgdiff.lattice.geometry import Lattice
from rgdiff.theory.phi4 import Phi4
import cli_errors

THEORY = Phi4(Lattice(2, 4, 1.0), -2.0, 0.0017)
PROVENANCE = {  # what the exported files must carry, written out by hand
    "format": "rgdiff-ensemble",
    "format_version": 2,
    "theory": {"theory": "phi4", "dim": 2, "size": 4, "length": 1.0, "m2": -2.0, "lam": 0.0017},
    "sampler": {"algorithm": "nuts", "chains": 2, "thin": 2},
    "diagnostics": {"acceptance_rate": [0.8, 0.9], "divergences": [0, 1]},
    "seed": 42,
    "markov": True,
    "units": {"units": "physical", "m2": -2.0, "lam": 0.0017},
    "versions": {"rgdiff": "0.1.0", "jax": "0.0.test"},
    "created": "2025-01-02T03:04:05+00:00",
    "extra": {"command": "rgdiff sample", "config": {"seed": 42}},
}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def numpy_action(phi, m2, lam, spacing, dim):
    """S[phi] of the conventions page in NumPy, independent of `Phi4.action`."""
    axes = tuple(range(phi.ndim - dim, phi.ndim))
    kinetic = sum((np.roll(phi, -1, axis=ax) - phi) ** 2 for ax in axes)
    return spacing**dim * (0.5 * kinetic / spacing**2 + 0.5 * m2 * phi**2 + lam / 24.0 * phi**4).sum(axis=axes)


@pytest.fixture
def ensemble(tmp_path):
    fields = np.random.default_rng(0).normal(size=(2, 7, 4, 4))
    p = PROVENANCE
    ens = Ensemble(THEORY, fields, markov=True, seed=p["seed"], sampler=p["sampler"], diagnostics=p["diagnostics"],
                   units=p["units"], extra=p["extra"], versions=p["versions"], created=p["created"])
    save_ensemble(tmp_path / "e.h5", ens)
    return fields, tmp_path / "e.h5"


def ok(capsys, *args) -> str:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def fails(capsys, *args, fragment=""):
    return cli_errors.fails(capsys, args, fragment)


def check_imported(path, fields, source):
    """The re-imported ensemble: the same bytes and the same provenance, plus the import record."""
    back = load_ensemble(path)
    assert back.fields.dtype == np.float64 and back.fields.tobytes() == fields.tobytes()
    p = PROVENANCE
    assert back.theory == THEORY and back.markov is True and back.seed == p["seed"]
    assert (back.sampler, back.diagnostics, back.units, back.versions, back.created) == (
        p["sampler"], p["diagnostics"], p["units"], p["versions"], p["created"])
    assert back.extra == {**p["extra"], "import": {"source": str(source), "source_sha256": sha256(source),
                                                    "source_format": source.suffix.lstrip(".").replace("nc", "netcdf")}}
    np.testing.assert_array_equal(back.mc_time, 2 * np.arange(1, 8))  # thin 2


def test_npz_round_trip_is_bitwise_with_provenance(ensemble, tmp_path, capsys):
    fields, h5 = ensemble
    out = tmp_path / "e.npz"
    ok(capsys, "export", h5, "--to", "npz", "--out", out, "--quiet")
    with np.load(out, allow_pickle=False) as z:  # NumPy alone, no pickle
        assert z["fields"].tobytes() == fields.tobytes()
        np.testing.assert_allclose(z["action"], numpy_action(fields, -2.0, 0.0017, 0.25, 2), rtol=1e-13)
        np.testing.assert_array_equal(z["magnetization"], fields.mean(axis=(2, 3)))
        np.testing.assert_array_equal(z["max_abs_phi"], np.abs(fields).max(axis=(2, 3)))
        np.testing.assert_array_equal(z["mc_time"], 2 * np.arange(1, 8))
        record = json.loads(str(z["provenance"]))
    assert record == {**PROVENANCE, "exported_from": {"file": str(h5), "sha256": sha256(h5)}}
    ok(capsys, "import", out, "--out", tmp_path / "back.h5", "--quiet")
    check_imported(tmp_path / "back.h5", fields, out)


def test_netcdf_round_trip_is_bitwise_with_provenance(ensemble, tmp_path, capsys):
    fields, h5 = ensemble
    out = tmp_path / "e.nc"
    ok(capsys, "export", h5, "--to", "netcdf", "--out", out, "--quiet")
    with h5py.File(out, "r") as f:  # netCDF-4 is HDF5: read it without xarray
        assert f["phi"][...].tobytes() == fields.tobytes() and f["phi"].compression == "gzip"
        assert [f[d.decode() if isinstance(d, bytes) else d].size for d in ("chain", "draw", "x", "y")] == [2, 7, 4, 4]
        np.testing.assert_array_equal(f["M"][...], fields.mean(axis=(2, 3)))
        np.testing.assert_array_equal(f["mc_time"][...], 2 * np.arange(1, 8))
        record = json.loads(f.attrs["rgdiff_provenance"])
        assert (f.attrs["m2"], f.attrs["lam"], f.attrs["lattice_size"]) == (-2.0, 0.0017, 4)
    assert record == {**PROVENANCE, "exported_from": {"file": str(h5), "sha256": sha256(h5)}}
    ok(capsys, "import", out, "--out", tmp_path / "back.h5", "--quiet")
    check_imported(tmp_path / "back.h5", fields, out)


def test_import_a_numpy_array_with_the_theory_from_the_command_line(tmp_path, capsys):
    phi = np.random.default_rng(1).normal(size=(3, 5, 8, 8)).astype(np.float32)
    np.save(tmp_path / "phi.npy", phi)
    ok(capsys, "import", tmp_path / "phi.npy", "--dim", 2, "--size", 8, "--units", "albergo", "--m2", -4, "--lam", 6.008,
       "--independent", "--out", tmp_path / "a.h5", "--quiet")
    ens = load_ensemble(tmp_path / "a.h5")
    assert ens.fields.tobytes() == phi.astype(np.float64).tobytes()  # float32 -> float64 is exact
    assert ens.theory == Phi4(Lattice(2, 8, 8.0), -4.0, 6 * 6.008)  # Albergo's lam_A: lam = 6 lam_A
    assert ens.markov is False and ens.seed is None
    assert ens.units == {"units": "albergo", "m2": -4.0, "lam": 6.008}
    assert ens.extra["import"] == {"source": str(tmp_path / "phi.npy"), "source_sha256": sha256(tmp_path / "phi.npy"),
                                   "source_format": "npy"}
    np.testing.assert_array_equal(ens.mc_time, np.arange(1, 6))
    info = json.loads(ok(capsys, "info", tmp_path / "a.h5", "--json"))
    assert info["imported"]["source_sha256"] == sha256(tmp_path / "phi.npy") and info["command"] == "rgdiff import"
    # dim and size default to the array's; Markov chains by default
    ok(capsys, "import", tmp_path / "phi.npy", "--units", "lattice", "--m2", 1, "--lam", 0, "--out", tmp_path / "b.h5",
       "--quiet")
    assert load_ensemble(tmp_path / "b.h5").markov is True


def test_import_and_export_share_the_theory_options_of_sample():
    import typer

    from rgdiff.cli.app import app

    commands = typer.main.get_command(app).commands
    for name in ("length", "m2", "lam", "kappa", "lambda_h", "units"):
        a, b = (next(p for p in commands[c].params if p.name == name) for c in ("sample", "import"))
        assert (a.opts, a.help, a.default) == (b.opts, b.help, b.default)


# bad input: one line, exit code 2, nothing written ----------------------------------------------


BAD_ARRAYS = {
    "missing.npy": (None, "does not exist"),
    "garbage.npy": (b"this is not numpy at all" * 10, "not a NumPy"),
    "empty.npy": (b"", "not a readable NumPy file"),
    "objects.npy": (np.array([{"a": 1}, None], dtype=object), "Python objects"),
    "ints.npy": (np.zeros((2, 5, 4, 4), dtype=np.int64), "expected floating point"),
    "complex.npy": (np.zeros((2, 5, 4, 4), dtype=np.complex128), "expected floating point"),
    "flat.npy": (np.zeros((10, 16)), "expected (chains, samples, *lattice)"),
    "fourd.npy": (np.zeros((1, 2, 2, 2, 2, 2)), "expected (chains, samples, *lattice)"),
    "rect.npy": (np.zeros((2, 5, 4, 3)), "differ in length"),
    "onesample.npy": (np.zeros((2, 1, 4, 4)), "at least one chain of two samples"),
    "nan.npy": (np.where(np.eye(4) > 0, np.nan, 0.0)[None, None].repeat(3, axis=1), "contains 12 NaN or infinite"),
    "inf.npy": (np.full((1, 2, 4, 4), np.inf), "contains 32 NaN or infinite"),
    "many.npz": ({"a": np.zeros((2, 5, 4, 4)), "b": np.zeros(3)}, "expected one named 'fields'"),
    "foreign.h5": ("hdf5", "not a readable netCDF file"),
}


def make_bad(path, content):
    if content is None:
        return
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, str):
        with h5py.File(path, "w") as f:
            f["data"] = np.zeros(3)
    else:
        np.save(path, content, allow_pickle=content.dtype.hasobject)


@pytest.mark.parametrize("name", BAD_ARRAYS)
def test_bad_arrays_are_refused_in_one_line(tmp_path, capsys, name):
    content, fragment = BAD_ARRAYS[name]
    src = tmp_path / name
    make_bad(src, content)
    before = sorted(p.name for p in tmp_path.iterdir())
    fails(capsys, "import", src, "--units", "lattice", "--m2", 1, "--lam", 1, "--out", tmp_path / "o.h5",
          fragment=fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written, no lock left


def test_bad_options_are_refused_in_one_line(ensemble, tmp_path, capsys):
    fields, h5 = ensemble
    np.save(tmp_path / "phi.npy", fields)
    args = ["import", tmp_path / "phi.npy", "--out", tmp_path / "o.h5"]
    before = sorted(p.name for p in tmp_path.iterdir())
    fails(capsys, *args, "--m2", 1, "--lam", 1, "--dim", 3, fragment="not --dim 3")
    fails(capsys, *args, "--m2", 1, "--lam", 1, "--size", 8, fragment="not --size 8")
    fails(capsys, *args, fragment="records no theory")
    fails(capsys, *args, "--m2", 1, fragment="needs both m2 and lam")
    fails(capsys, *args, "--m2", 1, "--lam", -1, fragment="unbounded below")
    fails(capsys, *args, "--units", "lattice", "--m2", 1, "--lam", 1, "--length", 2, fragment="do not give a length")
    fails(capsys, "import", h5, "--out", tmp_path / "o.h5", fragment="already an rgdiff ensemble")
    fails(capsys, "import", tmp_path / "phi.npy", "--m2", 1, "--lam", 1, "--out", tmp_path / "phi.npy",
          fragment="is the input file")
    fails(capsys, *args[:2], "--m2", 1, "--lam", 1, "--out", tmp_path, fragment="is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # an export's provenance wins over options that contradict it
    ok(capsys, "export", h5, "--to", "npz", "--out", tmp_path / "e.npz", "--quiet")
    fails(capsys, "import", tmp_path / "e.npz", "--m2", 5, "--lam", 1, "--out", tmp_path / "o.h5",
          fragment="records the theory d=2 N=4 L=1 m2=-2")
    fails(capsys, "import", tmp_path / "e.npz", "--independent", "--out", tmp_path / "o.h5", fragment="drop --independent")
    assert not (tmp_path / "o.h5").exists()


def test_export_refusals(ensemble, tmp_path, capsys):
    fields, h5 = ensemble
    before = sorted(p.name for p in tmp_path.iterdir())
    fails(capsys, "export", h5, "--to", "csv", "--out", tmp_path / "e.csv", fragment="--to must be one of npz, netcdf")
    fails(capsys, "export", tmp_path / "nope.h5", "--to", "npz", "--out", tmp_path / "e.npz", fragment="does not exist")
    fails(capsys, "export", h5, "--to", "npz", "--out", h5, fragment="is the input file")
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\njunk")
    fails(capsys, "export", tmp_path / "junk.h5", "--to", "npz", "--out", tmp_path / "e.npz", fragment="not a readable HDF5")
    with mock.patch.dict(sys.modules, {"h5netcdf": None}):  # the optional extra is not installed
        line = fails(capsys, "export", h5, "--to", "netcdf", "--out", tmp_path / "e.nc", fragment="h5netcdf")
    assert "pip install 'rgdiff[arviz]'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before + ["junk.h5"]


# ArviZ ---------------------------------------------------------------------------------------


def ar1_ensemble(rho, chains, samples, seed=0):
    """Constant fields phi(n) = x_t with x an AR(1) chain of unit variance: M = x_t exactly."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    x = np.empty((chains, samples))
    for c in range(chains):
        eps = rng.normal(size=samples)
        x[c], _ = lfilter([np.sqrt(1 - rho**2)], [1.0, -rho], eps, zi=[rho * rng.normal()])
    fields = np.repeat(x[:, :, None], 2, axis=2)  # d = 1, N = 2
    return Ensemble(Phi4(Lattice(1, 2, 1.0), 1.0, 0.0), fields, markov=True)


def test_arviz_ess_agrees_with_the_gamma_method_and_the_closed_form():
    """AR(1) with rho = 0.8: tau_int = (1 + rho) / (2 (1 - rho)) = 4.5, ESS = N / (2 tau_int)."""
    import arviz as az

    from rgdiff.observables.stats import tau_int

    rho, chains, samples = 0.8, 4, 50_000
    ens = ar1_ensemble(rho, chains, samples)
    idata = rgdiff.to_arviz(ens)
    n = chains * samples
    exact = n * (1 - rho) / (1 + rho)
    ess_arviz = float(az.ess(idata, var_names=["M"])["M"])
    ess_gamma = n / (2 * tau_int(ens.series()["magnetization"]).tau_int)
    assert ess_arviz == pytest.approx(exact, rel=0.05)
    assert ess_gamma == pytest.approx(exact, rel=0.05)
    assert ess_arviz == pytest.approx(ess_gamma, rel=0.05)
    summary = az.summary(idata)  # the one line an arviz user writes
    assert list(summary.index) == ["M", "abs_M", "action", "max_abs_phi"]
    assert abs(summary.loc["M", "r_hat"] - 1) < 0.01


def test_to_arviz_from_a_file_reads_no_fields_and_names_the_lattice_axes(tmp_path):
    theory = Phi4(Lattice(3, 3, 1.0), 1.0, 1.0)
    fields = np.random.default_rng(2).normal(size=(2, 6, 3, 3, 3))
    save_ensemble(tmp_path / "e.h5", Ensemble(theory, fields, markov=True))
    original = h5py.Dataset.__getitem__

    def guard(ds, *args):
        assert not ds.name.endswith("fields"), "the fields were read"
        return original(ds, *args)

    with mock.patch.object(h5py.Dataset, "__getitem__", guard):
        idata = rgdiff.to_arviz(tmp_path / "e.h5")
    post = idata.posterior
    assert set(post.data_vars) == {"M", "abs_M", "action", "max_abs_phi"}
    np.testing.assert_array_equal(post["M"].values, fields.mean(axis=(2, 3, 4)))
    np.testing.assert_array_equal(post["abs_M"].values, np.abs(fields.mean(axis=(2, 3, 4))))
    np.testing.assert_allclose(post["action"].values, numpy_action(fields, 1.0, 1.0, 1 / 3, 3), rtol=1e-13)
    full = rgdiff.to_arviz(tmp_path / "e.h5", fields=True).posterior["phi"]
    assert full.dims == ("chain", "draw", "x", "y", "z") and full.values.tobytes() == fields.tobytes()
    ds = rgdiff.to_xarray(tmp_path / "e.h5")
    assert ds["phi"].dims == ("chain", "draw", "x", "y", "z")
    np.testing.assert_array_equal(ds["mc_time"].values, np.arange(1, 7))


def test_missing_arviz_is_an_import_error_naming_the_extra():
    ens = ar1_ensemble(0.5, 1, 10)
    with mock.patch.dict(sys.modules, {"arviz": None}):
        with pytest.raises(ImportError, match=r"pip install 'rgdiff\[arviz\]'"):
            rgdiff.to_arviz(ens)
    with mock.patch.dict(sys.modules, {"xarray": None}):
        with pytest.raises(ImportError, match=r"rgdiff.to_xarray needs the Python package xarray"):
            rgdiff.to_xarray(ens)


# any array: imported exactly, or one clear line with nothing written ----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(array=hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.float16, np.int32, np.bool_, np.complex64]),
    shape=st.one_of(hnp.array_shapes(min_dims=1, max_dims=6, min_side=1, max_side=5),
                    st.tuples(st.integers(1, 3), st.integers(1, 4), st.just(3), st.just(3))),  # often valid
))
def test_any_array_is_imported_exactly_or_refused_in_one_line(tmp_path_factory, array):
    import contextlib
    import io

    d = tmp_path_factory.mktemp("any")
    np.save(d / "a.npy", array)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["import", str(d / "a.npy"), "--units", "lattice", "--m2", "1", "--lam", "1", "--quiet",
                     "--out", str(d / "o.h5")])
    if code == 0:
        ens = load_ensemble(d / "o.h5")
        assert ens.fields.tobytes() == array.astype(np.float64).tobytes()
        assert array.dtype.kind == "f" and np.all(np.isfinite(array)) and array.shape[1] >= 2
    else:
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("rgdiff: error:"), err.getvalue()
        assert sorted(p.name for p in d.iterdir()) == ["a.npy"]
