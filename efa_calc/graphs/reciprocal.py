"""Reciprocal-vector sets of periodic cells for periodic EFA, on the host (no XLA).

A periodic-EFA block (:class:`~efa_calc.nn.long_range.efa.EFAConfig` with ``periodic_smoothing``
λ) sums over the reciprocal vectors G = 2π n·cell⁻ᵀ with |G| < q_max (1/Å,
:attr:`EFAConfig.reciprocal_cutoff`).  Their integer Miller indices n (one of every ±n pair,
:func:`~efa_calc.nn.long_range.reciprocal.miller_indices`) are found here from each cell and
padded into the batch fields ``reciprocal_indices`` (G, K, 3) and ``reciprocal_mask`` (G, K),
K a bucket from :func:`reciprocal_bucket`, so the compiled call keeps its shape while a cell
changes a little.  G itself is computed from ``cells`` inside the call (stress by autodiff),
and weights vanish smoothly at q_max, so which vectors near q_max are listed changes nothing.

A structure needing more than ``max_reciprocal_vectors`` is refused (:class:`InputError`)
before anything compiles; nothing is ever truncated.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np

from efa_calc.errors import InputError
from efa_calc.graphs.padding import edge_bucket
from efa_calc.nn.batch import Batch
from efa_calc.nn.long_range.efa import EFAConfig
from efa_calc.nn.long_range.reciprocal import miller_indices

__all__ = ["estimated_count", "periodic_efa", "pad_reciprocal", "reciprocal_bucket", "reciprocal_sets",
           "with_reciprocal", "ReciprocalSlots"]

log = logging.getLogger("efa_calc")


def periodic_efa(config) -> Optional[EFAConfig]:
    """The model's periodic-EFA block config (a :class:`~efa_calc.nn.config.ModelConfig`), or None."""
    lr = getattr(config, "long_range", None)
    return lr if isinstance(lr, EFAConfig) and lr.periodic else None


def reciprocal_bucket(k: int, headroom: float = 1.0) -> int:
    """Slots for ``k`` reciprocal vectors: the pair-slot ladder (multiples of 16, 64, then ×1.25)."""
    return edge_bucket(k, headroom)


def estimated_count(cell: np.ndarray, q_max: float) -> float:
    """N_G ≈ V q_max³/(12π²): the half-space count of reciprocal vectors inside |G| < q_max."""
    return abs(float(np.linalg.det(np.asarray(cell, np.float64)))) * q_max**3 / (12.0 * math.pi**2)


def reciprocal_sets(cells: Sequence[np.ndarray], lr: EFAConfig, where: str = "structure") -> list[np.ndarray]:
    """The Miller indices (K_g, 3) of every cell (rows a, b, c in Å) within the block's q_max.

    Raises:
      InputError: a cell whose G set exceeds ``lr.max_reciprocal_vectors`` (checked on an
        estimate before enumerating, then on the count), naming what to change.
    """
    q_max = lr.reciprocal_cutoff[1]
    out = []
    for c, cell in enumerate(cells):
        est = estimated_count(cell, q_max)
        sets = miller_indices(cell, q_max) if est <= 2 * lr.max_reciprocal_vectors else None
        count = len(sets) if sets is not None else int(est)
        if count > lr.max_reciprocal_vectors:
            label = where if len(cells) == 1 else f"{where} {c}"
            volume = abs(float(np.linalg.det(np.asarray(cell, np.float64))))
            raise InputError(
                f"{label}: its cell (volume {volume:.1f} Å³) needs {count} reciprocal vectors for periodic EFA "
                f"(|G| < q_max = {q_max:.3f} 1/Å, λ = {lr.periodic_smoothing} Å), more than the model's "
                f"max_reciprocal_vectors = {lr.max_reciprocal_vectors}; N_G ≈ V·q_max³/(12π²): raise "
                "max_reciprocal_vectors in the model's [model.long_range] config (memory and time grow with it), "
                "or use a smaller cell")
        out.append(sets)
    return out


def pad_reciprocal(sets: Sequence[np.ndarray], slots: int, num_graphs: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices (G, K, 3) int32, mask (G, K) bool) with K = ``slots``; padding graphs and entries
    get n = 0 with mask False.  ValueError if a set does not fit (never truncates)."""
    idx = np.zeros((num_graphs, slots, 3), np.int32)
    mask = np.zeros((num_graphs, slots), bool)
    for g, s in enumerate(sets):
        if len(s) > slots:
            raise ValueError(f"graph {g} has {len(s)} reciprocal vectors, more than {slots} slots")
        idx[g, : len(s)] = s
        mask[g, : len(s)] = True
    return idx, mask


def with_reciprocal(batch: Batch, sets: Sequence[np.ndarray], slots: int) -> Batch:
    """``batch`` (periodic, slot layout) with the padded G sets of its graphs attached."""
    idx, mask = pad_reciprocal(sets, slots, batch.num_graphs)
    return batch.replace(reciprocal_indices=idx, reciprocal_mask=mask)


class ReciprocalSlots:
    """A reciprocal-slot count that only grows: the first call is tight, a larger G set later
    moves one bucket up with 25 % headroom (one new compile, logged), like the pair slots."""

    def __init__(self, owner: str = "Potential"):
        self.slots = 0
        self.owner = owner

    def fit(self, sets: Sequence[np.ndarray]) -> int:
        need = max((len(s) for s in sets), default=1)
        if need > self.slots:
            new = reciprocal_bucket(need, headroom=1.25 if self.slots else 1.0)
            if self.slots:
                log.info("%s: %d reciprocal vectors exceed the reciprocal bucket %d; moving to %d (one new compile)",
                         self.owner, need, self.slots, new)
            self.slots = new
        return self.slots
