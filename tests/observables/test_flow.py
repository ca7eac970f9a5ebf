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
    assert set(data) == {"scheme", "M", "t", "r_t", "observables", "correlators", "meta"}
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
        ({"t_max": 1.0, "n_times": 0}, "n.times"),
        ({"t_max": -1.0, "n_times": 3}, "t_max"),
        ({"times": [0.1], "t_max": 1.0}, "not both"),
        ({"times": [float("nan")]}, "finite"),
    ],
)
def test_bad_time_grids(kwargs, message):
    with pytest.raises(InvalidSchemeError, match=message):
        time_grid(**kwargs)


def _modes(fields):
    """phi~(p) [4.26] of fields (..., N, N)."""
    return np.fft.fftn(fields, axes=(-2, -1)) / LAT.sites


def _zscore(x):
    x = np.asarray(x)
    sd = x.std(ddof=1)
    return 0.0 if sd == 0 and x.mean() == 0 else abs(x.mean()) / (sd / np.sqrt(x.size))  # a real mode: Im = 0


@pytest.mark.parametrize("scheme", [make_scheme("carosso", M=1.0), make_scheme("polchinski", M=0.5, profile="exponential")],
                         ids=["carosso", "polchinski-exponential"])
def test_flow_path_is_a_path_of_the_sde(free_fields, scheme):
    """One sample path per configuration: the marginal at every t is p_{t|0} (G2_t = a_t^2 G0 + v_t)
    and the increment from t1 to t2 is the exact transition: phi~_t2 - a_{t2|t1} phi~_t1 is
    uncorrelated with phi~_t1 and has L^d <|.|^2> = v_{t2|t1}. Pushing phi_0 to each time with one
    noise draw (the old pictures) has the right marginals but fails the increment test."""
    from rgdiff.observables.true_flow import flow_path

    phi0 = free_fields[0]
    times = np.array([0.0, 0.05, 0.3])
    path = flow_path(scheme, jax.random.key(7), phi0, times, LAT)
    assert path.shape == (3, *phi0.shape) and np.array_equal(path[0], phi0)
    p2 = np.asarray(LAT.phat_sq())
    modes = _modes(path)
    for i, t in enumerate(times[1:], start=1):
        a, v = (np.asarray(x) for x in scheme.kernel(float(t), LAT, half=False))
        for p in ((0, 0), (1, 0), (2, 1)):
            power = LAT.volume * np.abs(modes[i][:, p[0], p[1]]) ** 2
            exact = a[p] ** 2 / (p2[p] + M2) + v[p]
            assert abs(power.mean() - exact) < Z_MAX * power.std(ddof=1) / np.sqrt(power.size), (t, p)
    a21, v21 = (np.asarray(x) for x in scheme.transition(0.05, 0.3, LAT, half=False))

    def increment_ok(m1, m2):
        ok = True
        for p in ((0, 0), (1, 0), (2, 1)):
            r = m2[:, p[0], p[1]] - a21[p] * m1[:, p[0], p[1]]
            cross = LAT.volume * r * np.conj(m1[:, p[0], p[1]])
            ok &= _zscore(cross.real) < Z_MAX and _zscore(cross.imag) < Z_MAX
            ok &= abs(np.mean(LAT.volume * np.abs(r) ** 2) - v21[p]) < Z_MAX * np.std(LAT.volume * np.abs(r) ** 2) / np.sqrt(r.size)
        return ok

    assert increment_ok(modes[1], modes[2])
    key = jax.random.key(7)
    same_noise = [np.asarray(scheme.push_forward(key, phi0, t, LAT)) for t in (0.05, 0.3)]
    assert not increment_ok(_modes(same_noise[0]), _modes(same_noise[1]))


def test_flow_path_refuses_backward_times():
    from rgdiff.observables.true_flow import flow_path

    with pytest.raises(InvalidSchemeError):
        flow_path(make_scheme("carosso", M=1.0), jax.random.key(0), np.zeros(LAT.shape), [0.0, 0.3, 0.1], LAT)
