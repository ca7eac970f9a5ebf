"""Run configuration files (TOML) for the long commands: `run`, `sample`, `train`, `reproduce`.

A config file holds the same settings as the command's flags, grouped in tables; a flag given on
the command line overrides the file, and the file overrides the embedded default. Every value is
checked before anything runs, and an error names the key, the value and what is allowed::

    rgdiff config show                # the embedded default of `rgdiff run` (TOML)
    rgdiff config show sample         # the keys `rgdiff sample --config FILE` reads
    rgdiff run my.toml                # run it (flags such as --seed still override)

The effective configuration (defaults, file, flags merged) is written into every output, so a
result can be rerun from its own files (`rgdiff info FILE`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path

from rgdiff.io import _toml
from rgdiff.errors import RgdiffError


class InvalidConfigError(RgdiffError):
    """A run configuration file is unreadable, has an unknown key, or a value out of range."""


@dataclasses.dataclass(frozen=True)
class Key:
    """One configuration key: its type, default, and allowed values (range or choices)."""

    kind: type
    default: object = None  # None: optional, absent unless given
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    open_lo: bool = False  # lo excluded (e.g. a length > 0)
    help: str = ""

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        name = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}[self.kind]

        def fmt(x):
            return str(int(x)) if self.kind is int else f"{x:g}"

        if self.lo is not None and self.hi is not None:
            return f"{name} in {'(' if self.open_lo else '['}{fmt(self.lo)}, {fmt(self.hi)}]"
        if self.lo is not None:
            return f"{name} {'>' if self.open_lo else '>='} {fmt(self.lo)}"
        return name

    def check(self, name: str, value):
        bad = InvalidConfigError(f"{name} = {value!r} is not allowed: expected {self.allowed()}")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            value = float(value)
        elif self.kind is str:
            if not isinstance(value, str):
                raise bad
        if self.choices and value not in self.choices:
            raise bad
        if self.lo is not None and (value < self.lo or (self.open_lo and value == self.lo)):
            raise bad
        if self.hi is not None and value > self.hi:
            raise bad
        return value


SEED = Key(int, 0, 0, 2**63 - 1, help="PRNG seed")
THEORY = {
    "dim": Key(int, 2, 1, 3, help="lattice dimension d"),
    "size": Key(int, None, 2, 4096, help="sites per side N (required)"),
    "units": Key(str, "physical", choices=("physical", "lattice", "albergo", "hopping")),
    "length": Key(float, None, 0, 1e12, open_lo=True, help="side length L (physical units)"),
    "m2": Key(float, None, -1e12, 1e12, help="bare mass squared"),
    "lam": Key(float, None, 0, 1e12, help="bare quartic coupling"),
    "kappa": Key(float, None, 0, 1e12, open_lo=True, help="hopping parameter (units = hopping)"),
    "lambda_h": Key(float, None, 0, 1e12, help="hopping-form quartic (units = hopping)"),
}
# `rgdiff.samplers.hmc.ALGORITHMS`, spelled out so that reading a config needs no JAX (a test checks)
UV_ALGORITHMS = ("fa-hmc", "fa-nuts", "nuts", "hmc")
SAMPLER = {
    "algorithm": Key(str, "fa-hmc", choices=UV_ALGORITHMS,
                     help="fa-hmc / fa-nuts: Fourier-accelerated; nuts: the paper's plain NUTS"),
    "chains": Key(int, 4, 1, 4096),
    "samples": Key(int, 1000, 8, 10**9, help="per chain; >= 8, what `rgdiff measure` needs"),
    "warmup": Key(int, 500, 0, 10**9),
    "thin": Key(int, 1, 1, 10**6),
    "hmc_steps": Key(int, 10, 1, 10**6, help="leapfrog steps per trajectory (hmc)"),
    "trajectory_length": Key(float, 1.5707963267948966, 0, 1e3, open_lo=True,
                             help="mean trajectory length of fa-hmc (whitened units; pi/2 default)"),
}
TRAINING = {
    "model": Key(str, "eft-score", help="score model (see rgdiff train --help)"),
    "data": Key(str, None, help="UV ensemble (.h5)"),
    "scheme": Key(str, "carosso", choices=("carosso", "polchinski")),
    "M": Key(float, 1.0, 0, 1e6),
    "noise": Key(float, None, 0, 1e6, open_lo=True),
    "steps": Key(int, 2000, 1, 10**9),
    "batch": Key(int, 64, 1, 10**6),
    "learning_rate": Key(float, 3e-3, 0, 10, open_lo=True),
    "horizon": Key(float, None, 0, 1e6, open_lo=True),
    "dtype": Key(str, "float32", choices=("float32", "float64")),
    "checkpoint_every": Key(int, None, 1, 10**9, help="steps between checkpoints"),
    "anchor_weight": Key(float, 1.0, 0, 1e6, help="weight of the t = 0 implicit score-matching anchor (eft-score)"),
    "ema": Key(float, 0.995, 0, 0.999999, help="decay of the parameter average returned by training (0: last iterate)"),
}

# The embedded default of `rgdiff run`: the paper's theory and the quick run.
RUN = {
    "seed": SEED,
    "theory": {
        "dim": Key(int, 2, 1, 3),
        "size": Key(int, 20, 2, 4096),
        "length": Key(float, 1.0, 0, 1e12, open_lo=True),
        "m2": Key(float, -2.0, -1e12, 1e12),
        "lam": Key(float, 0.0017, 0, 1e12),
    },
    "sampler": {**SAMPLER, "samples": Key(int, 4000, 8, 10**9), "warmup": Key(int, 1000, 0, 10**9)},
    "flow": {
        "scheme": Key(str, "carosso", choices=("carosso",)),
        "M": Key(float, 1.0, 0, 1e6, open_lo=True),
        "t_max": Key(float, 2.0, 0, 1e6, open_lo=True),
        "n_times": Key(int, 13, 3, 1000),
    },
    "training": {
        "model": Key(str, "eft-score", choices=("eft-score",)),
        "steps": Key(int, 1500, 1, 10**9),
        "batch": Key(int, 64, 1, 10**6),
        "learning_rate": Key(float, 3e-3, 0, 10, open_lo=True),
        "dtype": Key(str, "float32", choices=("float32", "float64")),
    },
    # 4000: the learned G2(0), a variance of M, then carries a ~2.2% error, resolved at the
    # fidelity measure's 2.5% (rgdiff.observables.fidelity.RESOLUTION); --full: ~1% for its 2%
    "compare": {"samples": Key(int, 4000, 8, 10**7),
                "solver": Key(str, "sde", choices=("sde", "ode"),
                              help="sampler of the learned flow: sde (reverse SDE, exponential integrator; faithful) | ode")},
}
RUN_FULL = {  # `rgdiff run --full`: applied over the defaults, under the file and the flags
    "sampler": {"chains": 8, "samples": 20000, "warmup": 4000},
    "training": {"steps": 10000},
    "compare": {"samples": 20000},
}
SCHEMAS = {
    "run": RUN,
    "sample": {"seed": SEED, "out": Key(str), "theory": THEORY, "sampler": SAMPLER},
    "train": {"seed": SEED, "out": Key(str), "training": TRAINING},
    "reproduce": {"seed": SEED, "out": Key(str), "figure": Key(str, "fig6"), "quick": Key(bool, False),
                  "algorithm": Key(str, "fa-hmc", choices=UV_ALGORITHMS, help="UV sampler")},
}

# Which flag of a command sets which config key (flag parameter name -> dotted key).
FLAGS = {
    "sample": {
        "dim": "theory.dim", "size": "theory.size", "length": "theory.length", "m2": "theory.m2", "lam": "theory.lam",
        "kappa": "theory.kappa", "lambda_h": "theory.lambda_h", "units": "theory.units",
        "samples": "sampler.samples", "chains": "sampler.chains", "warmup": "sampler.warmup",
        "algorithm": "sampler.algorithm", "hmc_steps": "sampler.hmc_steps", "thin": "sampler.thin",
        "trajectory_length": "sampler.trajectory_length",
        "seed": "seed", "out": "out",
    },
    "train": {
        "model": "training.model", "data": "training.data", "scheme": "training.scheme", "M": "training.M",
        "noise": "training.noise", "steps": "training.steps", "batch": "training.batch", "lr": "training.learning_rate",
        "horizon": "training.horizon", "dtype": "training.dtype", "checkpoint_every": "training.checkpoint_every",
        "anchor_weight": "training.anchor_weight", "ema": "training.ema", "seed": "seed", "out": "out",
    },
    "reproduce": {"figure": "figure", "quick": "quick", "seed": "seed", "out": "out", "algorithm": "algorithm"},
    "run": {"seed": "seed"},
}


def defaults(command: str = "run") -> dict:
    """The embedded default configuration of `command` (optional keys left out)."""

    def walk(schema):
        out = {}
        for k, v in schema.items():
            if isinstance(v, dict):
                out[k] = walk(v)
            elif v.default is not None:
                out[k] = v.default
        return out

    return walk(_schema(command))


def show(command: str = "run") -> str:
    """The default configuration as TOML text, with the allowed values as comments."""
    schema = _schema(command)
    lines = [f"# rgdiff {command}: embedded default configuration", "# (key = default  # allowed values)", ""]

    def walk(table, prefix):
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, dict)]
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars:
            text = _toml.dumps({k: v.default}).strip() if v.default is not None else f"# {k} = (unset)"
            lines.append(f"{text:<35} # {v.allowed()}" + (f"; {v.help}" if v.help else ""))
        if scalars:
            lines.append("")
        for k, v in table.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}.{k}" if prefix else k)

    walk(schema, "")
    return "\n".join(lines).rstrip() + "\n"


def _schema(command: str) -> dict:
    if command not in SCHEMAS:
        raise InvalidConfigError(f"no configuration for command {command!r}; choose one of {', '.join(SCHEMAS)}")
    return SCHEMAS[command]


def read(path: str | os.PathLike) -> dict:
    """Parse a TOML file, with one clear error for a missing, binary or malformed file."""
    from rgdiff.io.reading import loads_toml, read_text

    path = Path(path)
    if not path.exists():
        raise InvalidConfigError(f"config file {path} does not exist")
    return loads_toml(read_text(path, InvalidConfigError, "config file"), f"config file {path}", InvalidConfigError)


def validate(command: str, data: dict, source: str = "config") -> dict:
    """Check every key and value of `data` against the command's schema; return the checked copy."""
    schema = _schema(command)

    def walk(table, sch, prefix):
        out = {}
        if not isinstance(table, dict):
            raise InvalidConfigError(f"{source}: [{prefix}] must be a table, got {table!r}")
        for k, v in table.items():
            name = f"{prefix}.{k}" if prefix else k
            if k in ("format", "versions", "command") and not prefix:
                continue  # provenance written alongside a config; ignored when read back
            if k not in sch:
                raise InvalidConfigError(
                    f"{source}: unknown key {name!r} for rgdiff {command}; allowed: "
                    + ", ".join(f"{prefix + '.' if prefix else ''}{x}" for x in sch)
                )
            if isinstance(sch[k], dict):
                out[k] = walk(v, sch[k], name)
            else:
                try:
                    out[k] = sch[k].check(name, v)
                except InvalidConfigError as exc:
                    raise InvalidConfigError(f"{source}: {exc}") from None
        return out

    return walk(data, schema, "")


def merge(*layers: dict) -> dict:
    """Later layers override earlier ones, table by table."""
    out: dict = {}
    for layer in layers:
        for k, v in layer.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
    return out


def get(config: dict, dotted: str, default=None):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def put(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def load(command: str, path: str | os.PathLike | None, *, full: bool = False) -> dict:
    """defaults < (--full preset) < file, validated. The flags are applied by `with_flags`."""
    base = defaults(command)
    if full and command == "run":
        base = merge(base, RUN_FULL)
    if path is None:
        return base
    return merge(base, validate(command, read(path), source=f"config file {path}"))


def check_flag(command: str, flag: str, value) -> None:
    """Check a flag's value against its config key's type and range; the error names the flag
    (`--batch = 10000000000 is not allowed: expected an integer in [1, 1000000]`)."""
    dotted = FLAGS[command].get(flag)
    if dotted is None or value is None:
        return
    key = get(_schema(command), dotted)
    if isinstance(key, Key):
        key.check("--" + flag.replace("_", "-"), str(value) if isinstance(value, os.PathLike) else value)


def with_flags(command: str, config: dict, given: dict) -> dict:
    """Apply the flags the user gave on the command line (`given`: flag name -> value)."""
    out = copy.deepcopy(config)
    for flag, value in given.items():
        dotted = FLAGS[command].get(flag)
        if dotted is not None and value is not None:
            put(out, dotted, str(value) if isinstance(value, os.PathLike) else value)
    return out


def dumps(config: dict) -> str:
    return _toml.dumps(config)
