"""rgdiff: renormalizing diffusion models for lattice field theory."""

from rgdiff import _xla

_xla.apply()  # before JAX starts: XLA:CPU's YNN fusions crash NUTS on large lattices (see rgdiff._xla)


from rgdiff.errors import RgdiffError as RgdiffError
from rgdiff.lattice.geometry import Lattice as Lattice
from rgdiff.theory.phi4 import Phi4 as Phi4, make_phi4 as make_phi4
from rgdiff.io.export import to_arviz as to_arviz, to_xarray as to_xarray  # need the 'arviz' extra

__version__ = "0.1.0"
