"""Lattice field theories: phi^4 [4.6] in every unit convention, and Gaussian fields in Fourier space.

- `Phi4`, `make_phi4`: the action, its gradient and the free propagator 1/(|phat|^2 + m2).
- `theory.gaussian`: Gaussian fields diagonal in momentum space (sampling, log-density, score,
  the free-field spectrum), the closed forms every RG kernel and free-field test rests on.
"""

from rgdiff.theory.phi4 import BENCHMARK_LAM_A as BENCHMARK_LAM_A
from rgdiff.theory.phi4 import UNITS as UNITS
from rgdiff.theory.phi4 import Phi4 as Phi4
from rgdiff.theory.phi4 import benchmark_theory as benchmark_theory
from rgdiff.theory.phi4 import field_scale as field_scale
from rgdiff.theory.phi4 import make_phi4 as make_phi4
from rgdiff.theory.phi4 import paper_theory as paper_theory
