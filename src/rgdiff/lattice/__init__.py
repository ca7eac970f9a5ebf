"""The periodic lattice Z_N^d of side L: geometry, Fourier conventions [4.26]-[4.27], symmetry orbits.

- `Lattice`: shape, spacing eps = L/N, momenta phat, the Laplacian, (r)fft with the paper's
  normalization, the half spectrum and its self-conjugate modes.
- `lattice_orbits`, `stencil_orbits`: classes of displacements (and momenta) under the hypercubic
  group; `orbit_average` averages a grid over them.
"""

from rgdiff.lattice.geometry import MAX_SITES as MAX_SITES
from rgdiff.lattice.geometry import Lattice as Lattice
from rgdiff.lattice.symmetry import lattice_orbits as lattice_orbits
from rgdiff.lattice.symmetry import orbit_average as orbit_average
from rgdiff.lattice.symmetry import stencil_orbits as stencil_orbits
