"""The backend protocol: what every way of running a model on structures provides.

A :class:`Backend` binds a :class:`~efa_calc.checkpoint.Checkpoint` to a
:class:`~efa_calc.nn.precision.Precision` and a device (or devices), and maps host-side
:class:`Graph` s (a structure with its pair list) to physical :class:`Prediction` s:

* energies include the checkpoint's energy shift, added here, once, in float64;
* forces are F = −∂E/∂R of the same call;
* a non-finite energy or force of a real atom is a ``FloatingPointError`` here, never a
  number passed on to an integrator;
* :meth:`Backend.lower` / :meth:`Backend.cost` expose the compiled call (HLO, XLA's cost
  analysis) for benchmarks, without private attributes.

Implementations: :class:`~efa_calc.backends.single.Potential` (one device, many graphs
per call), :class:`~efa_calc.backends.sharded.ShardedPotential` (one graph over several
devices).  The in-XLA MD engine (:mod:`efa_calc.md_jax`) evaluates the same
:func:`~efa_calc.nn.energy_model.atomic_energies` inside its jitted steps.

Units: positions Å, energies eV, forces eV/Å.
"""

from __future__ import annotations

import abc
from typing import NamedTuple, Optional, Sequence

import numpy as np
from jaxtyping import Float, Int

__all__ = ["Backend", "Graph", "Prediction", "Slots", "cost_of"]


class Graph(NamedTuple):
    """One structure with its pair list (host, numpy).

    Attributes:
      numbers: (n,) atomic numbers.
      positions: (n, 3) Å.
      dst, src: (e,) int32 pairs in the model's convention (centre, neighbour).
      shifts: (e, 3) integer image shifts of the pairs (periodic), or ``None``.
      cell: (3, 3) Å, rows a, b, c (periodic), or ``None``.
    """

    numbers: Int[np.ndarray, "n"]
    positions: Float[np.ndarray, "n 3"]
    dst: Int[np.ndarray, "e"]
    src: Int[np.ndarray, "e"]
    shifts: Optional[Int[np.ndarray, "e 3"]] = None
    cell: Optional[Float[np.ndarray, "3 3"]] = None

    @property
    def is_periodic(self) -> bool:
        return self.cell is not None


class Slots(NamedTuple):
    """Static padded sizes of a single-device call: atom slots per graph, pair slots, graph slots."""

    nodes_per_graph: int
    num_edges: int
    num_graphs: int


class Prediction(NamedTuple):
    """Physical results for one structure.

    Attributes:
      energy: total energy in eV (float64, with the energy shift).
      forces: (n, 3) eV/Å in the backend's dtype.
      energies: (n,) per-atom energies in eV (with the shift) in the backend's dtype.
      stress: (3, 3) eV/Å³, ASE's sign (positive under tension), for periodic graphs; else ``None``.
      stresses: (n, 3, 3) per-atom stresses in eV/Å³ (sum = ``stress``) when asked of a
        local periodic model; else ``None``.
    """

    energy: float
    forces: np.ndarray
    energies: np.ndarray
    stress: Optional[np.ndarray] = None
    stresses: Optional[np.ndarray] = None


def cost_of(lowered) -> dict:
    """XLA's ``flops``, ``bytes accessed`` and ``transcendentals`` of a lowered call."""
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return {k: float(v) for k, v in cost.items() if k in ("flops", "bytes accessed", "transcendentals")}


class Backend(abc.ABC):
    """A model bound to a precision and device(s); see the module docstring.

    Attributes:
      checkpoint: the model.
      config: its evaluation variant (:meth:`~efa_calc.nn.config.ModelConfig.for_evaluation`).
      precision: dtype policy of every operation.
    """

    checkpoint = None
    config = None
    precision = None

    @property
    def np_dtype(self) -> type:
        return self.precision.np_dtype

    @abc.abstractmethod
    def predict(self, graphs: Sequence[Graph], slots: Optional[Slots] = None) -> list[Prediction]:
        """Physical energies, forces and atomic energies of every graph."""

    @abc.abstractmethod
    def lower(self, graphs: Sequence[Graph], slots: Optional[Slots] = None):
        """The ``jax.stages.Lowered`` call that :meth:`predict` would run for these graphs."""

    def cost(self, graphs: Sequence[Graph], slots: Optional[Slots] = None) -> dict:
        """XLA's cost analysis of that call (:func:`cost_of`)."""
        with self.precision.scope():
            return cost_of(self.lower(graphs, slots))

    def physical(self, numbers, model_energies: np.ndarray, forces: np.ndarray, stress=None,
                 stresses=None) -> Prediction:
        """Add the energy shift (float64) to one structure's model atomic energies (the
        shift is per atom: it adds nothing to forces or stress)."""
        e_i = np.asarray(model_energies).astype(np.float64) + self.checkpoint.energy_shift.atomic(numbers)
        as_array = (lambda a: None if a is None else np.array(a, self.np_dtype))
        return Prediction(float(np.sum(e_i)), np.array(forces, self.np_dtype), e_i.astype(self.np_dtype),
                          as_array(stress), as_array(stresses))

    def check_finite(self, energies: np.ndarray, forces: np.ndarray, stress=None) -> None:
        """Raise ``FloatingPointError`` for non-finite values of real atoms (and of the stress)."""
        if not (np.all(np.isfinite(energies)) and np.all(np.isfinite(forces))
                and (stress is None or np.all(np.isfinite(stress)))):
            raise FloatingPointError(
                f"model {self.checkpoint.name!r} returned non-finite energies or forces; "
                "the structure is probably far outside the training range"
            )
