"""From structures to model graphs, on the host: input checks (``validation``), neighbour
lists (``neighbors``) and padding into static-shape :class:`~efa_calc.nn.batch.Batch` es with
bucketed sizes (``padding``).  Nothing here runs XLA."""

from efa_calc.graphs.neighbors import VerletList, neighbor_pairs
from efa_calc.graphs.padding import edge_bucket, node_bucket, pad_graphs
from efa_calc.graphs.validation import check_structure, max_pair_distance

__all__ = ["VerletList", "check_structure", "edge_bucket", "max_pair_distance", "neighbor_pairs", "node_bucket",
           "pad_graphs"]
