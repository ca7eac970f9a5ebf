"""Every figure draws for d = 1, 2, 3, in one vacuum and with tunnelling, and its axes say what they show."""

import numpy as np
import pytest

import matplotlib.pyplot as plt

from rgdiff.cli import plots
from rgdiff.io.modeldir import couplings_times
from rgdiff.lattice.geometry import Lattice
from rgdiff.observables.estimators import measure
from rgdiff.observables.true_flow import true_flow
from rgdiff.rg import make_scheme
from rgdiff.theory.phi4 import Phi4

import jax


def _ensemble(dim, size, broken, seed=0):
    rng = np.random.default_rng(seed)
    fields = 0.3 * rng.normal(size=(2, 40) + (size,) * dim)
    if broken:  # two chains in opposite vacua, no tunnelling
        fields += 5.0
        fields[1] *= -1
    return fields


@pytest.mark.parametrize("dim, size", [(1, 8), (2, 6), (3, 4)])
@pytest.mark.parametrize("broken", [False, True], ids=["tunnelling", "broken"])
def test_ensemble_figures_draw(tmp_path, dim, size, broken):
    theory = Phi4(Lattice(dim, size, float(size)), -1.0 if broken else 1.0, 0.5)
    fields = _ensemble(dim, size, broken)
    m = measure(fields, theory.lattice)
    mc_time = 10 * np.arange(1, fields.shape[1] + 1)
    plots.configurations(fields, theory, tmp_path / "c.png", mc_time=mc_time)
    plots.magnetization(fields, theory, tmp_path / "m.png", mc_time=mc_time)
    plots.propagator(fields, theory, tmp_path / "p.png", measurement=m)
    plots.correlators(m.correlators, theory, tmp_path / "g.png", measurement=m)
    for name in ("c", "m", "p", "g"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_log_time_axis_puts_zero_at_the_left_edge():
    fig, ax = plt.subplots()
    t = np.concatenate([[0.0], np.geomspace(1e-5, 9.0, 40)])
    x = plots.log_time_axis(ax, t)
    assert ax.get_xscale() == "log" and x[0] == pytest.approx(1e-5 / 4) and np.all(np.diff(x) > 0)
    labels = [ax.xaxis.get_major_formatter()(v, i) for i, v in enumerate(ax.get_xticks())]
    assert labels[0] == "0" and len(labels) == len(set(labels)) <= 7
    plt.close(fig)


def test_couplings_grid_is_log_spaced_with_t_zero():
    lat = Lattice(2, 20, 1.0)
    t = couplings_times(9.0, 101, lat)
    assert t[0] == 0.0 and t[-1] == pytest.approx(9.0) and len(t) == 101
    assert t[1] == pytest.approx(0.01 / lat.cutoff**2) and np.allclose(np.diff(np.log(t[1:])), np.log(t[2] / t[1]))


def test_flow_figures_draw_and_label_the_dimension(tmp_path):
    theory = Phi4(Lattice(3, 4, 4.0), 1.0, 0.5)
    fields = _ensemble(3, 4, False)
    scheme = make_scheme("carosso", M=1.0)
    res, _ = true_flow(scheme, fields, theory.lattice, np.array([0.0, 0.1, 0.6]), key=jax.random.key(0))
    fj = res.as_json()
    plots.flows([("true", fj)], tmp_path / "f.png", "title")
    assert (tmp_path / "f.png").exists()
    assert dict(plots.flow_panels(3))["lambda_R_hat"] == "lambda_R_hat = lambda_R / r_t^1"
    rows = [("Carosso", np.array([0.0, 0.1, 0.6]), fields[0, :3])]
    plots.flow_rows(rows, theory, tmp_path / "r.png", "path")
    assert (tmp_path / "r.png").exists()
    assert plots.scheme_label(make_scheme("polchinski", M=1.0)) == "Polchinski (slow profile), M = 1"
    assert plots.scheme_label(scheme) == "Carosso, M = 1"
