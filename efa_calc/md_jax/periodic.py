"""Periodic cells inside the MD chunk: the minimum-image pair list with integer cell shifts.

Cell convention: ``cell`` (3, 3) Å has the lattice vectors a, b, c as **rows** (ASE's
``atoms.cell``; jax-md's ``box`` is its transpose, lattice vectors as columns, so that
r = box · s for fractional s).  Positions are real (Cartesian, Å) and need not lie in the
cell.  With fractional coordinates s = r · cell⁻¹ the pair (i, j) is

    n_ij = −round(s_j − s_i),   r_ij = r_j − r_i + n_ij · cell,

kept when |r_ij| < cutoff: exactly the calculator's pair, image shift n and displacement
(:func:`efa_calc.graphs.neighbors.periodic_pairs`, r_e = R[src] − R[dst] + n_e · cell),
in the same row-major (i, j) order, **provided every cell height exceeds twice the
cutoff** (then every vector shorter than the cutoff has fractional components in
(−½, ½), so it is the rounded image, and no atom sees two images of another or its own).
Smaller cells need several images per pair: the jax engine refuses them
(:func:`check_cell_heights`) and the ASE engine runs them.  No skin: the list is rebuilt at
every force call (a dense N² search, ~10 flops per pair candidate against ~10⁴–10⁵ per
kept pair in the model).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from efa_calc.errors import InputError

__all__ = ["periodic_dense_pairs", "periodic_pair_count", "minimum_image_distances", "cell_heights", "check_cell_heights"]


def cell_heights(cell, xp=np):
    """(..., 3) heights (Å) of (..., 3, 3) cells (rows a, b, c): h_k = V / |a_{k+1} × a_{k+2}|."""
    cell = xp.asarray(cell)
    volume = xp.abs(xp.linalg.det(cell))
    areas = xp.stack([xp.linalg.norm(xp.cross(cell[..., (k + 1) % 3, :], cell[..., (k + 2) % 3, :]), axis=-1)
                      for k in range(3)], axis=-1)
    return volume[..., None] / areas


def check_cell_heights(cell, cutoff: float, where: str = "the structure") -> None:
    """Raise :class:`~efa_calc.errors.InputError` unless every height of ``cell`` (3, 3) Å
    (or (R, 3, 3)) exceeds 2 × ``cutoff`` (Å), the limit of the minimum-image pair list."""
    h = float(np.min(cell_heights(np.asarray(cell, np.float64))))
    if not h > 2.0 * cutoff:
        raise InputError(f"{where}: the cell's smallest height {h:.3f} Å is not above twice the model's cutoff "
                         f"(2 × {cutoff:g} Å = {2 * cutoff:g} Å); the jax engine's minimum-image pair list would "
                         "miss images: use --engine ase (which lists every image), or a larger supercell")


def _image_displacements(positions, cell):
    """(N, N, 3) minimum-image displacements r_j − r_i + n_ij·cell (Å) and (N, N, 3) shifts n_ij."""
    s = positions @ jnp.linalg.inv(cell)
    ds = s[None, :, :] - s[:, None, :]
    n = -jnp.round(ds)
    return (ds + n) @ cell, n


def minimum_image_distances(positions, cell):
    """(N, N) minimum-image distances (Å) of positions (N, 3) Å in ``cell`` (3, 3) Å; 1 on the
    diagonal (no self-distance); ``cell`` ``None``: free-space distances."""
    n = positions.shape[0]
    if cell is None:
        d = positions[None, :, :] - positions[:, None, :]
    else:
        d, _ = _image_displacements(positions, cell)
    return jnp.sqrt(jnp.sum(d * d, axis=-1) + jnp.eye(n, dtype=positions.dtype))


def periodic_dense_pairs(positions, cell, cutoff: float, capacity: int):
    """All ordered minimum-image pairs (i, j), i ≠ j, with |r_ij| < ``cutoff`` (Å) in
    ``capacity`` slots (see the module docstring; traced inside the chunk).

    Args:
      positions: (N, 3) Å.
      cell: (3, 3) Å, rows a, b, c.
      cutoff: Å.
      capacity: pair slots (static).

    Returns ``(dst, src, shifts, edge_mask, count)``: slot k holds pair (dst[k], src[k])
    with image shift ``shifts[k]`` (3,) (float, integer-valued) when ``edge_mask[k]``;
    ``count > capacity`` means the list is truncated and must not be used.
    """
    n = positions.shape[0]
    d, shift = _image_displacements(positions, cell)
    mask = (jnp.sum(d * d, axis=-1) < cutoff * cutoff) & ~jnp.eye(n, dtype=bool)
    count = jnp.sum(mask)
    dst, src = jnp.nonzero(mask, size=capacity, fill_value=0)
    edge_mask = jnp.arange(capacity) < count
    return dst.astype(jnp.int32), src.astype(jnp.int32), shift[dst, src], edge_mask, count


def periodic_pair_count(positions, cells, cutoff: float) -> int:
    """Largest number of ordered pairs within ``cutoff`` (Å) over R structures (R, N, 3) Å in
    their cells (R, 3, 3) Å (host: vesin, every image)."""
    from efa_calc.graphs.neighbors import periodic_pairs

    return max((len(periodic_pairs(p, c, True, cutoff).dst) for p, c in zip(positions, cells)), default=0)
