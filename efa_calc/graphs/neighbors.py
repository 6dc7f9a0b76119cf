"""Host-side neighbour lists for the local (message-passing) cutoff.

Only the local part needs pairs: EFA is global and pair-free.  Pairs are returned in the
model's convention (spec §6.3): ``dst`` is the centre i, ``src`` the neighbour j, the
displacement is r_j − r_i (+ n·cell for the periodic image n of j), both directions of
every pair are listed and there are no self-pairs (an atom's periodic images are pairs).
Periodic and mixed boundaries (:func:`periodic_pairs`) use vesin's cell list for any
triclinic cell, however small.

Search: a direct O(N²) distance matrix for small molecules (faster below ~64 atoms) and
vesin's O(N) cell list above (timings in ``docs/performance.md``).

:class:`VerletList` adds a skin: pairs within ``cutoff + skin`` are kept and reused until
some atom has moved more than ``skin/2`` since the list was built.  Pairs between
``cutoff`` and ``cutoff + skin`` are harmless — the model's basis is exactly zero beyond
the cutoff — and the unchanged pair count keeps compiled shapes fixed during MD.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
from jaxtyping import Float, Int

from efa_calc.errors import InputError

__all__ = ["MAX_PAIRS_PER_ATOM", "Pairs", "neighbor_list", "neighbor_pairs", "periodic_pairs", "VerletList"]

_SMALL = 64

#: Refuse a structure whose pair list would exceed this many pairs per atom (a cell so small
#: or dense that a neighbourhood explodes): a clear error instead of a list of millions.
MAX_PAIRS_PER_ATOM = 2000


class Pairs(NamedTuple):
    """A pair list in the model's convention: centre ``dst`` (i), neighbour ``src`` (j),
    displacement r_j − r_i + n·cell with the integer image ``shifts`` n (E, 3) (``None`` for
    a molecule), both directions of every pair listed, no self-pair of an atom with itself
    (its periodic images are pairs)."""

    dst: Int[np.ndarray, "E"]
    src: Int[np.ndarray, "E"]
    shifts: Optional[Int[np.ndarray, "E 3"]] = None


def neighbor_pairs(positions: Float[np.ndarray, "N 3"], cutoff: float) -> tuple[Int[np.ndarray, "E"], Int[np.ndarray, "E"]]:
    """All ordered pairs (i, j), i ≠ j, with |r_j − r_i| < ``cutoff`` (Å), non-periodic.

    Returns:
      ``(dst, src)`` int32 arrays (centre i, neighbour j), sorted by ``dst``.
    """
    pos = np.asarray(positions, np.float64)
    n = len(pos)
    if n < 2:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    if n <= _SMALL:
        d2 = np.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=-1)
        np.fill_diagonal(d2, np.inf)
        i, j = np.nonzero(d2 < cutoff * cutoff)
        return i.astype(np.int32), j.astype(np.int32)
    from vesin import NeighborList

    i, j = NeighborList(cutoff=float(cutoff), full_list=True).compute(pos, np.zeros((3, 3)), False, "ij")
    order = np.lexsort((j, i))
    return i[order].astype(np.int32), j[order].astype(np.int32)


def periodic_pairs(positions: Float[np.ndarray, "N 3"], cell: Float[np.ndarray, "3 3"], pbc, cutoff: float) -> Pairs:
    """Every pair (i, j, n) with |r_j − r_i + n·cell| < ``cutoff`` (Å) under ``pbc`` (any of
    ASE's combinations): vesin's cell list, every periodic image within the cutoff (cells
    smaller than twice the cutoff give several images of one atom, and an atom its own
    images), atoms outside the cell included.  Sorted by (i, j, n).

    Raises:
      InputError: when the expected number of pairs exceeds :data:`MAX_PAIRS_PER_ATOM` per atom.
    """
    from vesin import NeighborList

    pos = np.asarray(positions, np.float64)
    cell = np.asarray(cell, np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
    n = len(pos)
    volume = abs(float(np.linalg.det(cell)))
    # a periodic direction repeats the atoms; an open one holds them once: count the images
    # a sphere of radius cutoff reaches, per atom
    expected = n * 4.0 / 3.0 * np.pi * cutoff**3 / volume if pbc.all() else None
    if expected is not None and expected > MAX_PAIRS_PER_ATOM:
        raise InputError(
            f"a cutoff sphere of {cutoff:.2f} Å holds ~{expected:.0f} atoms in this cell ({n} atoms in "
            f"{volume:.1f} Å³): more than {MAX_PAIRS_PER_ATOM} neighbours per atom; the cell is far too small or dense"
        )
    i, j, shifts = NeighborList(cutoff=float(cutoff), full_list=True).compute(pos, cell, pbc, "ijS")
    if len(i) > MAX_PAIRS_PER_ATOM * max(n, 1):
        raise InputError(f"{len(i)} pairs within {cutoff:.2f} Å for {n} atoms: more than {MAX_PAIRS_PER_ATOM} "
                         "neighbours per atom; the structure is far too dense")
    shifts = np.asarray(shifts, np.int64).reshape(-1, 3)
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
    return Pairs(i[order].astype(np.int32), j[order].astype(np.int32), shifts[order].astype(np.int32))


def neighbor_list(positions, cutoff: float, cell=None, pbc=None) -> Pairs:
    """:func:`periodic_pairs` when any direction is periodic, else :func:`neighbor_pairs`."""
    if pbc is not None and np.any(pbc):
        return periodic_pairs(positions, cell, pbc, cutoff)
    return Pairs(*neighbor_pairs(positions, cutoff))


class VerletList:
    """Neighbour list with a skin, rebuilt only when an atom moved more than ``skin/2``.

    Args:
      cutoff: local cutoff in Å.
      skin: extra distance in Å (0 rebuilds on every call).
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self._ref: np.ndarray | None = None
        self._box: tuple | None = None
        self._pairs: Pairs | None = None
        self.num_builds = 0

    def pairs(self, positions: Float[np.ndarray, "N 3"], cell=None, pbc=None) -> Pairs:
        """:class:`Pairs` covering every pair closer than ``cutoff`` at ``positions`` (and, for
        periodic structures, ``cell`` in Å and ``pbc``; a changed cell rebuilds the list)."""
        pos = np.asarray(positions, np.float64)
        periodic = pbc is not None and bool(np.any(pbc))
        box = (np.asarray(cell, np.float64).tobytes(), tuple(np.asarray(pbc, bool).ravel())) if periodic else None
        if (self._ref is None or self._ref.shape != pos.shape or box != self._box or self._moved_too_far(pos)):
            self._pairs = neighbor_list(pos, self.cutoff + self.skin, cell, pbc if periodic else None)
            self._ref = pos.copy()
            self._box = box
            self.num_builds += 1
        return self._pairs

    def _moved_too_far(self, pos: np.ndarray) -> bool:
        if self.skin <= 0:
            return True
        disp2 = np.max(np.sum((pos - self._ref) ** 2, axis=1)) if len(pos) else 0.0
        return disp2 > (0.5 * self.skin) ** 2

    def reset(self) -> None:
        self._ref = None
        self._box = None
        self._pairs = None
