"""What is measured on ensembles: estimators, their statistics, and the true RG flow.

- `observables.estimators`: magnetization, susceptibilities, G2(p), m_R, Z, lambda_R, g_R, Binder.
- `observables.stats`: Gamma-method errors (pyerrors), `Estimate`, tau_int.
- `observables.true_flow`: the exact RG flow of the observables, pushing an ensemble through the
  scheme's kernel [5.32].
- `observables.compare`: learned flow against true flow.
"""

from rgdiff.observables.estimators import OBSERVABLES as OBSERVABLES
from rgdiff.observables.estimators import Measurement as Measurement
from rgdiff.observables.estimators import measure as measure
from rgdiff.observables.stats import Estimate as Estimate
from rgdiff.observables.true_flow import FlowResult as FlowResult
from rgdiff.observables.true_flow import true_flow as true_flow
