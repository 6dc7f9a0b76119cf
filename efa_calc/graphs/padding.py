"""Padding molecules into static-shape batches (the jit-friendly layout of the model).

Every graph of a batch owns ``nodes_per_graph`` consecutive node slots (the *slot
layout*): graph g holds nodes g·S … g·S+S−1, real atoms first, padding after.  Atom and
pair counts are rounded up to *buckets* from fixed ladders, so that

* an MD run of one molecule compiles once (its pair count moves only inside a bucket),
* calculators of the same model in one process land on the same shapes and share
  compiled code (NEB images, committees, phonopy displacements),
* a changed atom count or a grown pair list moves to a larger bucket — a new compile,
  never a truncated pair list.

Units: positions in Å.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from efa_calc.nn.batch import Batch

__all__ = ["node_bucket", "edge_bucket", "pad_graphs"]


def node_bucket(n: int) -> int:
    """Atom slots for ``n`` atoms: multiples of 8 up to 64, then a ×1.25 ladder (multiples of 32)."""
    if n <= 64:
        return max(8, 8 * math.ceil(n / 8))
    b = 64
    while b < n:
        b = 32 * math.ceil(b * 1.25 / 32)
    return b


def edge_bucket(e: int, headroom: float = 1.0) -> int:
    """Pair slots for ``e`` pairs (times ``headroom``): multiples of 16 up to 256, of 64 up
    to 1024, then a ×1.25 ladder (multiples of 256).  Padded pairs cost as much as real
    ones (the tensor products run on all slots), so small systems get a fine ladder."""
    e = int(math.ceil(max(e, 1) * headroom))
    if e <= 256:
        return 16 * math.ceil(e / 16)
    if e <= 1024:
        return 64 * math.ceil(e / 64)
    b = 1024
    while b < e:
        b = 256 * math.ceil(b * 1.25 / 256)
    return b


def pad_graphs(
    numbers: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    nodes_per_graph: int,
    num_edges: int,
    num_graphs: int | None = None,
    dtype=np.float64,
    shifts: Sequence[np.ndarray] | None = None,
    cells: Sequence[np.ndarray] | None = None,
) -> Batch:
    """Pack molecules into one padded :class:`~efa_calc.nn.batch.Batch` (numpy arrays, slot layout).

    Args:
      numbers, positions, pairs: per molecule, atomic numbers (n,), positions (n, 3) in Å
        and ``(dst, src)`` pair indices local to the molecule.
      nodes_per_graph: slots per graph S (≥ the largest molecule).
      num_edges: total pair slots E (≥ the total number of pairs).
      num_graphs: graph slots G (≥ number of molecules; extra graphs are padding).
      dtype: floating dtype of the positions.
      shifts, cells: periodic structures: per structure the integer image shifts (e, 3) of
        its pairs and its cell (3, 3) in Å (rows a, b, c).  Given for all structures or none
        (a molecule in a mixed batch has zero shifts and any non-singular cell); padding
        graphs get the unit cell.

    Raises:
      ValueError: if a molecule or the pair list does not fit (never truncates).
    """
    g = len(numbers) if num_graphs is None else num_graphs
    if len(numbers) > g:
        raise ValueError(f"{len(numbers)} molecules do not fit into {g} graph slots")
    n = g * nodes_per_graph
    z = np.zeros(n, np.int32)
    r = np.zeros((n, 3), dtype)
    node_mask = np.zeros(n, bool)
    dst = np.zeros(num_edges, np.int32)
    src = np.zeros(num_edges, np.int32)
    edge_mask = np.zeros(num_edges, bool)
    e0 = 0
    for k, (zk, rk, (dk, sk)) in enumerate(zip(numbers, positions, pairs)):
        nk = len(zk)
        if nk > nodes_per_graph:
            raise ValueError(f"molecule {k} has {nk} atoms, more than {nodes_per_graph} slots")
        off = k * nodes_per_graph
        z[off : off + nk] = zk
        r[off : off + nk] = rk
        node_mask[off : off + nk] = True
        ek = len(dk)
        if e0 + ek > num_edges:
            raise ValueError(f"{e0 + ek}+ pairs do not fit into {num_edges} pair slots")
        dst[e0 : e0 + ek] = np.asarray(dk) + off
        src[e0 : e0 + ek] = np.asarray(sk) + off
        edge_mask[e0 : e0 + ek] = True
        e0 += ek
    segments = np.repeat(np.arange(g, dtype=np.int32), nodes_per_graph)
    graph_mask = np.arange(g) < len(numbers)
    cell_shifts = cell_array = None
    if cells is not None:
        cell_shifts = np.zeros((num_edges, 3), dtype)
        if len(pairs):
            cell_shifts[:e0] = np.concatenate([np.asarray(s_, dtype).reshape(-1, 3) for s_ in shifts])
        cell_array = np.broadcast_to(np.eye(3, dtype=dtype), (g, 3, 3)).copy()
        cell_array[: len(cells)] = np.asarray(cells, dtype)
    return Batch(z, r, dst, src, edge_mask, segments, node_mask, graph_mask, cell_shifts, cell_array,
                 nodes_per_graph=nodes_per_graph)
