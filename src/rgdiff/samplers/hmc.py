"""HMC-family moves on the UV action exp(-S): one definition used by every UV chain of rgdiff.

`UVMove` names how a chain moves and builds everything Blackjax needs for it:

- `"fa-hmc"` (default): Fourier-accelerated HMC (`rgdiff.samplers.fourier`) with a random
  trajectory length (`RandomLengthHMC`, mean `trajectory_length`, pi/2 by default: a quarter
  period of every mode once the mass matrix has whitened them);
- `"fa-nuts"`: NUTS in the same Fourier coordinates;
- `"nuts"` (the paper's choice) and `"hmc"` (`hmc_steps` leapfrog steps): in site coordinates
  with a diagonal mass matrix there.

Warm-up is Stan's window adaptation (`blackjax.staged_adaptation`) of the step size and a
diagonal inverse mass matrix, per chain; in Fourier coordinates the metric is averaged over
momentum orbits at each window end and starts at the closed-form free propagator.
"""

from __future__ import annotations

import dataclasses
import math

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn

from rgdiff.errors import InvalidSamplerSettingsError
from rgdiff.samplers.fourier import AbstractCoordinates, FourierCoordinates, SiteCoordinates, orbit_averaged_metric
from rgdiff.theory.phi4 import Phi4

ALGORITHMS = ("fa-hmc", "fa-nuts", "nuts", "hmc")
FOURIER = ("fa-hmc", "fa-nuts")
NO_U_TURN = ("fa-nuts", "nuts")  # trajectory lengths chosen per transition by tree building
NAMES = {"fa-hmc": "Fourier-accelerated HMC", "fa-nuts": "Fourier-accelerated NUTS", "nuts": "NUTS", "hmc": "HMC"}
DEFAULT_TRAJECTORY = math.pi / 2
MAX_LEAPFROG = 1024  # cap of a random-length trajectory (a tiny step size early in the warm-up)


class RandomLengthHMC:
    """HMC whose number of leapfrog steps is drawn afresh at each transition, independently of
    the state: n = ceil(u T / step_size), u ~ Uniform(1/2, 3/2), capped at `MAX_LEAPFROG`.

    A Blackjax-shaped algorithm (`init`, `build_kernel`), so Stan's window adaptation tunes its
    step size; the kernel takes `trajectory_length` T as an extra parameter. Drawing the length
    independently of the state keeps each transition exact (a mixture of exact HMC kernels), and
    the jitter removes the resonances of a fixed length (a trajectory of half a period maps a
    Gaussian mode to minus itself).
    """

    init = staticmethod(blackjax.hmc.init)

    @staticmethod
    def build_kernel(integrator=blackjax.mcmc.integrators.velocity_verlet):
        hmc_kernel = blackjax.hmc.build_kernel(integrator)

        def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, trajectory_length):
            k_length, k_move = jax.random.split(rng_key)
            u = jax.random.uniform(k_length, (), minval=0.5, maxval=1.5, dtype=jnp.asarray(step_size).dtype)
            steps = jnp.clip(jnp.ceil(u * trajectory_length / step_size), 1, MAX_LEAPFROG).astype(jnp.int32)
            return hmc_kernel(k_move, state, logdensity_fn, step_size, inverse_mass_matrix, steps)

        return kernel


@dataclasses.dataclass(frozen=True)
class UVMove:
    """How a UV chain moves (hashable: a static argument of `jax.jit`).

    - `algorithm`: one of `ALGORITHMS`.
    - `hmc_steps`: leapfrog steps per trajectory of plain `"hmc"`.
    - `trajectory_length`: mean trajectory length of `"fa-hmc"` (in the whitened coordinates).
    - `target_acceptance`: of the step-size adaptation.
    """

    algorithm: str = "fa-hmc"
    hmc_steps: int = 10
    trajectory_length: float = DEFAULT_TRAJECTORY
    target_acceptance: float = 0.8

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise InvalidSamplerSettingsError(
                f"unknown sampler {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        steps = self.hmc_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InvalidSamplerSettingsError(f"hmc_steps must be an integer >= 1, got {steps!r}")
        length = self.trajectory_length
        if isinstance(length, bool) or not isinstance(length, (int, float)) or not math.isfinite(length) or length <= 0:
            raise InvalidSamplerSettingsError(f"trajectory_length must be a number > 0, got {length!r}")
        if not 0.0 < self.target_acceptance < 1.0:
            raise InvalidSamplerSettingsError(
                f"target_acceptance must lie in (0, 1), got {self.target_acceptance}"
            )

    @property
    def fourier(self) -> bool:
        return self.algorithm in FOURIER

    def coordinates(self, theory: Phi4) -> AbstractCoordinates:
        if self.fourier:
            return FourierCoordinates.for_theory(theory)
        return SiteCoordinates(theory.lattice)

    def _algorithm(self):
        if self.algorithm in NO_U_TURN:
            return blackjax.nuts
        if self.algorithm == "hmc":
            return blackjax.hmc
        return RandomLengthHMC

    def _extra(self) -> dict:
        if self.algorithm == "hmc":
            return {"num_integration_steps": self.hmc_steps}
        if self.algorithm == "fa-hmc":
            return {"trajectory_length": self.trajectory_length}
        return {}

    def init(self, theory: Phi4, positions: jax.Array):
        """Chain states (batch axis first) at `positions` given in this move's coordinates."""
        logdensity = self.coordinates(theory).logdensity_fn(theory)
        return jax.vmap(lambda x: blackjax.hmc.init(x, logdensity))(positions)

    def warmup(self, theory: Phi4, keys: jax.Array, positions: jax.Array, steps: int):
        """Stan's window adaptation, one per chain (vmap over the leading axis of `keys` and
        `positions`, given in this move's coordinates). Returns (states, params) with params
        {"step_size": (chains,), "inverse_mass_matrix": (chains, V)}."""
        coords = self.coordinates(theory)
        adaptation = blackjax.staged_adaptation(
            self._algorithm(),
            coords.logdensity_fn(theory),
            metric=orbit_averaged_metric(theory.lattice) if self.fourier else "welford_diag",
            target_acceptance_rate=self.target_acceptance,
            adaptation_info_fn=get_filter_adapt_info_fn(),  # keep no per-step warm-up history
            **self._extra(),
        )

        def one_chain(key, position):
            with jax.numpy_dtype_promotion("standard"):  # blackjax's adaptation mixes Python scalars and ints
                (state, params), _ = adaptation.run(key, position, num_steps=steps)
            return state, {"step_size": params["step_size"], "inverse_mass_matrix": params["inverse_mass_matrix"]}

        return jax.vmap(one_chain)(keys, positions)

    def default_params(self, theory: Phi4, chains: int, dtype, step_size: float | None = None) -> dict:
        """Parameters without warm-up: unit inverse mass (the closed form in Fourier coordinates)
        and `step_size` (default: 1/4 of a whitened trajectory, or 0.1 in site coordinates)."""
        if step_size is None:
            step_size = self.trajectory_length / 4 if self.fourier else 0.1
        return {
            "step_size": jnp.full((chains,), step_size, dtype),
            "inverse_mass_matrix": jnp.ones((chains, theory.lattice.sites), dtype),
        }

    def kernel(self, theory: Phi4, step_size, inverse_mass_matrix):
        """The Blackjax sampling algorithm of one chain (`.step(key, state)`)."""
        logdensity = self.coordinates(theory).logdensity_fn(theory)
        algorithm = self._algorithm()
        if algorithm is RandomLengthHMC:
            step = RandomLengthHMC.build_kernel()

            def step_fn(key, state):
                return step(key, state, logdensity, step_size, inverse_mass_matrix, self.trajectory_length)

            return blackjax.base.SamplingAlgorithm(lambda x: blackjax.hmc.init(x, logdensity), step_fn)
        return algorithm(logdensity, step_size, inverse_mass_matrix, **self._extra())

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def hmc_refresh(theory: Phi4, key: jax.Array, phi: jax.Array, *, leapfrog: int,
                trajectory_length: float = DEFAULT_TRAJECTORY):
    """One Fourier-accelerated HMC trajectory per configuration of `phi` (batch, *lattice) on
    exp(-S), with the closed-form free-propagator mass (no adaptation) and `leapfrog` steps of
    `trajectory_length / leapfrog`: Blackjax's kernel vmapped over the batch, one key each.

    The refresh of a batch of UV chains that a learned proposal moves between (the training
    loop after [5.22]); exact for exp(-S) whatever the step.

    **Returns:** `(phi_new, acceptance probability per configuration)`.
    """
    coords = FourierCoordinates.for_theory(theory)
    logdensity = coords.logdensity_fn(theory)
    kernel = blackjax.hmc.build_kernel()
    inverse_mass = jnp.ones((theory.lattice.sites,), phi.dtype)
    step_size = jnp.asarray(trajectory_length / leapfrog, phi.dtype)

    def one(k, x):
        state = blackjax.hmc.init(coords.from_field(x), logdensity)
        state, info = kernel(k, state, logdensity, step_size, inverse_mass, leapfrog)
        return coords.to_field(state.position), info.acceptance_rate

    return jax.vmap(one)(jax.random.split(key, phi.shape[0]), phi)
