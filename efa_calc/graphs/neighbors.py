"""Host-side neighbour lists for the local (message-passing) cutoff.

Only the local part needs pairs: EFA is global and pair-free.  Pairs are returned in the
model's convention (spec §6.3): ``dst`` is the centre i, ``src`` the neighbour j, the
displacement is r_j − r_i, both directions of every pair are listed and there are no
self-pairs.

Search: a direct O(N²) distance matrix for small molecules (fastest below ~64 atoms) and
vesin's O(N) cell list above.  Measured on this 2-core machine (non-periodic, 5 Å, density
0.1 Å⁻³): 13 atoms 28 µs (numpy) vs 73 µs (vesin); 1 000 atoms 4.3 ms (vesin) vs 1.2 s
(``ase.neighborlist.neighbor_list``); 8 000 atoms 30 ms (vesin) vs 84 s (ase).

:class:`VerletList` adds a skin: pairs within ``cutoff + skin`` are kept and reused until
some atom has moved more than ``skin/2`` since the list was built.  Pairs between
``cutoff`` and ``cutoff + skin`` are harmless — the model's basis is exactly zero beyond
the cutoff — and the unchanged pair count keeps compiled shapes fixed during MD.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int

__all__ = ["neighbor_pairs", "VerletList"]

_SMALL = 64


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
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        self.num_builds = 0

    def pairs(self, positions: Float[np.ndarray, "N 3"]) -> tuple[np.ndarray, np.ndarray]:
        """``(dst, src)`` covering every pair closer than ``cutoff`` at ``positions``."""
        pos = np.asarray(positions, np.float64)
        if self._ref is None or self._ref.shape != pos.shape or self._moved_too_far(pos):
            self._pairs = neighbor_pairs(pos, self.cutoff + self.skin)
            self._ref = pos.copy()
            self.num_builds += 1
        return self._pairs

    def _moved_too_far(self, pos: np.ndarray) -> bool:
        if self.skin <= 0:
            return True
        disp2 = np.max(np.sum((pos - self._ref) ** 2, axis=1)) if len(pos) else 0.0
        return disp2 > (0.5 * self.skin) ** 2

    def reset(self) -> None:
        self._ref = None
        self._pairs = None
