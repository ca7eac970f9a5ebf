"""Linear RG schemes as forward SDEs with exact Gaussian kernels (conventions page, [5.32]-[5.42]).

- `AbstractLinearScheme`: per-mode rates (beta_t, gamma_t), kernel (a_t, v_t), push-forward,
  transition density, conditional score, stationary law, effective cutoff [7.3], [7.4].
- `Carosso`, `Polchinski`: closed forms; `make_scheme` builds them from command-line names.
- `WegnerMorris`: any rates, kernel by quadrature; from a cutoff profile or a Gaussian seed.
- `Rescaled`, `FieldRenormalized`, `comparison_constant`: field rescalings [5.48]-[5.50], [5.55].
- `simulate_sde`: the position-space SDE with diffrax, including nonlinear seed actions.
"""

from .base import AbstractLinearScheme as AbstractLinearScheme
from .base import check_times as check_times
from .quadrature import transition_by_quadrature as transition_by_quadrature
from .rescaling import (
    ExponentialScale as ExponentialScale,
)
from .rescaling import (
    FieldRenormalized as FieldRenormalized,
)
from .rescaling import (
    Rescaled as Rescaled,
)
from .rescaling import (
    comparison_constant as comparison_constant,
)
from .rescaling import (
    comparison_constant_from_fields as comparison_constant_from_fields,
)
from .rescaling import (
    flowed_spectrum as flowed_spectrum,
)
from .schemes import (
    SCHEME_NAMES as SCHEME_NAMES,
)
from .schemes import (
    Carosso as Carosso,
)
from .schemes import (
    Polchinski as Polchinski,
)
from .schemes import (
    make_scheme as make_scheme,
)
from .sde import (
    SeedForce as SeedForce,
)
from .sde import (
    diffusion_function as diffusion_function,
)
from .sde import (
    drift_function as drift_function,
)
from .sde import (
    sde_terms as sde_terms,
)
from .sde import (
    simulate_sde as simulate_sde,
)
from .wegner_morris import WegnerMorris as WegnerMorris
