"""The true RG flow of observables on exactly sampled free fields, against closed forms."""

import jax
import numpy as np
import pytest

from rgdiff.observables.true_flow import FLOW_OBSERVABLES, time_grid, true_flow
from rgdiff.errors import InvalidSchemeError
from rgdiff.theory.gaussian import free_field_spectrum, sample_gaussian_field
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg import make_scheme

Z_MAX = 4.0
LAT = Lattice(2, 6, 3.0)
M2 = 0.8
TIMES = np.array([0.0, 0.05, 0.3])


@pytest.fixture(scope="module")
def free_fields():
    spectrum = free_field_spectrum(LAT, M2)
    return np.asarray(sample_gaussian_field(jax.random.key(5), LAT, spectrum, (1, 6000)))


@pytest.mark.parametrize("scheme", [make_scheme("carosso", M=1.0), make_scheme("polchinski", M=0.5)], ids=["carosso", "polchinski"])
def test_free_field_flow_of_G2_is_exact(free_fields, scheme):
    """G2_t(p) = a_t(p)^2 / (|phat|^2 + m2) + v_t(p) for p = 0 and p = e_1, on sampled fields."""
    res, _ = true_flow(scheme, free_fields, LAT, TIMES, key=jax.random.key(0), markov=False)
    p2 = np.asarray(LAT.phat_sq())
    for i, t in enumerate(TIMES):
        a, v = (np.asarray(x) for x in scheme.kernel(float(t), LAT, half=False))
        for name, p in (("G2_0", (0, 0)), ("G2_p1", (1, 0))):
            exact = a[p] ** 2 / (p2[p] + M2) + v[p]
            est = res.observables[name][i]
            assert abs(est.value - exact) < Z_MAX * est.error, (name, t, est, exact)
    assert res.meta["vacuum"] == "raw"


def test_rescaled_couplings_and_r_t(free_fields):
    scheme = make_scheme("carosso", M=1.0)
    times = np.array([0.0, 0.1, 0.6])
    res, kept = true_flow(scheme, free_fields, LAT, times, key=jax.random.key(1), markov=False, keep_configurations=2)
    np.testing.assert_allclose(res.r_t, [1.0, np.sqrt(1 / 0.2 - 1) / LAT.cutoff, 0.0])
    assert kept.shape == (3, 2, *LAT.shape)
    for i in range(2):
        m, mh = res.observables["m_R"][i], res.observables["m_R_hat"][i]
        assert mh.value == pytest.approx(m.value / res.r_t[i])
        lam, lamh = res.observables["lambda_R"][i], res.observables["lambda_R_hat"][i]
        assert lamh.value == pytest.approx(lam.value / res.r_t[i] ** 2)
    # r_t = 0 once 1/(2t) < M^2: the rescaled couplings are null there, the raw ones are not
    assert res.observables["m_R_hat"][2].value is None and res.observables["m_R"][2].value is not None
    data = res.as_json()
    assert set(data) == {"scheme", "M", "t", "r_t", "observables", "meta"}
    assert set(data["observables"]) == set(FLOW_OBSERVABLES)
    assert data["observables"]["m_R_hat"]["value"][2] is None


def test_undefined_estimator_is_null_not_a_crash():
    """A UV ensemble with less power at p = 0 than at p = e_1: G2(0)/G2(p1) < 1, m_R undefined."""
    spectrum = np.ones(LAT.shape[:-1] + (LAT.size // 2 + 1,))
    spectrum[0, 0] = 0.05
    fields = np.asarray(sample_gaussian_field(jax.random.key(2), LAT, spectrum, (1, 2000)))
    res, _ = true_flow(make_scheme("carosso", M=1.0), fields, LAT, np.array([0.0, 1.0]), key=jax.random.key(3), markov=False)
    assert res.observables["m_R"][0].value is None
    assert res.observables["Z"][0].value is None
    assert res.observables["m_R"][1].value is not None  # the flow restores G2(0) > G2(p1)


def test_broken_phase_maps_with_uv_signs():
    """Two vacua without tunnelling: the flowed ensemble is mapped with the UV sign."""
    rng = np.random.default_rng(0)
    fields = 5.0 + 0.3 * rng.normal(size=(2, 500, *LAT.shape))
    fields[1] *= -1  # chain 1 sits in the other vacuum
    scheme = make_scheme("carosso", M=1.0)
    res, _ = true_flow(scheme, fields, LAT, np.array([0.0, 0.5]), key=jax.random.key(4))
    assert res.meta["vacuum"] == "mapped"
    a0 = float(np.asarray(scheme.kernel(0.5, LAT, half=False)[0])[0, 0])
    m = res.observables["abs_magnetization"][1]
    assert abs(m.value - 5.0 * a0) < 0.05


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"times": [0.1, -0.2]}, ">= 0"),
        ({"times": []}, "empty"),
        ({"t_max": 1.0, "n_times": 0}, "n_times"),
        ({"t_max": -1.0, "n_times": 3}, "t_max"),
        ({"times": [0.1], "t_max": 1.0}, "not both"),
        ({"times": [float("nan")]}, "finite"),
    ],
)
def test_bad_time_grids(kwargs, message):
    with pytest.raises(InvalidSchemeError, match=message):
        time_grid(**kwargs)
