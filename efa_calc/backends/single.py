"""One device, many graphs per call: the :class:`Potential` backend.

Compiled code is shared process-wide: :func:`compiled_energy_and_forces` keeps one
``jax.jit`` per model configuration (evaluation variants included), and jax caches
executables per (input shapes = buckets, ``nodes_per_graph``, dtype, device).  Parameters
are *arguments*, not constants, so every calculator of the same architecture — other
instances, committee members, NEB images, phonopy displacements — reuses the same
executables.  Precision is the :class:`~efa_calc.nn.precision.Precision` policy.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import numpy as np

from efa_calc.backends.base import Backend, Graph, Prediction, Slots
from efa_calc.errors import InputError
from efa_calc.graphs.padding import edge_bucket, node_bucket, pad_graphs
from efa_calc.graphs.reciprocal import ReciprocalSlots, periodic_efa, reciprocal_sets, with_reciprocal
from efa_calc.nn.batch import Batch
from efa_calc.nn.config import ModelConfig
from efa_calc.nn.energy_model import energy_and_forces, energy_forces_stress, energy_forces_stresses
from efa_calc.nn.long_range import with_reciprocal_grid
from efa_calc.nn.precision import Precision
from efa_calc.nn.tensor import resolve_message_passing

__all__ = ["Potential", "compiled_energy_and_forces", "compiled_energy_forces_stress", "resolve_device", "tight_slots"]


@functools.lru_cache(maxsize=None)
def compiled_energy_and_forces(config: ModelConfig):
    """The process-wide jitted ``(params, batch) -> (E_g, F, E_i)`` of the model (no shift)."""

    def fn(params, batch):
        return energy_and_forces(params, config, batch)

    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def compiled_energy_forces_stress(config: ModelConfig):
    """The process-wide jitted ``(params, periodic batch) -> (E_g, F, E_i, σ_g)`` (no shift)."""

    def fn(params, batch):
        return energy_forces_stress(params, config, batch)

    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def compiled_energy_forces_stresses(config: ModelConfig):
    """The process-wide jitted ``(params, periodic batch) -> (E_g, F, E_i, σ_g, σ_i)`` (no shift)."""

    def fn(params, batch):
        return energy_forces_stresses(params, config, batch)

    return jax.jit(fn)


def resolve_device(device) -> Optional[jax.Device]:
    """``None`` (jax default), a ``jax.Device``, or a string such as ``"cpu"``, ``"gpu"``, ``"cuda:1"``."""
    if device is None or isinstance(device, jax.Device):
        return device
    name, _, index = str(device).partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(name.lower(), name.lower())
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise ValueError(f"no jax device of kind {name!r} available ({exc}); install the 'gpu' extra for CUDA") from exc
    i = int(index or 0)
    if i >= len(devices):
        raise ValueError(f"device {device!r} requested, but only {len(devices)} {platform} device(s) exist")
    return devices[i]


def tight_slots(graphs: Sequence[Graph], num_graphs: Optional[int] = None) -> Slots:
    """The smallest bucketed :class:`Slots` that hold ``graphs``."""
    return Slots(node_bucket(max(len(g.numbers) for g in graphs)), edge_bucket(sum(len(g.dst) for g in graphs)),
                 len(graphs) if num_graphs is None else num_graphs)


class Potential(Backend):
    """Evaluate a :class:`~efa_calc.checkpoint.Checkpoint` on padded batches on one device.

    Args:
      checkpoint: the model.
      dtype: ``"float32"`` or ``"float64"`` — the precision of every operation.
      device: where to run (see :func:`resolve_device`).
      lebedev_num: evaluate the EFA blocks on a different Lebedev grid.
      efa_exact: evaluate the EFA blocks with their exact j₀ kernel (O(N²)).
      edge_chunk: pairs per chunk of the message sums (``None``: the default; 0: one pass).
      message_passing: ``"native"``, ``"cuequivariance"`` or ``None`` (the device's default,
        :func:`efa_calc.nn.tensor.resolve_message_passing`); same numbers either way.
    """

    def __init__(self, checkpoint, dtype: str = "float32", device=None, lebedev_num: Optional[int] = None,
                 efa_exact: bool = False, edge_chunk: Optional[int] = None, message_passing: Optional[str] = None):
        self.precision = Precision(dtype)
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        platform = self.device.platform if self.device is not None else jax.default_backend()
        self.config = checkpoint.config.for_evaluation(
            lebedev_num=lebedev_num, efa_exact=efa_exact, edge_chunk=edge_chunk,
            message_passing=resolve_message_passing(message_passing, platform))
        self.fn = compiled_energy_and_forces(self.config)
        self.fn_stress = compiled_energy_forces_stress(self.config)
        self.fn_stresses = compiled_energy_forces_stresses(self.config)
        self.reciprocal_slots = ReciprocalSlots(f"model {checkpoint.name!r}")  # periodic EFA's G slots (grow only)
        with self.precision.scope():
            self.params = jax.device_put(self.precision.cast(checkpoint.params), self.device)

    def batch(self, graphs: Sequence[Graph], slots: Optional[Slots] = None) -> Batch:
        """The padded host :class:`~efa_calc.nn.batch.Batch` of ``graphs`` (tight buckets by default)."""
        slots = tight_slots(graphs) if slots is None else slots
        periodic = any(g.is_periodic for g in graphs)
        shifts = [np.zeros((len(g.dst), 3)) if g.shifts is None else g.shifts for g in graphs] if periodic else None
        cells = [np.eye(3) if g.cell is None else g.cell for g in graphs] if periodic else None
        batch = pad_graphs([g.numbers for g in graphs], [g.positions for g in graphs],
                           [(g.dst, g.src) for g in graphs], slots.nodes_per_graph, slots.num_edges, slots.num_graphs,
                           dtype=self.np_dtype, shifts=shifts, cells=cells)
        batch = with_reciprocal_grid(batch, self.config.long_range)  # static k-grid/mesh of a block that needs one
        lr = periodic_efa(self.config)
        if lr is None or not periodic:
            return batch
        if not all(g.is_periodic for g in graphs):
            raise InputError("periodic EFA evaluates molecules and periodic cells in separate calls; this batch "
                             "mixes them (evaluate_batch them separately)")
        sets = reciprocal_sets(cells, lr)  # refuses a cell beyond the G budget before XLA
        return with_reciprocal(batch, sets, self.reciprocal_slots.fit(sets))

    def _function(self, batch: Batch, per_atom_stress: bool = False):
        if not batch.is_periodic:
            return self.fn
        return self.fn_stresses if per_atom_stress else self.fn_stress

    def run(self, batch: Batch, per_atom_stress: bool = False) -> tuple[np.ndarray, ...]:
        """Graph energies (G,), forces (N, 3) and atomic energies (N,) of the *model* (no shift)
        for a padded batch, plus the graphs' stresses (G, 3, 3) in eV/Å³ for a periodic
        batch (and per-atom stresses (N, 3, 3) with ``per_atom_stress``, local models only),
        as numpy arrays in the backend's dtype."""
        # numpy inputs go straight into the jitted call (an explicit device_put of the
        # eight arrays costs more than a small molecule's whole model call on CPU)
        b = batch.replace(positions=np.asarray(batch.positions, self.np_dtype))
        with self.precision.scope(), jax.default_device(self.device):
            return tuple(np.asarray(a) for a in self._function(b, per_atom_stress)(self.params, b))

    def predict(self, graphs: Sequence[Graph], slots: Optional[Slots] = None,
                per_atom_stress: bool = False) -> list[Prediction]:
        """Predictions of ``graphs``; ``per_atom_stress`` adds per-atom stresses of periodic
        graphs (a local model only: ValueError otherwise, before XLA)."""
        if per_atom_stress and self.config.long_range is not None:
            raise ValueError(f"per-atom stresses need a local model; {self.checkpoint.name!r} has a "
                             f"{self.config.long_range.kind!r} block")
        batch = self.batch(graphs, slots)
        _, forces, e_i, *stress = self.run(batch, per_atom_stress and batch.is_periodic)
        mask = np.asarray(batch.node_mask)
        self.check_finite(e_i[mask], forces[mask], stress[0][np.asarray(batch.graph_mask)] if stress else None)
        s = batch.nodes_per_graph
        out = []
        for k, g in enumerate(graphs):
            rows = slice(k * s, k * s + len(g.numbers))
            out.append(self.physical(g.numbers, e_i[rows], forces[rows], stress[0][k] if g.is_periodic else None,
                                     stress[1][rows] if len(stress) > 1 and g.is_periodic else None))
        return out

    def lower(self, graphs: Sequence[Graph], slots: Optional[Slots] = None):
        batch = self.batch(graphs, slots)
        with self.precision.scope(), jax.default_device(self.device):
            return self._function(batch).lower(self.params, batch)
