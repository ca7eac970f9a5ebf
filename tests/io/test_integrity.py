"""Silent wrong results (issue 16): every rgdiff file that is read back is verified, so an altered
file is refused, never used. Ensembles whose checksum was removed, model parameters with one
flipped bit, checkpoint headers with an edited step, `rgdiff info` on a file whose checksum fails."""

import json
import shutil
import tomllib
import warnings

import h5py
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rgdiff.errors import ReadEnsembleError, RgdiffWarning
from rgdiff.io import _toml
from rgdiff.io.checkpoint import FILE, Checkpointer, ReadCheckpointError, read_checkpoint, write_checkpoint
from rgdiff.io.ensemble import Ensemble, load_ensemble, read_header, save_ensemble
from rgdiff.io.modeldir import CONFIG, PARAMS, ReadModelError, load_model_dir, write_model
from rgdiff.theory.phi4 import make_phi4
from cli_errors import error_line, run_cli

THEORY = make_phi4(2, 4, units="lattice", m2=1.0, lam=2.0)
FEW = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                     HealthCheck.function_scoped_fixture])


cli = run_cli


def refused(args, *fragments):
    code, out, err = cli(args)
    error_line(code, err, *fragments)
    assert out == ""  # no provenance shown for a file that fails its checks


# ensembles -----------------------------------------------------------------------------------------


def write_format_1(path, fields, *, created, checksum):
    from rgdiff.io.ensemble import content_sha256

    attrs = {"format": "rgdiff-ensemble", "format_version": 1, "theory": json.dumps(THEORY.describe()),
             "sampler": "{}", "diagnostics": "{}", "seed": "1", "markov": "true", "units": "{}", "extra": "{}",
             "versions": "{}", "created": created}
    with h5py.File(path, "w") as f:
        f.create_dataset("fields", data=fields)
        for k, v in attrs.items():
            f.attrs[k] = v
        if checksum:
            f.attrs["sha256"] = content_sha256(fields, attrs)


def test_a_removed_checksum_is_not_taken_for_a_legacy_file(tmp_path):
    """The probe: delete `sha256`, multiply the fields by 3. Format 2 refuses; a format-1 file
    written after rgdiff began to record checksums refuses; only a truly legacy file (created
    before that) is read, and then `info` says it is not verified."""
    fields = np.random.default_rng(0).normal(size=(2, 8, 4, 4))
    save_ensemble(tmp_path / "v2.h5", Ensemble(THEORY, fields, markov=True, seed=1))
    with h5py.File(tmp_path / "v2.h5", "r+") as f:
        del f.attrs["sha256"]
        f["fields"][...] = 3 * f["fields"][...]
    with pytest.raises(ReadEnsembleError, match="is corrupt"):
        load_ensemble(tmp_path / "v2.h5")
    refused(["info", tmp_path / "v2.h5"], "corrupt")
    write_format_1(tmp_path / "v1.h5", fields, created="2026-12-01T10:00:00+00:00", checksum=True)
    with h5py.File(tmp_path / "v1.h5", "r+") as f:
        del f.attrs["sha256"]
        f["fields"][...] = 3 * f["fields"][...]
    with pytest.raises(ReadEnsembleError, match="sha256 attribute is missing"):
        load_ensemble(tmp_path / "v1.h5")
    refused(["info", tmp_path / "v1.h5"], "may have been altered")
    refused(["measure", tmp_path / "v1.h5"], "may have been altered")
    write_format_1(tmp_path / "legacy.h5", fields, created="2026-11-29T14:30:00+00:00", checksum=False)
    np.testing.assert_array_equal(load_ensemble(tmp_path / "legacy.h5").fields, fields)
    assert read_header(tmp_path / "legacy.h5").integrity.startswith("not verified")


@pytest.mark.parametrize("edit, fragment", [
    (lambda f: f.attrs.__setitem__("format_version", "1"), "must be an integer"),  # not "version 1 ... reads 1"
    (lambda f: f.attrs.__setitem__("format_version", np.array([2, 2])), "must be an integer"),
    (lambda f: f.attrs.__setitem__("format", np.array(["rgdiff-ensemble", "x"], dtype=object)), "not an rgdiff ensemble"),
    (lambda f: f.attrs.__setitem__("extra", "[1]"), "corrupt"),
    (lambda f: f.attrs.__setitem__("extra", "[" * 50000 + "]" * 50000), "corrupt"),
    (lambda f: (f.__delitem__("fields"), f.__setitem__("fields", h5py.ExternalLink("other.h5", "/fields"))),
     "external link"),
    (lambda f: (f.__delitem__("action"), f.__setitem__("action", h5py.SoftLink("/magnetization"))), "soft link"),
])
def test_crafted_ensembles_for_info_and_measure(tmp_path, edit, fragment):
    fields = np.random.default_rng(0).normal(size=(2, 8, 4, 4))
    save_ensemble(tmp_path / "other.h5", Ensemble(THEORY, fields, markov=True, seed=1))
    shutil.copy(tmp_path / "other.h5", tmp_path / "e.h5")
    with h5py.File(tmp_path / "e.h5", "r+") as f:
        edit(f)
    for command in ("info", "measure"):
        refused([command, tmp_path / "e.h5"], fragment)


def test_special_files_are_refused_without_reading_them(tmp_path):
    """A FIFO would block `info` and `measure` forever, a link to /dev/zero would be read without
    end: both are refused at once (run in a subprocess with a timeout, so a regression fails
    instead of hanging the suite)."""
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "fifo.h5")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    cases = [["info", "fifo.h5"], ["measure", "fifo.h5"], ["info", "fifo.json"], ["info", "zero.json"],
             ["info", "zero.toml"], ["import", "fifo.h5", "--out", "x.h5"], ["run", "zero.toml"]]
    script = ("import sys, json; from rgdiff.cli.app import main\n"
              "for args in json.loads(sys.argv[1]): print(main(args), flush=True)")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    lines = proc.stderr.strip().splitlines()
    assert proc.stdout.split() == ["2"] * len(cases), proc.stderr
    assert len(lines) == len(cases) and all("not a regular file" in line for line in lines), proc.stderr


@pytest.mark.parametrize("text", ['{"meta": ' + "[" * 100000 + "]" * 100000 + "}", "a = " + "[" * 100000 + "]" * 100000])
def test_deeply_nested_json_and_toml_are_one_line(tmp_path, text):
    suffix = ".json" if text.startswith("{") else ".toml"
    (tmp_path / f"deep{suffix}").write_text(text)
    refused(["info", tmp_path / f"deep{suffix}"], "nested too deeply")
    if suffix == ".toml":
        refused(["run", tmp_path / f"deep{suffix}"], "nested too deeply")


# model directories ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rgdiff.models.base import cast_model
    from rgdiff.rg import make_scheme
    from rgdiff.train.initial import initial_model

    d = tmp_path_factory.mktemp("integrity") / "model"
    d.mkdir()
    fields = np.random.default_rng(0).normal(size=(2, 8, 4, 4))
    scheme = make_scheme("carosso", M=1.0)
    model = initial_model("eft-score", THEORY.lattice, scheme, fields, 1.0, key=jax.random.key(0))
    write_model(d, {"model": model.describe(), "scheme": scheme.describe(), "theory": THEORY.describe(),
                    "training": {"dtype": "float32", "horizon": 1.0}}, cast_model(model, np.float32))
    return d


@FEW
@given(position=st.integers(0, 10**7), bit=st.integers(0, 7))
def test_one_flipped_bit_in_params_is_refused(model_dir, tmp_path_factory, position, bit):
    d = tmp_path_factory.mktemp("flip") / "m"
    shutil.copytree(model_dir, d)
    raw = bytearray((d / PARAMS).read_bytes())
    raw[position % len(raw)] ^= 1 << bit
    (d / PARAMS).write_bytes(bytes(raw))
    with pytest.raises(ReadModelError, match="params.eqx is corrupt"):
        load_model_dir(d)
    refused(["info", d], "params.eqx is corrupt")
    refused(["generate", d, "--samples", "8", "--out", d.parent / "g.h5"], "params.eqx is corrupt")


def test_an_old_model_directory_loads_with_a_warning_line(model_dir, tmp_path):
    d = tmp_path / "old"
    shutil.copytree(model_dir, d)
    config = tomllib.loads((d / CONFIG).read_text())
    del config["params_sha256"]
    (d / CONFIG).write_text(_toml.dumps(config))
    with pytest.warns(RgdiffWarning, match="records no checksum of params.eqx"):
        load_model_dir(d)
    code, out, err = cli(["info", d])
    assert code == 0 and err.strip().splitlines() == [err.strip()] and err.startswith("rgdiff: warning:"), err
    assert "integrity: not verified" in out


config_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=4)),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text("abc", max_size=2), c, max_size=2)),
    max_leaves=6,
)


@FEW
@given(table=st.sampled_from(["training", "data", "theory", "scheme", "model", "command", "versions"]),
       key=st.sampled_from([None, "horizon", "dtype", "file", "dim", "name"]), value=config_values)
def test_any_edit_of_a_model_config_is_one_line_or_a_working_model(model_dir, tmp_path_factory, table, key, value):
    """`data = 5`, `training = "oops"`, a missing or non-numeric horizon, any value anywhere: `info`
    and `generate` either work or refuse in one line (never a traceback)."""
    d = tmp_path_factory.mktemp("edit") / "m"
    shutil.copytree(model_dir, d)
    config = tomllib.loads((d / CONFIG).read_text())
    if key is None:
        config[table] = value
    elif isinstance(config.get(table), dict):
        config[table][key] = value
    else:
        config[table] = {key: value}
    config = {k: v for k, v in config.items() if v is not None}
    try:
        (d / CONFIG).write_text(_toml.dumps(config))
    except Exception:  # a value TOML cannot hold (None inside a list, NaN for our writer): not a file
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = cli(["info", d])
        try:
            load_model_dir(d)  # what `generate`, `compare-flow` and `bridge` read first
        except ReadModelError:
            pass
    if code != 0:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("rgdiff: error:"), err


def test_damaged_horizons_and_deep_arrays_for_generate(model_dir, tmp_path):
    cases = {"missing": None, "text": "abc", "negative": -1.0, "infinite": float("inf")}
    for name, horizon in cases.items():
        d = tmp_path / name
        shutil.copytree(model_dir, d)
        config = tomllib.loads((d / CONFIG).read_text())
        if horizon is None:
            del config["training"]["horizon"]
        else:
            config["training"]["horizon"] = horizon
        (d / CONFIG).write_text(_toml.dumps(config).replace("horizon = inf", "horizon = inf"))
        refused(["generate", d, "--samples", "8", "--out", tmp_path / "g.h5"], "training.horizon")
    d = tmp_path / "deep"
    shutil.copytree(model_dir, d)
    (d / CONFIG).write_text("deep = " + "[" * 100000 + "]" * 100000 + "\n" + (model_dir / CONFIG).read_text())
    refused(["generate", d, "--samples", "8", "--out", tmp_path / "g.h5"], "nested too deeply")


# checkpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("step", 20), ("step", 300), ("step", -1), ("config", {"steps": 1}),
                                          ("host", {"metrics": []}), ("identity_sha256", "0" * 64)])
def test_an_edited_checkpoint_header_is_refused_untouched(tmp_path, field, value):
    """The header (step, config, metrics) is covered by its own checksum: `h["step"] = 20` no
    longer resumes into a wrong result."""
    ck = Checkpointer(tmp_path / "c", command="train", every=1, config={"steps": 100}, identity={"steps": 100},
                      resume=False)
    ck.save(10, [np.arange(3.0)], {"metrics": [{"step": 10, "loss": 1.0}]})
    raw = (tmp_path / "c" / FILE).read_bytes()
    magic, header, payload = raw.split(b"\n", 2)
    h = json.loads(header)
    h[field] = value
    edited = magic + b"\n" + json.dumps(h).encode() + b"\n" + payload
    (tmp_path / "c" / FILE).write_bytes(edited)
    with pytest.raises(ReadCheckpointError, match="corrupt|damaged header"):
        read_checkpoint(tmp_path / "c")
    refused(["info", tmp_path / "c"], "left untouched")
    refused(["train", "--resume", tmp_path / "c"], "left untouched")
    assert (tmp_path / "c" / FILE).read_bytes() == edited


def test_a_format_2_checkpoint_is_refused_with_a_clear_line(tmp_path):
    write_checkpoint(tmp_path, command="train", step=3, arrays=[np.ones(2)], config={}, identity={})
    raw = (tmp_path / FILE).read_bytes().replace(b"RGDIFF-CHECKPOINT 3", b"RGDIFF-CHECKPOINT 2", 1)
    (tmp_path / FILE).write_bytes(raw)
    with pytest.raises(ReadCheckpointError, match="format 2, but this rgdiff reads format 3.*afresh"):
        read_checkpoint(tmp_path)


def test_info_verifies_before_showing(tmp_path, model_dir):
    """`rgdiff info` shows provenance only of files that pass their checks: a model whose
    params.eqx fails its checksum is refused (above); a checkpoint whose payload fails too."""
    ck = Checkpointer(tmp_path / "c", command="train", every=1, config={}, identity={}, resume=False)
    ck.save(1, [np.arange(4.0)])
    raw = bytearray((tmp_path / "c" / FILE).read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "c" / FILE).write_bytes(bytes(raw))
    refused(["info", tmp_path / "c"], "corrupt")
    code, out, _ = cli(["info", model_dir])
    assert code == 0 and "integrity: verified" in out
