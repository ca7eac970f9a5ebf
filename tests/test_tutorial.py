"""examples/tutorial.py runs top to bottom (its quick sizes, about a minute on two CPU cores), so the
tutorial cannot drift from the library."""

import runpy
from pathlib import Path

import numpy as np

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "tutorial.py"


def test_tutorial_runs(monkeypatch):
    monkeypatch.delenv("RGDIFF_TUTORIAL_FULL", raising=False)
    ns = runpy.run_path(str(TUTORIAL), run_name="__main__")
    # what each step promises: an ensemble, measured; a flow; a model; a comparison; bridge chains
    assert ns["uv"].fields.shape == (4, 400, 8, 8)
    assert ns["m"].observables["m_R"].defined and ns["m"].observables["effective_mass"].defined
    assert len(ns["truth"].observables["m_R"]) == len(ns["times"]) == ns["path"].shape[0]
    assert abs(-ns["f2"] / ns["f1"] - (-4.0)) < 0.5  # the learned t = 0 mass is the bare one
    assert set(ns["learned"].as_json()["observables"]) >= {"m_R", "Z", "lambda_R"}
    assert np.all(np.isfinite(ns["bridged"].fields))
