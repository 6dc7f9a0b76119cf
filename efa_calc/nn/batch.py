"""The model's one input: a padded, static-shape batch of graphs (jraph-style flat layout).

N atom slots of G graphs, E pair slots::

    atomic_numbers  (N,)    int32, 0 for padding atoms
    positions       (N, 3)  Å
    dst_idx, src_idx (E,)   int32; messages flow src → dst, both directions of every pair listed
    edge_mask       (E,)    bool, False for padding pairs
    batch_segments  (N,)    int32 graph index of every atom
    node_mask       (N,)    bool, False for padding atoms
    graph_mask      (G,)    bool, False for padding graphs
    cell_shifts     (E, 3)  lattice-vector counts n of every pair (periodic cells), or None
    cells           (G, 3, 3) Å, rows are the lattice vectors a, b, c, or None
    pair_offsets    (E, 3)  Å added to every pair displacement, or None: kept at zero and
                            differentiated for per-pair virials (:func:`energy_forces_stresses`)
    reciprocal_grid  static (n1, n2, n3) or None: the reciprocal-space grid shape of a
                    long-range block that needs one (``LongRangeConfig.reciprocal_grid``)
    reciprocal_indices (G, K, 3) int32 Miller indices n of each graph's reciprocal vectors
                    G = 2π n·cell⁻ᵀ (periodic EFA, :mod:`efa_calc.graphs.reciprocal`), or None
    reciprocal_mask (G, K)  bool, False for padding entries of ``reciprocal_indices``, or None

The displacement of pair e is r_e = R[src] − R[dst] + n_e · cell[graph of dst] (the image
term only where ``cells`` is given); a molecule has neither field.  ``nodes_per_graph`` is
static (part of the pytree structure, so of every jit cache key): with it, graph g owns
slots g·S … g·S+S−1 (the *slot layout*, which lets EFA reshape instead of segment-sum);
``None`` allows any ``batch_segments``.
"""

from __future__ import annotations

from typing import Optional

import flax.struct
from jaxtyping import Array, Bool, Float, Integer

__all__ = ["Batch"]


@flax.struct.dataclass
class Batch:
    """A padded batch of graphs; see the module docstring for shapes and units."""

    atomic_numbers: Integer[Array, "N"]
    positions: Float[Array, "N 3"]
    dst_idx: Integer[Array, "E"]
    src_idx: Integer[Array, "E"]
    edge_mask: Bool[Array, "E"]
    batch_segments: Integer[Array, "N"]
    node_mask: Bool[Array, "N"]
    graph_mask: Bool[Array, "G"]
    cell_shifts: Optional[Float[Array, "E 3"]] = None
    cells: Optional[Float[Array, "G 3 3"]] = None
    pair_offsets: Optional[Float[Array, "E 3"]] = None
    reciprocal_indices: Optional[Integer[Array, "G K 3"]] = None
    reciprocal_mask: Optional[Bool[Array, "G K"]] = None
    nodes_per_graph: Optional[int] = flax.struct.field(pytree_node=False, default=None)
    reciprocal_grid: Optional[tuple[int, int, int]] = flax.struct.field(pytree_node=False, default=None)

    @property
    def num_graphs(self) -> int:
        """G, the number of graph slots (static)."""
        return int(self.graph_mask.shape[0])

    @property
    def is_periodic(self) -> bool:
        return self.cells is not None
