"""Hostile input (hypothesis): any input to a public entry point gives a correct result or one clear
error (`RgdiffError`, CLI exit 2 with one line), never a traceback, a hang or a silently wrong file.

Classes covered: lattice shapes, theory parameters, CLI flags, truncated / damaged / garbage HDF5
ensembles, garbage JSON and TOML, model directories, enormous sizes (refused before allocating),
and interrupted writes. Example counts are modest so that the module runs in well under a minute;
`conftest.py` prints the number of examples run.
"""

import contextlib
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rgdiff import Lattice, RgdiffError, make_phi4
from rgdiff.io.atomic import atomic_path, write_json
from rgdiff.io.ensemble import Ensemble, load_ensemble, save_ensemble
from rgdiff.errors import InvalidLatticeError, ReadEnsembleError
from rgdiff.lattice.geometry import MAX_SITES
from rgdiff.io.modeldir import ReadModelError, load_model_dir
from cli_errors import error_line, run_cli

FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clear_error(code, err):
    error_line(code, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A real small ensemble and a real (untrained) model directory, built without sampling."""
    import jax

    from rgdiff.train.initial import initial_model
    from rgdiff.io.modeldir import CONFIG, PARAMS, write_model
    from rgdiff.rg import make_scheme

    d = tmp_path_factory.mktemp("hostile")
    theory = make_phi4(2, 4, units="lattice", m2=1.0, lam=2.0)
    fields = np.random.default_rng(0).normal(size=(2, 6, 4, 4))
    ens = Ensemble(theory, fields, markov=True, seed=7, sampler={"algorithm": "nuts"})
    save_ensemble(d / "good.h5", ens)
    scheme = make_scheme("carosso", M=1.0)
    model = initial_model("eft-score", theory.lattice, scheme, fields, 1.0, key=jax.random.key(0))
    mdir = d / "model"
    mdir.mkdir()
    config = {"model": model.describe(), "scheme": scheme.describe(), "theory": theory.describe(),
              "training": {"dtype": "float32", "horizon": 1.0}}
    from rgdiff.models.base import cast_model

    write_model(mdir, config, cast_model(model, np.float32))
    return Files({"dir": d, "h5": (d / "good.h5").read_bytes(), "fields": fields, "model": mdir,
            "params": (mdir / PARAMS).read_bytes(), "config": (mdir / CONFIG).read_text()})


class Files(dict):
    def __repr__(self):  # keep hypothesis' failure reports short
        return "<test files>"


# lattice shapes and parameters --------------------------------------------------------------

anything = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(), st.integers(-10, 10))


@SOME
@given(
    dim=st.one_of(st.integers(-2, 5), anything),
    size=st.one_of(st.integers(-3, 300), st.integers(10**3, 10**12), anything),
    length=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6), anything),
)
def test_lattice_any_shape(dim, size, length):
    try:
        lat = Lattice(dim, size, length)
    except InvalidLatticeError as exc:
        assert str(exc)
        return
    # accepted: then it is exactly the lattice asked for
    assert lat.dim in (1, 2, 3) and lat.size >= 2 and lat.size**lat.dim <= MAX_SITES
    assert math.isfinite(lat.length) and lat.length > 0
    assert lat.shape == (int(size),) * int(dim) and lat.spacing == pytest.approx(float(length) / int(size))


number = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-100, 100))


@SOME
@given(
    units=st.one_of(st.sampled_from(["physical", "lattice", "albergo", "hopping"]), st.text(max_size=6)),
    m2=number, lam=number, kappa=number, lambda_h=number,
    length=st.one_of(st.none(), st.floats(allow_nan=True)),
    dim=st.integers(1, 3), size=st.integers(2, 8),
)
def test_make_phi4_any_parameters(units, m2, lam, kappa, lambda_h, length, dim, size):
    try:
        th = make_phi4(dim, size, units=units, length=length, m2=m2, lam=lam, kappa=kappa, lambda_h=lambda_h)
    except RgdiffError as exc:
        assert str(exc)
        return
    assert math.isfinite(th.m2) and math.isfinite(th.lam) and th.lam >= 0
    assert not (th.lam == 0 and th.m2 <= 0)  # normalizable
    if units in ("physical", "lattice"):
        assert (th.m2, th.lam) == (float(m2), float(lam))


# ensembles on disk -------------------------------------------------------------------------


@FEW
@given(cut=st.integers(0, 10**6))
def test_truncated_ensemble(files, cut):
    raw = files["h5"]
    cut = cut % len(raw)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "cut.h5"
        p.write_bytes(raw[:cut])
        with pytest.raises(ReadEnsembleError):
            load_ensemble(p)
        assert_clear_error(*run_cli(["measure", p])[::2])
        assert_clear_error(*run_cli(["info", p])[::2])


@SOME
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3))
def test_damaged_ensemble_is_refused_or_unchanged(files, flips):
    """Any damage is detected (checksum, HDF5 structure) or hits unused bytes: never silently wrong."""
    raw = bytearray(files["h5"])
    for pos, x in flips:
        raw[pos % len(raw)] ^= x
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "damaged.h5"
        p.write_bytes(bytes(raw))
        try:
            ens = load_ensemble(p)
        except ReadEnsembleError:
            return
        np.testing.assert_array_equal(ens.fields, files["fields"])
        assert ens.seed == 7 and ens.theory == make_phi4(2, 4, units="lattice", m2=1.0, lam=2.0)


@FEW
@given(content=st.binary(max_size=3000), suffix=st.sampled_from([".h5", ".json", ".toml", ".txt"]))
def test_garbage_files_for_every_reader(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"garbage{suffix}"
        p.write_bytes(content)
        with pytest.raises(RgdiffError):
            load_ensemble(p)
        assert_clear_error(*run_cli(["measure", p])[::2])
        for args in (["info", p], ["run", p, "--quiet", "--out", Path(tmp) / "out"]):
            with mock.patch("rgdiff.cli.pipeline.run_main") as job:
                code, _, err = run_cli(args)
            if code != 0:
                assert_clear_error(code, err)
                assert job.call_count == 0
            else:  # only possible for bytes that happen to be a valid (e.g. empty) TOML file
                assert suffix == ".toml" or args[0] == "run", (args, content)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=12,
)


@FEW
@given(data=json_values, meta=st.one_of(st.none(), json_values))
def test_any_json_result_for_info(data, meta):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "FLOW.json"
        if meta is not None and isinstance(data, dict):
            data = {**data, "meta": meta}
        p.write_text(json.dumps(data))
        code, out, err = run_cli(["info", p])
        if code == 0:
            assert isinstance(data, dict) and isinstance(data.get("meta"), dict) and "kind: FLOW" in out
        else:
            assert_clear_error(code, err)


# configuration files --------------------------------------------------------------------------

config_values = st.one_of(st.integers(-10**3, 10**6), st.floats(allow_nan=False), st.text(max_size=6), st.booleans())


@SOME
@given(
    section=st.sampled_from(["theory", "sampler", "flow", "training", "compare", "bogus"]),
    key=st.sampled_from(["dim", "size", "m2", "lam", "length", "chains", "samples", "warmup", "algorithm", "M",
                         "t_max", "n_times", "steps", "batch", "learning_rate", "dtype", "nope"]),
    value=config_values,
)
def test_any_run_config_is_checked_before_running(section, key, value):
    """A config either passes validation (the job then receives exactly it) or one line names the
    key, the value and the allowed range; nothing runs before."""
    from rgdiff.io import _toml

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "run.toml"
        p.write_text(_toml.dumps({section: {key: value}}))
        with mock.patch("rgdiff.cli.pipeline.run_main") as job:
            code, _, err = run_cli(["run", p, "--quiet", "--out", Path(tmp) / "out"])
        if code == 0:
            (call,) = job.call_args_list
            got = call.kwargs["config"][section][key]
            assert got == value and type(got) in (type(value), float)
        else:
            assert_clear_error(code, err)
            assert job.call_count == 0
            assert f"{section}.{key}" in err or f"'{section}'" in err


# CLI flags and enormous sizes ---------------------------------------------------------------


def fake_sample_ensemble(theory, settings, *, seed, units, extra=None, quiet=False, checkpoints=None):
    """Stands in for the sampler: the flags' validation is what is tested here."""
    fields = np.zeros((settings.chains, settings.samples, *theory.lattice.shape))
    return Ensemble(theory, fields, markov=True, seed=seed, sampler=settings.describe(), extra=extra or {})


flag_value = st.one_of(st.integers(-5, 12), st.sampled_from(["0", "1e400", "nan", "inf", "-inf", "abc", "", "3.5"]))


@SOME
@given(dim=flag_value, size=flag_value, chains=flag_value, samples=flag_value, m2=flag_value, lam=flag_value,
       units=st.sampled_from(["physical", "lattice", "albergo", "bogus"]))
def test_sample_flags(dim, size, chains, samples, m2, lam, units):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e.h5"
        args = ["sample", "--dim", dim, "--size", size, "--chains", chains, "--samples", samples, "--m2", m2,
                "--lam", lam, "--units", units, "--quiet", "--out", out]
        with mock.patch("rgdiff.cli.jobs.sample_ensemble", fake_sample_ensemble):
            code, _, err = run_cli(args)
        if code == 0:
            ens = load_ensemble(out)
            assert ens.fields.shape == (int(chains), int(samples)) + (int(size),) * int(dim)
        else:
            assert_clear_error(code, err)
            assert list(Path(tmp).iterdir()) == []  # nothing half-written, no lock left


@FEW
@given(dim=st.integers(1, 3), size=st.integers(10**4, 10**9), chains=st.integers(1, 10**4),
       samples=st.integers(10**6, 10**9))
def test_enormous_sizes_refused_before_allocating(dim, size, chains, samples):
    assume(8 * chains * samples * size**dim > 2**44)  # 17 TB: more than any machine this runs on
    with tempfile.TemporaryDirectory() as tmp:
        with mock.patch("rgdiff.cli.jobs.sample_ensemble") as job:
            code, _, err = run_cli(["sample", "--dim", dim, "--size", size, "--chains", chains, "--samples", samples,
                                    "--m2", 1, "--lam", 1, "--quiet", "--out", Path(tmp) / "e.h5"])
        assert_clear_error(code, err)
        assert job.call_count == 0
        assert "needs about" in err or "sites" in err


def test_enormous_lattice_message_has_the_memory_estimate(tmp_path):
    code, _, err = run_cli(["sample", "--size", 100000, "--dim", 3, "--m2", 1, "--lam", 1, "--out", tmp_path / "x.h5"])
    assert_clear_error(code, err)
    assert "needs about 32.6 EB of memory" in err and list(tmp_path.iterdir()) == []


# model directories -------------------------------------------------------------------------


@FEW
@given(cut=st.integers(0, 10**6))
def test_truncated_model_params(files, cut):
    raw = files["params"]
    cut = cut % len(raw)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        d.mkdir()
        (d / "config.toml").write_text(files["config"])
        (d / "params.eqx").write_bytes(raw[:cut])
        with pytest.raises(ReadModelError):
            load_model_dir(d)
        assert_clear_error(*run_cli(["generate", d, "--samples", 4, "--out", Path(tmp) / "g.h5"])[::2])


@FEW
@given(edit=st.tuples(st.integers(0, 10**5), st.integers(0, 40), st.text(max_size=8)))
def test_edited_model_config(files, edit):
    """Any edit of config.toml: a clear error, or a model that loads and keeps its lattice."""
    pos, n, text = edit
    cfg = files["config"]
    pos = pos % len(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        d.mkdir()
        (d / "config.toml").write_text(cfg[:pos] + text + cfg[pos + n:])
        (d / "params.eqx").write_bytes(files["params"])
        try:
            loaded = load_model_dir(d)
        except ReadModelError:
            return
        assert loaded.lattice.sites == loaded.lattice.size**loaded.lattice.dim


# interrupted writes --------------------------------------------------------------------------


@FEW
@given(payload=st.binary(min_size=1, max_size=5000), cut=st.integers(0, 5000))
def test_interrupted_write_keeps_the_old_file(payload, cut):
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.json"
        write_json(target, {"old": True})
        with pytest.raises(KeyboardInterrupt):
            with atomic_path(target) as part:
                part.write_bytes(payload[: cut % len(payload)])
                raise KeyboardInterrupt  # Ctrl-C in the middle of the write
        assert json.loads(target.read_text()) == {"old": True}
        assert sorted(os.listdir(tmp)) == ["out.json"]


def test_leftovers_of_a_killed_writer_are_cleaned(tmp_path):
    """A writer killed with SIGKILL leaves its temporary file and lock; the next write removes both."""
    target = tmp_path / "out.json"
    (tmp_path / ".out.json.abc123.part").write_text("half")
    (tmp_path / ".out.json.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))
    write_json(target, {"new": 1})
    assert json.loads(target.read_text()) == {"new": 1}
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


# issue 16: numbers that were not validated ------------------------------------------------------

@pytest.fixture(scope="module")
def measurable(tmp_path_factory, normal_ensemble):
    """An ensemble `rgdiff measure` accepts (8+ samples per chain) and a tiny one it refuses."""
    d = tmp_path_factory.mktemp("measurable")
    normal_ensemble(d / "ok.h5", 2, 24, rng_seed=1, seed=1)
    normal_ensemble(d / "tiny.h5", 2, 3, rng_seed=1, seed=1)
    normal_ensemble(d / "tiny-independent.h5", 1, 3, rng_seed=1, seed=1, markov=False)
    return d


def fake_true_flow(scheme, fields, lattice, times, **kwargs):
    from rgdiff.observables.estimators import measure
    from rgdiff.observables.true_flow import FlowResult, empty_series, record

    series = empty_series()
    m = measure(fields, lattice, markov=True)
    for _ in times:
        record(series, m, 1.0, lattice.dim)
    return FlowResult(scheme, np.asarray(times), np.ones(len(times)), series, {"vacuum": "raw"}), None


big_number = st.one_of(st.integers(-10, 20), st.integers(10**3, 10**13), st.sampled_from(["1e200", "-2", "0", "nan", "inf", "-0"]))


@FEW
@given(n_times=big_number, M=big_number, speed=st.one_of(st.none(), big_number), t_max=st.one_of(big_number, st.just("0.5")))
def test_flow_numbers_are_validated_before_the_work(measurable, n_times, M, speed, t_max):
    """`--n-times 1000000000000` (memory), `--M 1e200` (overflow), `--speed -2` ("> 0", since 0 is
    refused too): accepted exactly when valid, else one line and no work."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["flow", measurable / "ok.h5", "--scheme", "carosso", "--M", M, "--t-max", t_max, "--n-times", n_times,
                "--out", Path(tmp) / "f.json", "--quiet"]
        if speed is not None:
            args += ["--speed", speed]
        with mock.patch("rgdiff.observables.true_flow.true_flow", side_effect=fake_true_flow) as job:
            code, _, err = run_cli(args)
        if code == 0:
            assert 1 <= int(n_times) <= 10_000 and 0 <= float(M) <= 1e6 and float(t_max) > 0
            assert speed is None or float(speed) > 0
            assert job.call_count == 1
        else:
            assert_clear_error(code, err)
            assert job.call_count == 0 and list(Path(tmp).iterdir()) == []
            if speed is not None and str(speed) in ("-2", "0", "-0") and "speed" in err:
                assert "must be > 0" in err  # not ">= 0" while 0 is refused


@FEW
@given(n_times=st.one_of(st.integers(-10, 1), st.integers(10**4 + 1, 10**13)))
def test_compare_flow_n_times_outside_2_to_10000_is_refused(files, measurable, n_times):
    with tempfile.TemporaryDirectory() as tmp:
        with mock.patch("rgdiff.cli.jobs.compare_flow") as job:
            code, _, err = run_cli(["compare-flow", files["model"], "--data", measurable / "ok.h5", "--t-max", "0.5",
                                    "--n-times", n_times, "--samples", "8", "--out", Path(tmp) / "c.json", "--quiet"])
        assert_clear_error(code, err)
        assert "--n-times" in err and job.call_count == 0 and list(Path(tmp).iterdir()) == []


@FEW
@given(batch=st.one_of(st.integers(-3, 3), st.integers(10**6 - 1, 10**11)),
       lr=st.sampled_from(["0", "-1", "1e-3", "100"]), ema=st.sampled_from(["0", "0.99", "1", "2"]))
def test_train_numbers_name_their_flag(measurable, batch, lr, ema):
    """`--batch 10000000000` is refused (not an out-of-memory traceback); messages name the flag."""
    with tempfile.TemporaryDirectory() as tmp:
        with mock.patch("rgdiff.cli.jobs.train_job") as job:
            code, _, err = run_cli(["train", "--data", measurable / "ok.h5", "--batch", batch, "--lr", lr, "--ema", ema,
                                    "--steps", "3", "--out", Path(tmp) / "m", "--quiet"])
        valid = 1 <= batch <= 10**6 and 0 < float(lr) <= 10 and 0 <= float(ema) < 1
        assert (code == 0) == valid, err
        if not valid:
            assert_clear_error(code, err)
            assert any(flag in err for flag in ("--batch", "--lr", "--ema")) and job.call_count == 0
            assert "learning_rate" not in err and "training.batch" not in err  # the flag, not the internal name


@pytest.mark.parametrize("args, flag", [
    (["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--thin", "0"], "--thin"),
    (["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--hmc-steps", "0"], "--hmc-steps"),
    (["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--warmup", "1"], "--warmup"),
    (["bridge", "{model}", "--samples", "8", "--hmc-steps", "-1"], "--hmc-steps"),
    (["bridge", "{model}", "--samples", "8", "--ode-steps", "0"], "--ode-steps"),
    (["generate", "{model}", "--samples", "8", "--steps", "0"], "--steps"),
    (["generate", "{model}", "--samples", "8", "--steps", "-5"], "--steps"),
    (["generate", "{model}", "--samples", "8", "--steps", "10000000"], "--steps"),
])
def test_messages_name_the_flag(files, tmp_path, args, flag):
    args = [str(a).format(model=files["model"]) for a in args] + ["--out", tmp_path / "o.h5", "--quiet"]
    with mock.patch("rgdiff.cli.jobs.sample_ensemble") as sampler, mock.patch("rgdiff.cli.jobs.run_bridge") as bridge:
        code, _, err = run_cli(args)
    assert_clear_error(code, err)
    assert flag in err and "hmc_steps_between" not in err and sampler.call_count == bridge.call_count == 0
    assert list(tmp_path.iterdir()) == []


def test_thin_counts_what_a_chunk_holds(tmp_path):
    with mock.patch("rgdiff.cli.jobs.sample_ensemble") as job:
        code, _, err = run_cli(["sample", "--dim", "2", "--size", "8", "--m2", "1", "--lam", "1", "--samples", "1000",
                                "--thin", "1000000", "--out", tmp_path / "t.h5", "--quiet"])
    assert_clear_error(code, err)
    assert "--thin" in err and "sampling chunk holds" in err and job.call_count == 0


@FEW
@given(samples=st.one_of(st.integers(10**9, 10**15), st.integers(-3, 7)))
def test_generate_refuses_sizes_before_the_work(files, samples):
    """`--samples 1000000000000` hung filling memory; 3 gave an ensemble `measure` refused."""
    with tempfile.TemporaryDirectory() as tmp:
        with mock.patch("rgdiff.cli.jobs.sample_ode") as job:
            code, _, err = run_cli(["generate", files["model"], "--samples", samples, "--out", Path(tmp) / "g.h5",
                                    "--quiet"])
        assert_clear_error(code, err)
        assert "--samples" in err and job.call_count == 0 and list(Path(tmp).iterdir()) == []


# issue 16: tiny ensembles are refused up front, consistently ---------------------------------------


def fake_random_sampler(theory, settings, *, seed, units, extra=None, quiet=False, checkpoints=None):
    fields = np.random.default_rng(seed).normal(size=(settings.chains, settings.samples, *theory.lattice.shape))
    return Ensemble(theory, fields, markov=True, seed=seed, sampler=settings.describe(), extra=extra or {})


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains=st.integers(1, 4), samples=st.integers(1, 12))
def test_sample_accepts_exactly_what_measure_can_measure(chains, samples):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e.h5"
        with mock.patch("rgdiff.cli.jobs.sample_ensemble", fake_random_sampler):
            code, _, err = run_cli(["sample", "--dim", "1", "--size", "4", "--m2", "1", "--lam", "1", "--chains", chains,
                                    "--samples", samples, "--quiet", "--out", out])
        if samples < 8:
            assert_clear_error(code, err)
            assert "--samples" in err and list(Path(tmp).iterdir()) == []
        else:
            assert code == 0, err
            code, out_text, err = run_cli(["measure", out, "--json"])
            assert code == 0, err
            assert json.loads(out_text)["meta"]["chains"] == chains


@pytest.mark.parametrize("name", ["tiny.h5", "tiny-independent.h5"])
def test_tiny_ensembles_are_refused_by_every_command_before_the_work(files, measurable, tmp_path, name):
    data = measurable / name
    commands = [
        (["measure", data], None),
        (["flow", data, "--scheme", "carosso", "--M", "1", "--times", "0,0.1", "--out", tmp_path / "f.json"],
         "rgdiff.observables.true_flow.true_flow"),
        (["compare-flow", files["model"], "--data", data, "--times", "0,0.1", "--samples", "8",
          "--out", tmp_path / "c.json"], "rgdiff.cli.jobs.compare_flow"),
    ]
    for args, job in commands:
        with (mock.patch(job) if job else contextlib.nullcontext()) as work:
            code, _, err = run_cli(args + ["--quiet"] if args[0] != "measure" else args)
        assert_clear_error(code, err)
        assert "measuring needs at least 8" in err, err
        assert work is None or work.call_count == 0
    assert list(tmp_path.iterdir()) == []
