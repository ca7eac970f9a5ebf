"""Config files are written with tomli_w: None-valued keys are omitted (TOML has no null), a None
inside a list is refused, and what is written reads back with tomllib unchanged."""

import math
import tomllib

import pytest

from rgdiff.io import _toml, config


def test_round_trip_and_none_values():
    data = {"seed": 3, "theory": {"m2": -2.0, "lam": 1e-5, "units": 'a "b" \\ c', "length": None},
            "flow": {"times": [0.0, 0.5, math.inf], "on": True, "nested": {"x": 1, "y": None}}}
    back = tomllib.loads(_toml.dumps(data))
    assert back == {"seed": 3, "theory": {"m2": -2.0, "lam": 1e-5, "units": 'a "b" \\ c'},
                    "flow": {"times": [0.0, 0.5, math.inf], "on": True, "nested": {"x": 1}}}


def test_none_inside_a_list_is_refused():
    with pytest.raises(TypeError, match=r"flow\.times\[1\] = None"):
        _toml.dumps({"flow": {"times": [0.1, None, 0.3]}})


@pytest.mark.parametrize("command", ["run", "sample", "train", "reproduce"])
def test_default_configs_pass_validation_after_a_round_trip(command):
    defaults = config.defaults(command)
    assert config.validate(command, tomllib.loads(config.dumps(defaults))) == defaults
    shown = tomllib.loads(config.show(command))  # the commented defaults are valid TOML too
    assert config.validate(command, shown) == defaults
