"""Linear RG schemes: exact kernels against closed forms and sampled fields.

Closed forms (conventions page, w = |phat|^2 + M^2): Carosso a = e^{-w s t},
v = noise (1 - e^{-2 w s t}) / w; Polchinski a = K_t / K_0, v = (K_t - K_t^2 / K_0) / w with
K_t = e^{-w t} or e^{-e^{2t} w / Lambda_0^2}. They are written out again here, independently of
the package.

Statistical criterion (sampled fields): for each mode the ratio R_b(p) = L^d |phi~_b(p)|^2 / G(p)
over B independent samples must have mean 1 within |z| < 5 standard errors (per mode, Bonferroni
over <= 36 modes) and the per-sample average over modes must have mean 1 within |z| < 4 (pooled).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rgdiff import Lattice, Phi4
from rgdiff.errors import InvalidSchemeError
from rgdiff.theory.gaussian import free_field_spectrum, sample_gaussian_field
from rgdiff.rg import Carosso, Polchinski, WegnerMorris, make_scheme

LAT = Lattice(2, 6, 6.0)  # lattice units: |phat|^2 in [0, 8], Lambda_0^2 = 8
STIFF = Lattice(2, 8, 1.0)  # physical units: Lambda_0^2 = 512, kernels with sharp boundary layers
N_SAMPLES = 4096
M2_UV = 0.7  # mass squared of the sampled UV free field

SCHEMES = [
    Carosso(0.0),
    Carosso(1.0, noise=0.5, speed=2.0),
    Polchinski(0.0),
    Polchinski(1.0),
    Polchinski(0.0, "exponential"),
    Polchinski(1.0, "exponential"),
]
SAMPLED_SCHEMES = [Carosso(0.0), Carosso(1.0, noise=0.5, speed=2.0), Polchinski(1.0), Polchinski(0.0, "exponential")]


def scheme_id(scheme):
    return "-".join(f"{k}={v}" for k, v in scheme.describe().items())


def closed_form(scheme, t, lattice, start=0.0):
    """The conventions page's kernels, written out in numpy."""
    w = np.asarray(lattice.phat_sq_half()) + scheme.M**2
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(scheme, Carosso):
            x = scheme.speed * (t - start)
            a = np.exp(-w * x)
            v = np.where(w == 0, 2 * scheme.noise * x, scheme.noise * -np.expm1(-2 * w * x) / w)
            return a, v
        # x = (log K_s - log K_t) / w, written with expm1 so that t -> s keeps its digits
        if scheme.profile == "slow":
            log_k_t, x = -w * t, t - start
        else:
            log_k_t = -np.exp(2 * t) * w / lattice.cutoff**2
            x = np.exp(2 * start) * np.expm1(2 * (t - start)) / lattice.cutoff**2
        a = np.exp(-w * x)  # K_t / K_s
        v = np.where(w == 0, x, -np.exp(log_k_t) * np.expm1(-w * x) / w)  # (K_t - K_t^2/K_s) / w
        return a, v


def ratio_z_scores(phi, lattice, expected_full):
    """(max per-mode |z|, pooled z) of L^d |phi~(p)|^2 / G(p) against mean 1; expected_full may
    carry the sample axis."""
    power = lattice.volume * np.abs(np.asarray(lattice.fourier(phi))) ** 2
    ratio = (power / np.asarray(expected_full)).reshape(power.shape[0], -1)
    n = ratio.shape[0]
    per_mode = (ratio.mean(0) - 1.0) / (ratio.std(0, ddof=1) / np.sqrt(n))
    pooled_samples = ratio.mean(1)
    pooled = (pooled_samples.mean() - 1.0) / (pooled_samples.std(ddof=1) / np.sqrt(n))
    return np.max(np.abs(per_mode)), pooled


def assert_spectrum(phi, lattice, expected_full):
    worst, pooled = ratio_z_scores(phi, lattice, expected_full)
    assert worst < 5 and abs(pooled) < 4, f"max per-mode |z| = {worst:.2f}, pooled z = {pooled:.2f}"


@pytest.fixture(scope="module")
def uv_free_field():
    """B exact samples of the free field of mass squared M2_UV on LAT."""
    return sample_gaussian_field(jax.random.key(7), LAT, free_field_spectrum(LAT, M2_UV), (N_SAMPLES,))


def uv_spectrum_full():
    return 1.0 / (np.asarray(LAT.phat_sq()) + M2_UV)


# closed forms ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES, ids=scheme_id)
@pytest.mark.parametrize("lattice", [LAT, STIFF], ids=str)
def test_kernel_matches_closed_form(scheme, lattice):
    starts = np.array([0.0, 0.0, 0.0, 0.3])
    ends = np.array([1e-7, 0.05, 0.8, 0.9])
    a, v = scheme.transition(starts, ends, lattice)
    for i, (s, t) in enumerate(zip(starts, ends, strict=True)):
        a_ref, v_ref = closed_form(scheme, t, lattice, s)
        np.testing.assert_allclose(a[i], a_ref, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(v[i], v_ref, rtol=1e-12, atol=1e-300)
    assert np.all(np.asarray(v) >= 0)


@pytest.mark.parametrize("scheme", SCHEMES, ids=scheme_id)
def test_quadrature_of_rates_reproduces_closed_form(scheme):
    """A WegnerMorris scheme given only the rates (beta, gamma) integrates them to the closed form.

    On STIFF, w t runs from 0 to ~400: smooth integrands and sharp boundary layers both occur."""
    lattice = STIFF
    quadrature = WegnerMorris(
        lambda t, w, lat: scheme.mode_rates(t, w - scheme.M**2, lat)[0],
        lambda t, w, lat: scheme.mode_rates(t, w - scheme.M**2, lat)[1],
        M=scheme.M,
    )
    starts = jnp.array([0.0, 0.0, 0.0, 0.3])
    ends = jnp.array([1e-7, 0.05, 0.8, 0.9])
    a, v = quadrature.transition(starts, ends, lattice)
    a_ref, v_ref = scheme.transition(starts, ends, lattice)
    significant = np.asarray(v_ref) > 1e-250  # below that the closed forms underflow to denormals
    np.testing.assert_allclose(np.asarray(a)[significant], np.asarray(a_ref)[significant], rtol=1e-8)
    np.testing.assert_allclose(np.asarray(v)[significant], np.asarray(v_ref)[significant], rtol=1e-8)


PROFILES = {
    "slow": lambda t, w, lat: jnp.exp(-w * t),
    "exponential": lambda t, w, lat: jnp.exp(-jnp.exp(2.0 * t) * w / lat.cutoff**2),
}


# ids avoid the bare word "slow", which conftest reads as the slow-test marker
@pytest.mark.parametrize("profile", ["slow", "exponential"], ids=lambda p: f"K-{p}")
@pytest.mark.parametrize("M", [0.0, 1.0], ids=lambda m: f"M-{m}")
def test_cutoff_profile_builder_reproduces_polchinski(profile, M):
    """beta = -d/dt log K, gamma = -(dK/dt)/w (with its w -> 0 limit) integrate to [5.41]."""
    built = WegnerMorris.from_cutoff_profile(PROFILES[profile], M=M)
    ends = jnp.array([0.05, 0.8])
    a, v = built.kernel(ends, LAT)
    for i, t in enumerate(np.asarray(ends)):
        a_ref, v_ref = closed_form(Polchinski(M, profile), t, LAT)
        np.testing.assert_allclose(a[i], a_ref, rtol=1e-8)
        np.testing.assert_allclose(v[i], v_ref, rtol=1e-8)


def test_gaussian_seed_builder_reproduces_carosso():
    """Carosso-M is the Wegner-Morris flow with B = 2 and seed kernel w/2 [5.37]."""
    built = WegnerMorris.from_gaussian_seed(2.0, lambda t, w, lat: w / 2.0, M=1.0)
    a, v = built.kernel(0.4, LAT)
    a_ref, v_ref = closed_form(Carosso(1.0), 0.4, LAT)
    np.testing.assert_allclose(a, a_ref, rtol=1e-8)
    np.testing.assert_allclose(v, v_ref, rtol=1e-8)


@pytest.mark.parametrize("scheme", SCHEMES, ids=scheme_id)
def test_small_times_and_the_undamped_zero_mode(scheme):
    """v_t = gamma_0 t (1 + O(w t)) at tiny t (expm1 keeps the digits), and at w = 0 the limits."""
    t = 1e-12
    _, v = scheme.kernel(t, LAT)
    _, gamma0 = scheme.rates(0.0, LAT)
    np.testing.assert_allclose(v, gamma0 * t, rtol=1e-9)
    a, v = scheme.kernel(0.6, LAT)
    if scheme.M == 0:
        if isinstance(scheme, Carosso):
            expected = 2 * scheme.noise * scheme.speed * 0.6
        elif scheme.profile == "slow":
            expected = 0.6
        else:
            expected = np.expm1(1.2) / LAT.cutoff**2
        assert a[0, 0] == 1.0
        np.testing.assert_allclose(v[0, 0], expected, rtol=1e-14)
    a0, v0 = scheme.kernel(0.0, LAT)
    assert np.all(np.asarray(a0) == 1.0) and np.all(np.asarray(v0) == 0.0)


# free-field flows on sampled fields -----------------------------------------------------------


@pytest.mark.parametrize("scheme", SAMPLED_SCHEMES, ids=scheme_id)
def test_free_field_flow_is_exact_on_samples(scheme, uv_free_field, getkey):
    """G2_t(p) = a_t(p)^2 G2_0(p) + v_t(p) with G2_0 = 1/(|phat|^2 + m2)."""
    t = 0.3
    phi_t = scheme.push_forward(getkey(), uv_free_field, t, LAT)
    a, v = scheme.kernel(t, LAT, half=False)
    assert_spectrum(phi_t, LAT, a**2 * uv_spectrum_full() + v)


def test_per_configuration_times(uv_free_field, getkey):
    """One time per configuration (score matching with random t): each sample follows its own kernel."""
    scheme = Polchinski(1.0, "exponential")
    times = jax.random.uniform(getkey(), (N_SAMPLES,), minval=0.0, maxval=1.0)
    phi_t = scheme.push_forward(getkey(), uv_free_field, times, LAT)
    a, v = scheme.kernel(times, LAT, half=False)
    assert a.shape == (N_SAMPLES,) + LAT.shape
    assert_spectrum(phi_t, LAT, a**2 * uv_spectrum_full() + v)


def test_float32_push_forward_keeps_dtype_and_moments(uv_free_field, getkey):
    scheme = Carosso(1.0)
    phi32 = uv_free_field.astype(jnp.float32)
    phi_t = scheme.push_forward(getkey(), phi32, 0.3, LAT)
    assert phi_t.dtype == jnp.float32
    a32, v32 = scheme.kernel(0.3, LAT, dtype=jnp.float32)
    assert a32.dtype == jnp.float32 and v32.dtype == jnp.float32
    a, v = scheme.kernel(0.3, LAT, half=False)
    assert_spectrum(phi_t.astype(jnp.float64), LAT, a**2 * uv_spectrum_full() + v)


# stationary law ------------------------------------------------------------------------------


def test_carosso_stationary_law_is_the_free_field_of_mass_M(getkey):
    """noise = 1: the free field of mass M; noise = 0.5 (the authors' code): exp(-2 S_M)."""
    M = 1.3
    w = np.asarray(LAT.phat_sq_half()) + M**2
    for noise in (1.0, 0.5):
        scheme = Carosso(M, noise=noise)
        a, v = scheme.kernel(40.0, LAT)
        assert np.max(np.asarray(a)) < 1e-15
        np.testing.assert_allclose(v, noise / w, rtol=1e-12)
        np.testing.assert_allclose(scheme.prior_spectrum(LAT), noise / w, rtol=1e-14)

    # pushing samples of the stationary law leaves the spectrum invariant
    noise = 0.5
    scheme = Carosso(M, noise=noise)
    phi = scheme.prior_sample(getkey(), LAT, (N_SAMPLES,))
    assert_spectrum(phi, LAT, noise / (np.asarray(LAT.phat_sq()) + M**2))
    assert_spectrum(scheme.push_forward(getkey(), phi, 0.5, LAT), LAT, noise / (np.asarray(LAT.phat_sq()) + M**2))

    # the prior density is exp(-S_M / noise) / Z with S_M the free action of mass M [7.2]
    action = Phi4(LAT, M**2, 0.0).action(phi[:3])
    log_z = 0.5 * np.sum(np.asarray(LAT.half_multiplicity()) * np.log(2 * np.pi * (noise / w) / LAT.spacing**LAT.dim))
    np.testing.assert_allclose(scheme.prior_log_prob(phi[:3], LAT), -action / noise - log_z, rtol=1e-12)
    np.testing.assert_allclose(
        scheme.prior_score(phi[:3], LAT), Phi4(LAT, M**2, 0.0).score(phi[:3]) / noise, atol=1e-12
    )


def test_schemes_without_a_stationary_law_say_why():
    assert Carosso(1.0).has_prior and not Carosso(0.0).has_prior and not Polchinski(1.0).has_prior
    with pytest.raises(
        InvalidSchemeError, match=r"Carosso with M = 0 has no stationary law \(zero mode undamped\); use M > 0"
    ):
        Carosso(0.0).prior_sample(jax.random.key(0), LAT)
    with pytest.raises(InvalidSchemeError, match="delta at phi = 0"):
        Polchinski(1.0, "exponential").prior_spectrum(LAT)
    with pytest.raises(InvalidSchemeError, match="zero mode diffuses"):
        Polchinski(0.0).prior_log_prob(jnp.zeros(LAT.shape), LAT)


# semigroup ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES, ids=scheme_id)
def test_semigroup_of_kernels(scheme):
    """0 -> s -> t equals 0 -> t: a_t = a_{t|s} a_s and v_t = a_{t|s}^2 v_s + v_{t|s}."""
    s, t = 0.25, 0.7
    a_s, v_s = scheme.kernel(s, LAT)
    a_ts, v_ts = scheme.transition(s, t, LAT)
    a_t, v_t = scheme.kernel(t, LAT)
    np.testing.assert_allclose(a_ts * a_s, a_t, rtol=1e-13)
    np.testing.assert_allclose(a_ts**2 * v_s + v_ts, v_t, rtol=1e-13)


def test_only_carosso_is_time_homogeneous():
    """Carosso's kernel from s to t is its kernel over t - s; Polchinski's is not: the exponential
    profile's drift grows like e^{2t}, and even the slow profile's noise rate K_t decays in t."""
    s, t = 0.25, 0.7
    for scheme in (Carosso(1.0, speed=2.0), Carosso(0.0)):
        np.testing.assert_allclose(scheme.transition(s, t, LAT), scheme.kernel(t - s, LAT), rtol=1e-13)
    a_ts, v_ts = Polchinski(1.0, "exponential").transition(s, t, LAT)
    a_shift, v_shift = Polchinski(1.0, "exponential").kernel(t - s, LAT)
    assert np.all(np.asarray(a_ts) < np.asarray(a_shift))
    a_ts, v_ts = Polchinski(1.0).transition(s, t, LAT)
    a_shift, v_shift = Polchinski(1.0).kernel(t - s, LAT)
    np.testing.assert_allclose(a_ts, a_shift, rtol=1e-13)
    assert np.all(np.asarray(v_ts) < np.asarray(v_shift))


def test_semigroup_in_distribution(uv_free_field, getkey):
    """Sampled fields pushed 0 -> s and then s -> t have the spectrum of the 0 -> t kernel
    (the time-inhomogeneous exponential profile, where s -> t is not a shift of 0 -> t - s)."""
    scheme = Polchinski(0.0, "exponential")
    s, t = 0.25, 0.7
    phi_s = scheme.push_forward(getkey(), uv_free_field, s, LAT)
    phi_t = scheme.push_forward(getkey(), phi_s, t, LAT, start=s)
    a, v = scheme.kernel(t, LAT, half=False)
    assert_spectrum(phi_t, LAT, a**2 * uv_spectrum_full() + v)


# Polchinski's free-theory flow [5.40] ---------------------------------------------------------


@pytest.mark.parametrize("profile", ["slow", "exponential"], ids=lambda p: f"K-{p}")
def test_polchinski_free_theory_flows_to_k_t_over_w(profile, getkey):
    """exp(-S_M / K_0) (propagator K_0/w) flows to exp(-S_M / K_t) (propagator K_t/w) [5.38]-[5.40]."""
    M = 1.0
    scheme = Polchinski(M, profile)
    w_half = np.asarray(LAT.phat_sq_half()) + M**2
    k = {
        "slow": lambda t, w: np.exp(-w * t),
        "exponential": lambda t, w: np.exp(-np.exp(2 * t) * w / LAT.cutoff**2),
    }[profile]
    for t in (0.1, 0.5, 2.0):
        a, v = scheme.kernel(t, LAT)
        np.testing.assert_allclose(a**2 * k(0.0, w_half) / w_half + v, k(t, w_half) / w_half, rtol=1e-12)
    if profile == "exponential":  # K_0 != 1: the UV theory is not the plain free field; sample it
        w_full = np.asarray(LAT.phat_sq()) + M**2
        phi0 = sample_gaussian_field(getkey(), LAT, k(0.0, w_half) / w_half, (N_SAMPLES,))
        assert_spectrum(scheme.push_forward(getkey(), phi0, 0.5, LAT), LAT, k(0.5, w_full) / w_full)


# densities and scores ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES[::2], ids=scheme_id)
def test_conditional_score_is_gradient_of_log_density(scheme, getkey):
    phi0 = jax.random.normal(getkey(), (3,) + LAT.shape)
    times = jnp.array([0.2, 0.5, 1.1])
    phi_t = scheme.push_forward(getkey(), phi0, times, LAT, start=0.1)

    def total(phi):
        return jnp.sum(scheme.log_transition_density(phi, phi0, times, LAT, start=0.1))

    autodiff = jax.grad(total)(phi_t)
    closed = scheme.conditional_score(phi_t, phi0, times, LAT, start=0.1)
    np.testing.assert_allclose(closed, autodiff, rtol=1e-10, atol=1e-10 * np.max(np.abs(autodiff)))


def test_log_transition_density_matches_dense_normal():
    lattice = Lattice(2, 3, 1.5)
    scheme = Polchinski(0.5, "exponential")
    rng = np.random.default_rng(3)
    phi0 = rng.normal(size=(2,) + lattice.shape)
    phi_t = rng.normal(size=(2,) + lattice.shape)
    t = 0.4
    a, v = scheme.kernel(t, lattice, half=False)
    a, v = np.asarray(a), np.asarray(v)
    mean = np.real(np.fft.ifftn(a * np.fft.fftn(phi0, axes=(-2, -1)), axes=(-2, -1)))
    sites = [(i, j) for i in range(3) for j in range(3)]
    cov = np.array(
        [
            [sum(v[p] * np.cos(2 * np.pi * np.dot(p, np.subtract(n, m)) / 3) for p in sites) for m in sites]
            for n in sites
        ]
    )
    cov /= lattice.volume
    x = (phi_t - mean).reshape(2, -1)
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    dense = -0.5 * np.einsum("bi,ij,bj->b", x, np.linalg.inv(cov), x) - 0.5 * logdet
    np.testing.assert_allclose(scheme.log_transition_density(phi_t, phi0, t, lattice), dense, rtol=1e-11)


def test_kernels_and_push_forward_are_jittable(uv_free_field, getkey):
    scheme = Polchinski(1.0, "exponential")
    jitted = jax.jit(lambda t: scheme.kernel(t, LAT))
    np.testing.assert_allclose(jitted(0.4)[1], scheme.kernel(0.4, LAT)[1], rtol=1e-14)
    key = getkey()
    times = jnp.linspace(0.1, 1.0, 8)
    push = jax.jit(lambda k, phi, t: scheme.push_forward(k, phi, t, LAT))
    np.testing.assert_allclose(
        push(key, uv_free_field[:8], times), scheme.push_forward(key, uv_free_field[:8], times, LAT), rtol=1e-12
    )


# effective cutoff [7.3], [7.4] -----------------------------------------------------------------


def test_effective_cutoff():
    lam0 = LAT.cutoff
    scheme = Carosso(1.0)
    times = np.array([0.0, 0.01, 0.2, 0.5, 1.0])
    expected = np.array([lam0, lam0, np.sqrt(1 / 0.4 - 1), 0.0, 0.0])  # 1/(2t) - M^2 = 49 > Lambda_0^2 at t = 0.01
    np.testing.assert_allclose(scheme.effective_cutoff(times, LAT), expected, rtol=1e-14)
    np.testing.assert_allclose(scheme.r(times, LAT), expected / lam0, rtol=1e-14)
    assert scheme.r(0.0, LAT) == 1.0 and isinstance(scheme.r(0.2, LAT), float)
    np.testing.assert_allclose(Carosso(1.0, speed=2.0).effective_cutoff(0.1, LAT), np.sqrt(1 / 0.4 - 1))
    np.testing.assert_allclose(Polchinski(1.0).effective_cutoff(0.2, LAT), np.sqrt(1 / 0.4 - 1))
    np.testing.assert_allclose(Polchinski(1.0, "exponential").effective_cutoff(0.5, LAT), lam0 * np.exp(-0.5))


# metadata and bad input -----------------------------------------------------------------------


def test_describe_and_factory():
    assert make_scheme("carosso", M=1.0, noise=0.5) == Carosso(1.0, noise=0.5)
    assert make_scheme("Polchinski", M=1.0, profile="exponential") == Polchinski(1.0, "exponential")
    assert hash(Carosso(1.0)) == hash(Carosso(1.0))
    assert Carosso(1.0, noise=0.5, speed=2.0).describe() == {"name": "carosso", "M": 1.0, "noise": 0.5, "speed": 2.0}
    assert Polchinski(0.5).describe() == {"name": "polchinski", "M": 0.5, "profile": "slow"}


@pytest.mark.parametrize(
    "build",
    [
        lambda: Carosso(-1.0),
        lambda: Carosso(float("nan")),
        lambda: Polchinski(-0.1),
        lambda: Polchinski(1.0, "fast"),
        lambda: Carosso(1.0, noise=0.0),
        lambda: Carosso(1.0, speed=-1.0),
        lambda: make_scheme("wilson"),
        lambda: make_scheme("carosso", M=-1.0),
        lambda: make_scheme("carosso", M=float("nan")),
        lambda: make_scheme("polchinski", M=1.0, noise=0.5),
        lambda: WegnerMorris(1.0, 2.0),
    ],
)
def test_bad_scheme_parameters_are_refused(build):
    with pytest.raises(InvalidSchemeError):
        build()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.kernel(-0.1, LAT),
        lambda s: s.kernel(jnp.array([0.1, -0.2]), LAT),
        lambda s: s.kernel(float("nan"), LAT),
        lambda s: s.transition(0.5, 0.2, LAT),
        lambda s: s.push_forward(jax.random.key(0), jnp.zeros(LAT.shape), -1.0, LAT),
        lambda s: s.log_transition_density(jnp.zeros(LAT.shape), jnp.zeros(LAT.shape), -1.0, LAT),
        lambda s: s.conditional_score(jnp.zeros(LAT.shape), jnp.zeros(LAT.shape), 0.5, LAT, start=-0.5),
        lambda s: s.effective_cutoff(-1.0, LAT),
    ],
)
def test_negative_times_are_refused(call):
    with pytest.raises(InvalidSchemeError, match="t|time"):
        call(Carosso(1.0))


# the push-forward's noise -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_push_forward_per_mode_mean_and_variance(dtype, getkey):
    """From one fixed phi0, the modes of phi_t have mean a phi~0 and L^d Var = v (per part v/2,
    a self-conjugate mode's imaginary part 0), within 5 standard errors; the same criterion sees
    a noise variance 5% too large (power check)."""
    scheme, t, n = Carosso(1.0), 0.3, 8192
    phi0 = jax.random.normal(getkey(), LAT.shape, jnp.float64).astype(dtype)
    phi_t = scheme.push_forward(getkey(), jnp.broadcast_to(phi0, (n,) + LAT.shape), t, LAT)
    modes = np.asarray(LAT.rfourier(phi_t.astype(jnp.float64)))
    a, v = (np.asarray(x) for x in scheme.kernel(t, LAT))
    centre = np.asarray(LAT.rfourier(phi0.astype(jnp.float64))) * a
    real = LAT.real_mode_mask_half()
    for part, var in ((np.real, np.where(real, v, v / 2)), (np.imag, np.where(real, 0.0, v / 2))):
        x = part(modes - centre) * np.sqrt(LAT.volume)
        mean_z = x.mean(0) / np.sqrt(np.maximum(var, 1e-300) / n)
        assert np.max(np.abs(np.where(var > 0, mean_z, 0))) < 5
        sq = x**2
        err = sq.std(0, ddof=1) / np.sqrt(n)
        ok = var > 0
        assert np.max(np.abs((sq.mean(0) - var)[ok] / err[ok])) < 5
        pooled = np.sum((sq.mean(0) - var)[ok]) / np.sqrt(np.sum(err[ok] ** 2))
        wrong = np.sum((1.05 * sq.mean(0) - var)[ok]) / np.sqrt(np.sum(err[ok] ** 2))
        assert abs(pooled) < 5 and wrong > 5, (pooled, wrong)
        if part is np.imag:
            assert np.all(np.abs(x[:, real]) < 1e-5)


def test_push_forward_is_bitwise_reproducible_across_calls_and_processes():
    import subprocess
    import sys

    code = (
        "import hashlib, jax, jax.numpy as jnp, numpy as np\n"
        "jax.config.update('jax_enable_x64', True)\n"
        "from rgdiff import Lattice\nfrom rgdiff.rg import make_scheme\n"
        "lat = Lattice(2, 6, 6.0)\n"
        "phi = jnp.arange(4 * 36, dtype=jnp.float32).reshape(4, 6, 6) / 100\n"
        "out = make_scheme('carosso', M=1.0).push_forward(jax.random.fold_in(jax.random.key(5), 7), phi, 0.3, lat)\n"
        "print(hashlib.sha256(np.asarray(out).tobytes()).hexdigest())\n"
    )
    here, again = {}, {}
    exec(code.replace("print(", "digest = ("), here)
    exec(code.replace("print(", "digest = ("), again)
    assert here["digest"] == again["digest"]
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here["digest"]
