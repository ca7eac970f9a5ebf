"""A model directory reloads with its scheme, whatever the scheme class; a scheme that could not be
rebuilt is refused when saving, so no unloadable directory is written."""

import jax
import jax.numpy as jnp
import pytest

from rgdiff.errors import WriteOutputError
from rgdiff.io.modeldir import CONFIG, PARAMS, load_model_dir, write_model
from rgdiff.models import make_model
from rgdiff.rg import Carosso, ExponentialScale, FieldRenormalized, LinearInW, Polchinski, PolchinskiProfile, Rescaled, WegnerMorris
from rgdiff.theory.phi4 import make_phi4
from rgdiff.models.base import cast_model

THEORY = make_phi4(2, 4, units="lattice", m2=1.0, lam=2.0)
SCHEMES = [
    Carosso(1.0, noise=0.5),
    Polchinski(1.0, "exponential"),
    WegnerMorris.from_cutoff_profile(PolchinskiProfile("slow"), M=1.0),
    WegnerMorris.from_gaussian_seed(2.0, LinearInW(0.0, 0.5), M=1.0),
    Rescaled(Carosso(1.0), ExponentialScale(0.2)),
    FieldRenormalized(Polchinski(1.0), ExponentialScale(-0.2)),
]


def save(folder, scheme):
    model = cast_model(make_model("eft-score", THEORY, time_scale=1.0, key=jax.random.key(0)), jnp.float32)
    lat = THEORY.lattice
    config = {"model": model.describe(), "scheme": scheme.describe(),
              "theory": {"dim": lat.dim, "size": lat.size, "length": lat.length, "m2": THEORY.m2, "lam": THEORY.lam},
              "training": {"dtype": "float32", "horizon": 2.0}}
    folder.mkdir()
    write_model(folder, config, model)


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.describe()["name"] + "-" + type(s).__name__)
def test_every_scheme_reloads(tmp_path, scheme):
    save(tmp_path / "m", scheme)
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.scheme == scheme and loaded.theory.lattice == THEORY.lattice


def test_an_undescribable_scheme_is_refused_before_writing(tmp_path):
    scheme = WegnerMorris.from_gaussian_seed(2.0, lambda t, w, lat: w / 2.0, M=1.0)
    with pytest.raises(WriteOutputError, match="cannot save the model .*Python function"):
        save(tmp_path / "m", scheme)
    assert not (tmp_path / "m" / CONFIG).exists() and not (tmp_path / "m" / PARAMS).exists()
