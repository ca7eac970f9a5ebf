"""rgdiff: renormalizing diffusion models for lattice field theory."""

from .errors import RgdiffError as RgdiffError
from .lattice import Lattice as Lattice
from .theory import Phi4 as Phi4, make_phi4 as make_phi4

__version__ = "0.1.0"
