"""The paper's two RG schemes in closed form: Carosso-M [5.9], [5.20], [7.1] and Polchinski-M [5.38]-[5.42].

Both are written with w(p) = |phat|^2 + M^2 (conventions page, "RG schemes as forward SDEs").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rgdiff.errors import InvalidSchemeError
from rgdiff.lattice.geometry import Lattice
from rgdiff.rg.base import AbstractLinearScheme, check_times, one_minus_exp_over, require_mass, require_positive


@dataclasses.dataclass(frozen=True)
class Carosso(AbstractLinearScheme):
    """The M-modified Carosso scheme [5.20], [7.1]; M = 0 is the original scheme [5.9].

    Position space: d phi = s (Delta - M^2) phi dt + sqrt(2 s noise eps^-d) dW. Per mode, with
    w = |phat|^2 + M^2: beta = s w, gamma = 2 s noise, and ::

        a_t = exp(-w s t),   v_t = noise (1 - exp(-2 w s t)) / w   (-> 2 noise s t at w = 0).

    The stationary law (M > 0) is G_inf = noise / w: for noise = 1 the free field of mass M, so a
    free UV theory of mass M is a fixed point of the flow. noise = 0.5 reproduces the paper
    authors' public code (stationary law exp(-2 S_M), the seed-density convention [5.28]).

    **Arguments:**

    - `M`: the mass of [7.1], >= 0 (the paper uses M = 1).
    - `noise`: factor multiplying the noise variance, > 0.
    - `speed`: s, with t -> s t, > 0.
    """

    M: float = 0.0
    noise: float = 1.0
    speed: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "M", require_mass("Carosso mass --M", self.M))
        object.__setattr__(self, "noise", require_positive("Carosso noise factor (--noise)", self.noise))
        object.__setattr__(self, "speed", require_positive("Carosso speed (--speed)", self.speed))

    @property
    def mass(self) -> float:
        return self.M

    def describe(self) -> dict:
        return {"name": "carosso", "M": self.M, "noise": self.noise, "speed": self.speed}

    def mode_rates(self, t, phat_sq, lattice: Lattice):
        w = phat_sq + self.M**2
        beta = self.speed * w * jnp.ones_like(t)
        gamma = 2.0 * self.speed * self.noise * jnp.ones_like(beta)
        return beta, gamma

    def mode_transition(self, start, t, phat_sq, lattice: Lattice):
        # time-homogeneous: the kernel from s to t is the kernel over t - s
        w = phat_sq + self.M**2
        elapsed = self.speed * (t - start)
        return jnp.exp(-w * elapsed), self.noise * one_minus_exp_over(2.0 * elapsed, w)

    def cutoff_time(self, t):
        return self.speed * t

    @property
    def has_prior(self) -> bool:
        return self.M > 0

    def no_prior_reason(self) -> str:
        return "Carosso with M = 0 has no stationary law (zero mode undamped); use M > 0"

    def mode_prior_spectrum(self, phat_sq, lattice: Lattice):
        return self.noise / (phat_sq + self.M**2)


POLCHINSKI_PROFILES = ("slow", "exponential")


def polchinski_log_profile(profile: str, t, w, lattice: Lattice):
    """log K_t(w) of a Polchinski cutoff profile: -w t ("slow", [5.42]) or -e^{2t} w / Lambda_0^2
    ("exponential", [5.38], [5.39])."""
    if profile == "slow":
        return -w * t
    return -jnp.exp(2.0 * t) * w / lattice.cutoff**2


@dataclasses.dataclass(frozen=True)
class Polchinski(AbstractLinearScheme):
    """The M-modified Polchinski scheme [5.38]-[5.42], with cutoff profile K_t(p).

    With w = |phat|^2 + M^2 the kernel [5.41] is ::

        a_{t|s} = K_t / K_s,   v_{t|s} = (K_t - K_t^2 / K_s) / w = -K_t expm1(log K_t - log K_s) / w,

    and the rates are beta = -d/dt log K_t, gamma = -(d/dt K_t) / w. Profiles:

    - `"slow"` (default; [5.42], the paper's figures): K_t = exp(-w t); beta = w, gamma = K_t.
      Time-homogeneous in its drift but not in its noise.
    - `"exponential"` ([5.38], [5.39] with the M shift): K_t = exp(-e^{2t} w / Lambda_0^2);
      beta = 2 e^{2t} w / Lambda_0^2, gamma = 2 e^{2t} K_t / Lambda_0^2. Time-inhomogeneous:
      the kernel from s to t is not the kernel over t - s.

    Either way the UV theory exp(-S_M / K_0) [5.38] (S_M the free action of mass M, propagator
    K_0 / w; for "slow" K_0 = 1, the free field of mass M) flows to exp(-S_M / K_t), propagator
    K_t / w [5.40], and every mode is driven to zero as t -> infinity: the flow
    compresses the support to phi = 0, so there is no stationary law to start a reverse flow from.
    At w = 0 (only for M = 0, p = 0) K_t = 1: the zero mode is undamped (a = 1) and its variance
    takes the w -> 0 limit v_{t|s} = log K_s - log K_t over w, i.e. t - s ("slow") or
    (e^{2t} - e^{2s}) / Lambda_0^2 ("exponential").
    """

    M: float = 0.0
    profile: str = "slow"

    def __post_init__(self):
        object.__setattr__(self, "M", require_mass("Polchinski mass --M", self.M))
        if self.profile not in POLCHINSKI_PROFILES:
            raise InvalidSchemeError(
                f"unknown Polchinski profile {self.profile!r}; choose one of {', '.join(POLCHINSKI_PROFILES)}"
            )

    @property
    def mass(self) -> float:
        return self.M

    def describe(self) -> dict:
        return {"name": "polchinski", "M": self.M, "profile": self.profile}

    def log_cutoff_profile(self, t, w, lattice: Lattice):
        """log K_t(w) of the chosen profile."""
        return polchinski_log_profile(self.profile, t, w, lattice)

    def mode_rates(self, t, phat_sq, lattice: Lattice):
        w = phat_sq + self.M**2
        if self.profile == "slow":
            return w * jnp.ones_like(t), jnp.exp(-w * t)
        growth = 2.0 * jnp.exp(2.0 * t) / lattice.cutoff**2
        return growth * w, growth * jnp.exp(self.log_cutoff_profile(t, w, lattice))

    def mode_transition(self, start, t, phat_sq, lattice: Lattice):
        w = phat_sq + self.M**2
        if self.profile == "slow":
            elapsed_weight = t - start  # log K_s - log K_t = w (t - s)
        else:
            # e^{2t} - e^{2s} = e^{2s} expm1(2 (t - s)), exact for t close to s
            elapsed_weight = jnp.exp(2.0 * start) * jnp.expm1(2.0 * (t - start)) / lattice.cutoff**2
        log_k_t = self.log_cutoff_profile(t, w, lattice)
        a = jnp.exp(-w * elapsed_weight)
        v = jnp.exp(log_k_t) * one_minus_exp_over(elapsed_weight, w)
        return a, v

    def cutoff_time(self, t):
        return t

    def effective_cutoff(self, t, lattice: Lattice):
        """[7.3] for the slow profile; Lambda_0 e^{-t} for the exponential one (section 5.6.3, f = g = e^{-t})."""
        if self.profile == "slow":
            return super().effective_cutoff(t, lattice)
        check_times(t)
        cutoff = lattice.cutoff * np.exp(-np.asarray(t, dtype=np.float64))
        return float(cutoff) if cutoff.ndim == 0 else cutoff

    has_prior = False

    def no_prior_reason(self) -> str:
        if self.M == 0:
            return (
                "Polchinski with M = 0 has no stationary law: every mode p != 0 is driven to 0 "
                "while the zero mode diffuses without bound; use Carosso with M > 0 for a prior"
            )
        return (
            "Polchinski has no stationary law to sample: as t -> infinity a_t -> 0 and v_t -> 0, so "
            "p_t tends to the delta at phi = 0 (the flow compresses the support); use Carosso with "
            "M > 0 for a prior"
        )


SCHEME_NAMES = ("carosso", "polchinski")


def make_scheme(name: str, M: float = 0.0, **options) -> AbstractLinearScheme:
    """Build a scheme from its command-line name: "carosso" (options noise, speed) or
    "polchinski" (option profile = "slow" | "exponential")."""
    if not isinstance(name, str) or name.strip().lower() not in SCHEME_NAMES:
        raise InvalidSchemeError(f"unknown RG scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}")
    cls = {"carosso": Carosso, "polchinski": Polchinski}[name.strip().lower()]
    allowed = {f.name for f in dataclasses.fields(cls)} - {"M"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidSchemeError(
            f"scheme {name!r} does not take {', '.join(unknown)}; its options are {', '.join(sorted(allowed))}"
        )
    return cls(M=M, **options)


jax.tree_util.register_static(Carosso)
jax.tree_util.register_static(Polchinski)
