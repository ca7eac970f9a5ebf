"""Linear RG schemes as forward SDEs with exact Gaussian kernels (conventions page, [5.32]-[5.42]).

- `AbstractLinearScheme`: per-mode rates (beta_t, gamma_t), kernel (a_t, v_t), push-forward,
  transition density, conditional score, stationary law, effective cutoff [7.3], [7.4].
- `Carosso`, `Polchinski`: closed forms; `make_scheme` builds them from command-line names.
- `WegnerMorris`: any rates, kernel by quadrature; from a cutoff profile or a Gaussian seed
  (describable ingredients: `PolchinskiProfile`, `LinearInW`, numbers).
- `Rescaled`, `FieldRenormalized`, `comparison_constant`: field rescalings [5.48]-[5.50], [5.55].
- `scheme_from_description`: the inverse of `describe()` for every scheme (model directories).
- `simulate_sde`: the position-space SDE with diffrax, including nonlinear seed actions.
"""

from rgdiff.rg.base import AbstractLinearScheme as AbstractLinearScheme
from rgdiff.rg.base import check_times as check_times
from rgdiff.rg.description import require_reloadable as require_reloadable
from rgdiff.rg.description import scheme_from_description as scheme_from_description
from rgdiff.rg.quadrature import transition_by_quadrature as transition_by_quadrature
from rgdiff.rg.rescaling import ExponentialScale as ExponentialScale
from rgdiff.rg.rescaling import FieldRenormalized as FieldRenormalized
from rgdiff.rg.rescaling import Rescaled as Rescaled
from rgdiff.rg.rescaling import comparison_constant as comparison_constant
from rgdiff.rg.rescaling import comparison_constant_from_fields as comparison_constant_from_fields
from rgdiff.rg.rescaling import flowed_spectrum as flowed_spectrum
from rgdiff.rg.rescaling import flowed_site_variance as flowed_site_variance
from rgdiff.rg.time import LogTime as LogTime
from rgdiff.rg.schemes import SCHEME_NAMES as SCHEME_NAMES
from rgdiff.rg.schemes import Carosso as Carosso
from rgdiff.rg.schemes import Polchinski as Polchinski
from rgdiff.rg.schemes import make_scheme as make_scheme
from rgdiff.rg.sde import SeedForce as SeedForce
from rgdiff.rg.sde import diffusion_function as diffusion_function
from rgdiff.rg.sde import drift_function as drift_function
from rgdiff.rg.sde import sde_terms as sde_terms
from rgdiff.rg.sde import simulate_sde as simulate_sde
from rgdiff.rg.wegner_morris import LinearInW as LinearInW
from rgdiff.rg.wegner_morris import PolchinskiProfile as PolchinskiProfile
from rgdiff.rg.wegner_morris import WegnerMorris as WegnerMorris
