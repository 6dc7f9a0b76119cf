"""The model's pair list of one molecule, built on the device at every force call.

A dense masked search: all N² distances, the pairs within the cutoff compacted into a fixed
number of ``capacity`` slots (a static shape for XLA).  For the small molecules of the jax
engine (C9H4: 13 atoms, 80 pairs) the N² search is ~10³ flops against ~3·10⁷ for the model,
so it is rebuilt at every step and needs no skin: a skin would only add pair slots, and
every slot costs the model a full tensor product.  (jax-md's ``partition.neighbor_list``
was measured against it: see ``docs/performance.md``.)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["dense_pairs", "pair_count"]


def dense_pairs(positions, cutoff: float, capacity: int):
    """All ordered pairs (i, j), i ≠ j, with |r_j − r_i| < ``cutoff`` (Å) in ``capacity`` slots.

    Args:
      positions: (N, 3) Å (a jax array; traced inside the chunk).
      cutoff: Å.
      capacity: number of pair slots (static).

    Returns ``(dst, src, edge_mask, count)``: slot k holds pair (dst[k], src[k]) when
    ``edge_mask[k]``; ``count`` is the true number of pairs (``count > capacity`` means
    the list is truncated and must not be used).  Same order as
    :func:`efa_calc.graphs.neighbors.neighbor_pairs` (row-major).
    """
    n = positions.shape[0]
    d = positions[None, :, :] - positions[:, None, :]
    d2 = jnp.sum(d * d, axis=-1)
    mask = (d2 < cutoff * cutoff) & ~jnp.eye(n, dtype=bool)
    count = jnp.sum(mask)
    dst, src = jnp.nonzero(mask, size=capacity, fill_value=0)
    edge_mask = jnp.arange(capacity) < count
    return dst.astype(jnp.int32), src.astype(jnp.int32), edge_mask, count


def pair_count(positions, num_atoms: int, cutoff: float) -> int:
    """Largest number of ordered pairs within ``cutoff`` (Å) over R structures (host, numpy).

    Args:
      positions: (R, N, 3) or (N, 3) Å.
    """
    pos = np.asarray(positions, np.float64).reshape(-1, num_atoms, 3)
    d2 = np.sum((pos[:, :, None] - pos[:, None]) ** 2, axis=-1)
    return int(max(np.sum(d2 < cutoff ** 2, axis=(1, 2)) - num_atoms)) if len(pos) else 0
