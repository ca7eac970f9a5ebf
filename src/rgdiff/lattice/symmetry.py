"""Orbits of the hypercubic group acting on lattice displacements (and momenta).

A kernel K(n) that depends on a displacement n only through the sorted tuple of the absolute
values of its components (minimum-image components on the periodic lattice) is invariant under
every reflection n_i -> -n_i and every permutation of the axes, i.e. under the hypercubic group.
Translation equivariance comes from using K in a convolution; together the layer is equivariant
under the full symmetry group of the periodic hypercubic lattice.

Orbits are labelled 0, 1, ... in lexicographic order of the sorted tuples, so orbit 0 is always
the zero displacement (the kernel's centre).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def _label(components: list[np.ndarray], shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
    grids = np.meshgrid(*components, indexing="ij")
    keys = np.sort(np.stack(grids, axis=-1).reshape(-1, len(shape)), axis=-1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return int(unique.shape[0]), np.asarray(inverse).reshape(shape).astype(np.int32)


@functools.lru_cache(maxsize=64)
def lattice_orbits(dim: int, size: int) -> tuple[int, np.ndarray]:
    """Orbits of all displacements of the periodic lattice Z_N^d.

    **Arguments:**

    - `dim`: d.
    - `size`: N.

    **Returns:**

    `(num_orbits, index)` with `index` an int array of shape `(N,)*d`: the orbit of the
    displacement n, keyed by the sorted |minimum-image| components min(n_i, N - n_i).
    """
    n = np.arange(size)
    comp = np.minimum(n, size - n)
    index = _label([comp] * dim, (size,) * dim)
    index[1].setflags(write=False)
    return index


@functools.lru_cache(maxsize=64)
def stencil_orbits(dim: int, kernel_size: int) -> tuple[int, np.ndarray]:
    """Orbits of the offsets of an odd `kernel_size`^d stencil centred at 0.

    **Returns:**

    `(num_orbits, index)` with `index` of shape `(kernel_size,)*d`; entry `index[j]` is the orbit
    of the offset j - kernel_size // 2.
    """
    r = kernel_size // 2
    comp = np.abs(np.arange(-r, r + 1))
    index = _label([comp] * dim, (kernel_size,) * dim)
    index[1].setflags(write=False)
    return index


def orbit_average(values, dim: int, size: int):
    """Average `values` (shape (..., N, ..., N), the last `dim` axes a lattice grid) over each
    orbit of `lattice_orbits`.

    The hypercubic group acts on momenta p (mod N) exactly as on displacements, so the same
    labels are the momentum orbits: a translation- and hypercubic-invariant theory has one
    propagator value per orbit, and averaging a measured one over its orbit keeps the signal and
    divides the noise (`rgdiff.samplers.fourier`). NumPy in, NumPy out; anything else goes
    through `jax.numpy` (traceable).
    """
    count, index = lattice_orbits(dim, size)
    flat_index = index.reshape(-1)
    members = np.bincount(flat_index, minlength=count).astype(np.float64)
    batch = values.shape[: values.ndim - dim]
    rows = values.reshape(-1, flat_index.size)
    if isinstance(values, np.ndarray):
        sums = np.zeros((rows.shape[0], count), dtype=rows.dtype)
        np.add.at(sums, (slice(None), flat_index), rows)
    else:
        sums = jnp.zeros((rows.shape[0], count), dtype=rows.dtype).at[:, flat_index].add(rows)
    means = sums / members.astype(rows.dtype)
    return means[:, flat_index].reshape(*batch, *index.shape)
