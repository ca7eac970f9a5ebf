"""Normalizing flows in RG time (paper [5.8], section 7): integration of a `ContinuousFlow`.

(Not to be confused with `rgdiff.flow`, the true RG flow of observables.)

- `decode`: p_T -> p_t, the generative direction, with log p_t^theta of the result.
- `encode`: phi_t -> phi_T, with log p_t^theta(phi_t) (the likelihood of given fields).
- `sample`: exact prior draws decoded to time t.
Fixed-step RK4 in the flow's log-time (`solver="rk4"`) or adaptive Tsit5 (`solver="adaptive"`).
"""

from .ode import SOLVERS as SOLVERS
from .ode import decode as decode
from .ode import decode_to_times as decode_to_times
from .ode import encode as encode
from .ode import sample as sample
from .ode import trajectories as trajectories
