"""Run configuration files: the embedded default, validation before anything runs (key, value and
allowed range named), and the precedence defaults < --full < file < command-line flags."""

import tomllib
from unittest import mock

import pytest

from rgdiff.io import config as cfg
from rgdiff.cli.app import main
from rgdiff.io.ensemble import load_ensemble
from cli_errors import fails


def test_config_show_is_the_embedded_default_of_run(capsys):
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert tomllib.loads(text) == cfg.defaults("run")
    # the paper's point and the quick run (README, pipeline)
    d = cfg.defaults("run")
    assert d["theory"] == {"dim": 2, "size": 20, "length": 1.0, "m2": -2.0, "lam": 0.0017}
    assert (d["sampler"]["chains"], d["sampler"]["samples"], d["sampler"]["warmup"]) == (4, 4000, 1000)
    assert "# one of fa-hmc, fa-nuts, nuts, hmc" in text  # allowed values shown


@pytest.mark.parametrize("command", ["sample", "train", "reproduce"])
def test_config_show_for_other_commands_parses(capsys, command):
    assert main(["config", "show", command]) == 0
    assert tomllib.loads(capsys.readouterr().out) == cfg.defaults(command)


def test_the_shown_default_runs_unchanged(tmp_path, capsys):
    """`rgdiff config show > run.toml; rgdiff run run.toml` is the default run."""
    assert main(["config", "show"]) == 0
    (tmp_path / "run.toml").write_text(capsys.readouterr().out)
    with mock.patch("rgdiff.cli.pipeline.run_main") as job:
        assert main(["run", str(tmp_path / "run.toml"), "--quiet"]) == 0
    assert job.call_args.kwargs["config"] == cfg.defaults("run")
    with mock.patch("rgdiff.cli.pipeline.run_main") as job:
        assert main(["run", "--quiet"]) == 0
    assert job.call_args.kwargs["config"] == cfg.defaults("run")


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("[sampler]\nchains = 0", ["sampler.chains = 0", "an integer in [1, 4096]"]),
        ("[theory]\ndim = 4", ["theory.dim = 4", "an integer in [1, 3]"]),
        ("[theory]\nlength = -1.0", ["theory.length = -1.0", "(0, 1e+12]"]),
        ("[training]\nlearning_rate = 0", ["training.learning_rate = 0", "a finite number in (0, 10]"]),
        ("[sampler]\nalgorithm = \"mala\"", ["sampler.algorithm = 'mala'", "one of fa-hmc, fa-nuts, nuts, hmc"]),
        ("[sampler]\nsamples = 2.5", ["sampler.samples = 2.5", "an integer"]),
        ("[sampler]\nsamples = true", ["sampler.samples = True", "an integer"]),
        ("[theory]\nm2 = nan", ["theory.m2 = nan", "a finite number"]),
        ("seed = -1", ["seed = -1", "[0, 9223372036854775807]"]),
        ("[sampler]\nchainz = 4", ["unknown key 'sampler.chainz'", "sampler.chains"]),
        ("sampler = 3", ["[sampler] must be a table"]),
        ("[sampler\nchains = 4", ["is not valid TOML"]),
    ],
)
def test_validation_names_key_value_and_range(tmp_path, capsys, text, fragments):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with mock.patch("rgdiff.cli.pipeline.run_main") as job:
        fails(capsys, ["run", p, "--quiet"], *fragments)
    assert job.call_count == 0  # refused before anything ran


def test_unreadable_config_files(tmp_path, capsys):
    fails(capsys, ["run", tmp_path / "missing.toml"], "does not exist")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00garbage")
    fails(capsys, ["run", tmp_path / "bin.toml"], "is not text")
    fails(capsys, ["run", tmp_path], "not a regular file")
    fails(capsys, ["config", "show", "bogus"], "no configuration for command 'bogus'")


def test_precedence_defaults_full_file_flags(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text("seed = 5\n[sampler]\nsamples = 300\n[training]\nsteps = 7\n")
    with mock.patch("rgdiff.cli.pipeline.run_main") as job:
        assert main(["run", str(p), "--full", "--seed", "9", "--quiet"]) == 0
    c = job.call_args.kwargs["config"]
    assert c["seed"] == 9 and job.call_args.kwargs["seed"] == 9  # flag over file
    assert c["sampler"]["samples"] == 300 and c["training"]["steps"] == 7  # file over --full
    assert c["sampler"]["chains"] == 8 and c["sampler"]["warmup"] == 4000  # --full over defaults
    assert c["theory"] == cfg.defaults("run")["theory"]


def test_sample_config_with_flag_override(tmp_path, capsys):
    p = tmp_path / "sample.toml"
    p.write_text(
        f'seed = 3\nout = "{tmp_path / "from_file.h5"}"\n'
        "[theory]\ndim = 1\nsize = 4\nunits = \"lattice\"\nm2 = 1.0\nlam = 0.5\n"
        "[sampler]\nalgorithm = \"hmc\"\nchains = 1\nsamples = 30\nwarmup = 0\nhmc_steps = 3\n"
    )
    out = tmp_path / "from_flag.h5"
    assert main(["sample", "--config", str(p), "--samples", "12", "--out", str(out), "--quiet"]) == 0
    ens = load_ensemble(out)
    assert ens.fields.shape == (1, 12, 4)  # the flag's samples, the file's chains and lattice
    assert ens.seed == 3 and ens.sampler["algorithm"] == "hmc" and ens.sampler["hmc_steps"] == 3
    assert ens.extra["config"]["sampler"]["samples"] == 12 and ens.extra["config"]["out"] == str(out)
    assert not (tmp_path / "from_file.h5").exists()
    fails(capsys, ["sample", "--config", p, "--dim", "5", "--out", out], "dimension must be 1, 2 or 3")
    (tmp_path / "nosize.toml").write_text("[theory]\nm2 = 1.0\nlam = 1.0\n")
    fails(capsys, ["sample", "--config", tmp_path / "nosize.toml", "--out", out], "give --size (or theory.size")


def test_a_run_folder_config_reruns_the_same_run(tmp_path):
    """`rgdiff run` writes config.toml (with provenance) into its folder; `rgdiff run DIR/config.toml`
    reruns exactly that configuration."""
    from rgdiff.io.atomic import package_versions

    written = cfg.merge(cfg.defaults("run"), {"seed": 12, "sampler": {"samples": 321}})
    (tmp_path / "config.toml").write_text(cfg.dumps({"command": "rgdiff run", **written, "versions": package_versions()}))
    with mock.patch("rgdiff.cli.pipeline.run_main") as job:
        assert main(["run", str(tmp_path / "config.toml"), "--quiet"]) == 0
    assert job.call_args.kwargs["config"] == written and job.call_args.kwargs["seed"] == 12


def test_config_sampler_choices_are_the_samplers_algorithms():
    """The config spells the UV algorithms out (reading a config needs no JAX); they must not drift."""
    from rgdiff.samplers.hmc import ALGORITHMS

    assert cfg.UV_ALGORITHMS == ALGORITHMS
    assert cfg.defaults("sample")["sampler"]["algorithm"] == "fa-hmc"
