"""Padded, static-shape training batches with a leading shard (device) axis.

Every batch holds ``num_shards × graphs_per_shard`` molecules.  Each shard is a slot-layout
:class:`~efa_calc.nn.batch.Batch` (G graphs × S atom slots, S = the largest molecule of
the dataset) with pair slots from a three-step ladder (70 %, 85 %, 100 % of the worst case),
so a whole training run compiles at most three train-step programs.  The shard axis is
what data-parallel training splits across devices.

Order is a pure function of ``(seed, epoch)``, which makes a resumed run identical to an
uninterrupted one.  Energies are the dataset energies minus the energy shift (eV); forces
in eV/Å; padding graphs and atoms carry zero targets and are masked in the loss.

Periodic datasets (every frame periodic) get pair lists over periodic images
(:func:`~efa_calc.graphs.neighbors.neighbor_list`, image shifts n in the
:class:`~efa_calc.nn.batch.Batch`'s ``cell_shifts``, cells in ``cells``) and a stress
target (G, 3, 3) in eV/Å³ (ASE's sign) with a per-graph weight ``stress_mask`` (1 for a real
graph with a stress label, 0 for padding graphs and unlabelled frames).  For a periodic-EFA
model (``model_config`` given) every batch also carries the G sets of its cells
(:mod:`efa_calc.graphs.reciprocal`), padded to one bucket for the whole dataset.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Sequence

import jax
import numpy as np

from efa_calc.graphs.padding import pad_graphs
from efa_calc.checkpoint import EnergyShift
from efa_calc.data.dataset import Dataset
from efa_calc.errors import InputError
from efa_calc.graphs.neighbors import neighbor_list
from efa_calc.graphs.reciprocal import periodic_efa, reciprocal_bucket, reciprocal_sets, with_reciprocal
from efa_calc.nn.batch import Batch

__all__ = ["TrainingBatch", "BatchSampler"]


class TrainingBatch(NamedTuple):
    """Model inputs and targets, every array with a leading shard axis (D, …)."""

    inputs: Batch
    energy: np.ndarray  # (D, G) eV, shift removed
    forces: np.ndarray  # (D, G*S, 3) eV/Å
    stress: np.ndarray | None = None  # (D, G, 3, 3) eV/Å³, periodic data only
    stress_mask: np.ndarray | None = None  # (D, G) 1.0 where the stress target counts


class BatchSampler:
    """Batches of a dataset for training and evaluation.

    Args:
      ds: the dataset.
      cutoff: local cutoff (Å) for the pair lists.
      shift: energy shift removed from the targets.
      graphs_per_shard: molecules per shard.
      num_shards: shards per batch (devices).
      seed: shuffling seed.
      reciprocal_grid: static reciprocal-space grid of every periodic batch, for a
        long-range block that needs one (``LongRangeConfig.reciprocal_grid`` of all the
        dataset's cells: one grid, one compile); ``None``: none.
      model_config: the :class:`~efa_calc.nn.config.ModelConfig` trained; needed only for a
        periodic-EFA model on periodic data (its G sets; a cell beyond its G budget or with
        partial pbc is refused here, before any compile).
    """

    def __init__(self, ds: Dataset, cutoff: float, shift: EnergyShift, graphs_per_shard: int,
                 num_shards: int = 1, seed: int = 0, reciprocal_grid: tuple[int, int, int] | None = None,
                 model_config=None):
        self.ds = ds
        self.reciprocal_grid = reciprocal_grid
        self.graphs = graphs_per_shard
        self.shards = num_shards
        self.seed = seed
        self.periodic = ds.is_periodic  # raises for mixed periodic/molecular frames
        if self.periodic:
            self.pairs = [neighbor_list(r, cutoff, c, p) for r, c, p in zip(ds.positions, ds.cells, ds.pbc)]
        else:
            self.pairs = [neighbor_list(r, cutoff)[:2] for r in ds.positions]
        self.targets = ds.energy - np.array([shift.atomic(z).sum() for z in ds.numbers])
        self.slots = max(len(z) for z in ds.numbers)
        sizes = np.sort([len(p[0]) for p in self.pairs])[::-1]
        worst = int(sizes[: self.graphs].sum())
        self.edge_ladder = sorted({64 * math.ceil(f * worst / 64) for f in (0.7, 0.85, 1.0)})
        self.reciprocal = None
        lr = periodic_efa(model_config)
        if self.periodic and lr is not None:
            partial = [i for i, p in enumerate(ds.pbc) if not np.all(p)]
            if partial:
                raise InputError(f"frames {partial[:10]} are not periodic in all three directions; periodic EFA "
                                 "needs pbc=True (put slabs in a 3D cell with vacuum)")
            self.reciprocal = reciprocal_sets(ds.cells, lr, "frame")
            self.reciprocal_slots = reciprocal_bucket(max(len(s) for s in self.reciprocal))

    def __len__(self) -> int:
        """Number of batches per epoch (the last partial batch is dropped in training)."""
        return len(self.ds) // (self.graphs * self.shards)

    def _pad(self, idx: Sequence[int], edges: int, graphs: int) -> Batch:
        idx = list(idx)
        periodic = {}
        if self.periodic:
            periodic = {"shifts": [self.pairs[i].shifts for i in idx], "cells": [self.ds.cells[i] for i in idx]}
        b = pad_graphs([self.ds.numbers[i] for i in idx], [self.ds.positions[i] for i in idx],
                       [self.pairs[i][:2] for i in idx], self.slots, edges, graphs, dtype=np.float32, **periodic)
        if self.reciprocal is not None:
            b = with_reciprocal(b, [self.reciprocal[i] for i in idx], self.reciprocal_slots)
        return b.replace(reciprocal_grid=self.reciprocal_grid) if self.periodic else b

    def _shard(self, idx: Sequence[int], edges: int) -> tuple:
        b = self._pad(idx, edges, self.graphs)
        energy = np.zeros(self.graphs, np.float32)
        energy[: len(idx)] = self.targets[list(idx)]
        forces = np.zeros((self.graphs * self.slots, 3), np.float32)
        for k, i in enumerate(idx):
            forces[k * self.slots : k * self.slots + len(self.ds.numbers[i])] = self.ds.forces[i]
        if not self.periodic:
            return b, energy, forces
        stress = np.zeros((self.graphs, 3, 3), np.float32)
        mask = np.zeros(self.graphs, np.float32)  # padding graphs and unlabelled frames: weight 0
        for k, i in enumerate(idx):
            if self.ds.stress is not None and self.ds.stress[i] is not None:
                stress[k], mask[k] = self.ds.stress[i], 1.0
        return b, energy, forces, stress, mask

    def make(self, idx: Sequence[int]) -> TrainingBatch:
        """One batch of the molecules ``idx`` (at most graphs × shards), split into shards."""
        idx = list(idx)
        per = [idx[s * self.graphs : (s + 1) * self.graphs] for s in range(self.shards)]
        need = max(sum(len(self.pairs[i][0]) for i in p) for p in per)
        edges = next(c for c in self.edge_ladder if c >= need)  # one shape for all shards
        shards = [self._shard(p, edges) for p in per]
        inputs = jax.tree_util.tree_map(lambda *a: np.stack(a), *[s[0] for s in shards])
        return TrainingBatch(inputs, *[np.stack([s[k] for s in shards]) for k in range(1, len(shards[0]))])

    def unsharded(self, idx: Sequence[int]) -> Batch:
        """The molecules ``idx`` as one unsharded :class:`Batch`: for statistics (the
        output-scale initialisation) that must not depend on the number of devices."""
        idx = list(idx)
        edges = 64 * max(1, math.ceil(sum(len(self.pairs[i][0]) for i in idx) / 64))
        return self._pad(idx, edges, len(idx))

    def _order(self, epoch: int, idx: np.ndarray) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(idx)

    def first_indices(self, epoch: int = 0) -> np.ndarray:
        """The molecules of the first full batch of ``epoch`` (all shards together)."""
        return self._order(epoch, np.arange(len(self.ds)))[: self.graphs * self.shards]

    def epoch(self, epoch: int, indices: Sequence[int] | None = None) -> Iterator[TrainingBatch]:
        """Shuffled full batches of one epoch (deterministic in seed and epoch)."""
        idx = np.arange(len(self.ds)) if indices is None else np.asarray(indices)
        order = self._order(epoch, idx)
        per = self.graphs * self.shards
        for start in range(0, len(order) - per + 1, per):
            yield self.make(order[start : start + per])

    def ordered(self) -> Iterator[tuple[np.ndarray, TrainingBatch]]:
        """All molecules in order (the last batch padded), with their indices."""
        per = self.graphs * self.shards
        for start in range(0, len(self.ds), per):
            idx = np.arange(start, min(start + per, len(self.ds)))
            yield idx, self.make(idx)
