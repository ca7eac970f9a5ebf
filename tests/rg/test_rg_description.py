"""Every scheme class round-trips through `describe()` and `scheme_from_description`, also via
TOML (how a model directory stores it); a scheme holding a plain Python function is refused."""

import tomllib

import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice
from rgdiff.errors import InvalidSchemeError
from rgdiff.io import _toml
from rgdiff.rg import (
    Carosso,
    ExponentialScale,
    FieldRenormalized,
    LinearInW,
    Polchinski,
    PolchinskiProfile,
    Rescaled,
    WegnerMorris,
    require_reloadable,
    scheme_from_description,
)

LAT = Lattice(2, 6, 6.0)
SEED_CAROSSO = WegnerMorris.from_gaussian_seed(2.0, LinearInW(0.0, 0.5), M=1.0, n_quad=8, n_panels=40)

SCHEMES = {
    "carosso": Carosso(1.0, noise=0.5, speed=2.0),
    "carosso-M0": Carosso(0.0),
    "polchinski-slow": Polchinski(0.5),
    "polchinski-exponential": Polchinski(1.0, "exponential"),
    "wm-profile-slow": WegnerMorris.from_cutoff_profile(PolchinskiProfile("slow"), M=1.0),
    "wm-profile-exponential": WegnerMorris.from_cutoff_profile(PolchinskiProfile("exponential"), name="mine"),
    "wm-seed": SEED_CAROSSO,
    "wm-seed-constants": WegnerMorris.from_gaussian_seed(1.5, 0.25),
    "rescaled": Rescaled(Polchinski(1.0), ExponentialScale(0.3)),
    "rescaled-wm": Rescaled(SEED_CAROSSO, ExponentialScale(-0.1)),
    "field-renormalized": FieldRenormalized(Carosso(1.0), ExponentialScale(0.2)),
    "nested": FieldRenormalized(Rescaled(Polchinski(0.0, "exponential"), ExponentialScale(0.1)), ExponentialScale(0.2)),
}


@pytest.mark.parametrize("name", SCHEMES)
def test_round_trip_through_toml(name):
    scheme = SCHEMES[name]
    desc = require_reloadable(scheme)
    stored = tomllib.loads(_toml.dumps({"scheme": desc}))["scheme"]
    rebuilt = scheme_from_description(stored)
    assert rebuilt == scheme and type(rebuilt) is type(scheme)
    assert rebuilt.describe() == desc


def test_rebuilt_wegner_morris_has_the_same_kernel():
    rebuilt = scheme_from_description(SCHEMES["wm-profile-slow"].describe())
    a, v = rebuilt.kernel(0.4, LAT)
    a_ref, v_ref = Polchinski(1.0).kernel(0.4, LAT)
    np.testing.assert_allclose(a, a_ref, rtol=1e-8)
    np.testing.assert_allclose(v, v_ref, rtol=1e-8)
    a, v = SEED_CAROSSO.kernel(0.4, LAT)  # Carosso-M is B = 2, sigma = w / 2 [5.37]
    a_ref, v_ref = Carosso(1.0).kernel(0.4, LAT)
    np.testing.assert_allclose(a, a_ref, rtol=1e-8)
    np.testing.assert_allclose(v, v_ref, rtol=1e-8)


@pytest.mark.parametrize(
    "scheme",
    [
        WegnerMorris.from_gaussian_seed(2.0, lambda t, w, lat: w / 2.0, M=1.0),
        WegnerMorris.from_cutoff_profile(lambda t, w, lat: jnp.exp(-w * t)),
        Rescaled(Carosso(1.0), lambda t: jnp.exp(0.1 * t)),
        FieldRenormalized(SEED_CAROSSO, lambda t: 1.0 + t),
    ],
    ids=["seed", "profile", "rescaled", "field-renormalized"],
)
def test_a_python_function_is_described_by_name_and_refused(scheme):
    desc = scheme.describe()
    assert "python" in repr(desc) and "lambda" in repr(desc)
    with pytest.raises(InvalidSchemeError, match="Python function .*cannot be rebuilt"):
        scheme_from_description(desc)
    with pytest.raises(InvalidSchemeError, match="Python function"):
        require_reloadable(scheme)


@pytest.mark.parametrize(
    "desc",
    [
        None,
        {"name": "wilson", "M": 1.0},
        {"name": "carosso"},
        {"name": "carosso", "M": 1.0, "colour": "red"},
        {"name": "polchinski", "M": 1.0, "profile": "fast"},
        {"name": "rescaled", "base": {"name": "carosso", "M": 1.0}, "scale": {"scale": "linear", "rate": 1.0}},
        {"name": "wegner-morris", "label": "x", "M": 0.0, "beta": {"function": "nope"}, "gamma": 1.0,
         "n_quad": 4, "n_panels": 4},
    ],
)
def test_bad_descriptions_are_refused(desc):
    with pytest.raises(InvalidSchemeError):
        scheme_from_description(desc)
