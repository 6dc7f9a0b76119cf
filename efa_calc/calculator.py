"""``EFACalculator``: the ASE calculator for EFA+MPNN models.

    from efa_calc import EFACalculator
    atoms.calc = EFACalculator("cumulene-efa")          # bundled name or checkpoint dir
    atoms.get_potential_energy()                          # eV
    atoms.get_forces()                                    # eV/Å

Every call computes ``energy``, ``free_energy`` (equal to the energy), ``forces`` and
per-atom ``energies`` together, whatever ASE asked for.  Structures are padded to atom
and pair buckets (:mod:`efa_calc.batching`), so an MD run of one molecule compiles once;
a structure that no longer fits moves to a larger bucket (logged on ``efa_calc``), never
to a truncated pair list.  Pairs come from a Verlet list with a skin
(:mod:`efa_calc.neighbors`).  Bad input raises :class:`~efa_calc.errors.InputError`
before anything reaches XLA.

A committee (``EFACalculator([path1, path2, ...])``) returns the member mean and adds
``energy_std`` (eV) and ``forces_std`` (eV/Å) to ``results``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from efa_calc.batching import edge_bucket, node_bucket, pad_graphs
from efa_calc.checkpoint import Checkpoint, EnergyShift, load_checkpoint
from efa_calc.models import resolve_model
from efa_calc.neighbors import VerletList, neighbor_pairs
from efa_calc.potential import Potential
from efa_calc.validation import check_structure

__all__ = ["EFACalculator"]

log = logging.getLogger("efa_calc")

ModelSpec = "str | os.PathLike | Checkpoint"


def _load(spec) -> Checkpoint:
    if isinstance(spec, Checkpoint):
        return spec
    return load_checkpoint(resolve_model(spec))


class EFACalculator(Calculator):
    """ASE calculator for EFA+MPNN checkpoints (energies in eV, forces in eV/Å).

    Args:
      model: a bundled model name (:func:`efa_calc.list_models`), a checkpoint directory,
        a loaded :class:`~efa_calc.checkpoint.Checkpoint`, or a list of these (committee).
      dtype: ``"float32"`` (default) or ``"float64"``; float64 computes every operation
        in float64 and returns float64 arrays.
      device: jax device (``None``, ``"cpu"``, ``"gpu"``, ``"cuda:1"``, or a ``jax.Device``).
      strict: raise when a structure extends beyond the model's ``max_length`` (the range
        of EFA's rotational invariance); ``False`` warns once instead.
      skin: Verlet-list skin in Å.  The default 0 rebuilds the pair list at every call:
        shapes stay fixed anyway (pair buckets only grow), a rebuild costs tens of µs for
        small molecules, while every skin pair costs a full tensor product on the device.
      lebedev_num: evaluate EFA on another Lebedev grid (testing invariance).
      efa_exact: evaluate EFA with the exact kernel its Lebedev quadrature approximates,
        y_i = Σ_j Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) v_j / √D (O(N²); same parameters).
        Rotation invariant at every distance, so ``max_length`` no longer limits the
        structure.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(
        self,
        model,
        dtype: str = "float32",
        device=None,
        strict: bool = True,
        skin: float = 0.0,
        lebedev_num: int | None = None,
        efa_exact: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        specs = list(model) if isinstance(model, (list, tuple)) else [model]
        if not specs:
            raise ValueError("EFACalculator needs at least one model")
        self.checkpoints = [_load(s) for s in specs]
        self.potentials = [Potential(c, dtype, device, lebedev_num, efa_exact) for c in self.checkpoints]
        self.dtype = dtype
        self.strict = strict
        self.is_committee = len(self.potentials) > 1
        self.cutoff = max(c.config.cutoff for c in self.checkpoints)
        self.max_length = min(p.config.max_length for p in self.potentials)
        self.species = sorted(set.intersection(*(set(c.species) for c in self.checkpoints)),
                              key=lambda s: self.checkpoints[0].species.index(s))
        self._verlet = VerletList(self.cutoff, skin)
        self._edge_capacity = 0
        self._node_capacity = 0
        self._warned: set = set()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_reference_checkpoint(
        cls,
        ckpt_dir: str | os.PathLike,
        hyperparameters: dict,
        dtype: str = "float32",
        species: list[str] | None = None,
        energy_shift: EnergyShift | None = None,
        **kwargs,
    ) -> "EFACalculator":
        """Calculator for a checkpoint written by the reference EFA code (orbax).

        ``hyperparameters`` are the reference ``EnergyModel`` keyword arguments; species
        default to the elements with a non-zero ``element_bias``.  See
        :func:`efa_calc.reference.checkpoint_from_reference`.
        """
        from efa_calc.reference import checkpoint_from_reference

        ckpt = checkpoint_from_reference(ckpt_dir, hyperparameters, species=species, energy_shift=energy_shift)
        return cls(ckpt, dtype=dtype, **kwargs)

    @classmethod
    def committee(cls, models: Sequence, **kwargs) -> "EFACalculator":
        """A committee calculator: mean prediction plus ``energy_std``/``forces_std``."""
        return cls(list(models), **kwargs)

    # ------------------------------------------------------------------ evaluation
    def _check(self, atoms: Atoms, where: str = "structure") -> None:
        check_structure(atoms.numbers, atoms.positions, atoms.pbc, self.species, self.max_length,
                        self.strict, self._warned, where)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check(atoms)
        n = len(atoms)
        dst, src = self._verlet.pairs(atoms.positions)
        nodes = node_bucket(n)
        if nodes != self._node_capacity:
            if self._node_capacity:
                log.info("EFACalculator: atom count %d -> atom bucket %d (was %d)", n, nodes, self._node_capacity)
            self._node_capacity = nodes
        if len(dst) > self._edge_capacity:
            # First call: the tightest bucket (padded pairs cost as much as real ones).
            # Overflow later (a pair list grown during MD): one step up with 25 % headroom.
            new = edge_bucket(len(dst), headroom=1.25 if self._edge_capacity else 1.0)
            if self._edge_capacity:
                log.info("EFACalculator: %d pairs exceed the pair bucket %d; moving to %d (one new compile)",
                         len(dst), self._edge_capacity, new)
            self._edge_capacity = new
        batch = pad_graphs([atoms.numbers], [atoms.positions], [(dst, src)], self._node_capacity, self._edge_capacity)
        self.results = self._combine([self._evaluate_one(p, batch, n, atoms.numbers) for p in self.potentials])

    @staticmethod
    def _evaluate_one(pot: Potential, batch, n: int, numbers) -> tuple[float, np.ndarray, np.ndarray]:
        _, forces, e_i = pot(batch, int(batch.node_mask.shape[0]))
        e_i = e_i[:n].astype(np.float64) + pot.checkpoint.energy_shift.atomic(numbers)
        return float(np.sum(e_i)), forces[:n].copy(), e_i.astype(pot.np_dtype)

    def _combine(self, outs: list) -> dict:
        energies = np.array([o[0] for o in outs])
        forces = np.stack([o[1] for o in outs])
        atomic = np.stack([o[2] for o in outs])
        res = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "forces": forces.mean(axis=0).astype(forces.dtype),
            "energies": atomic.mean(axis=0).astype(atomic.dtype),
        }
        if self.is_committee:
            res["energy_std"] = float(energies.std())
            res["forces_std"] = forces.std(axis=0).astype(forces.dtype)
        return res

    def evaluate_batch(self, structures: Sequence[Atoms], batch_size: int = 16) -> list[dict]:
        """Evaluate many structures, ``batch_size`` per XLA call (padded to buckets).

        Returns one dict per structure with ``energy`` (eV), ``forces`` (eV/Å) and
        ``energies`` (eV), plus ``energy_std``/``forces_std`` for committees — the same
        numbers as one-by-one calls.  Shapes: graph slots = ``batch_size``, atom slots =
        bucket of the largest structure in the chunk, pair slots = bucket of the chunk's
        pairs, so repeated calls on similar structures reuse compiled code.
        """
        structures = list(structures)
        for k, a in enumerate(structures):
            self._check(a, f"structure {k}")
        out: list[dict] = []
        for start in range(0, len(structures), batch_size):
            chunk = structures[start : start + batch_size]
            pairs = [neighbor_pairs(a.positions, self.cutoff) for a in chunk]
            nodes = node_bucket(max(len(a) for a in chunk))
            edges = edge_bucket(sum(len(p[0]) for p in pairs))
            graphs = min(batch_size, 1 << (len(chunk) - 1).bit_length())  # power-of-two graph slots
            batch = pad_graphs([a.numbers for a in chunk], [a.positions for a in chunk], pairs, nodes, edges, graphs)
            per_model = []
            for pot in self.potentials:
                _, forces, e_i = pot(batch, nodes)
                res = []
                for k, a in enumerate(chunk):
                    sl = slice(k * nodes, k * nodes + len(a))
                    ei = e_i[sl].astype(np.float64) + pot.checkpoint.energy_shift.atomic(a.numbers)
                    res.append((float(ei.sum()), forces[sl].copy(), ei.astype(pot.np_dtype)))
                per_model.append(res)
            for k in range(len(chunk)):
                out.append(self._combine([pm[k] for pm in per_model]))
        return out

    def reset(self):
        super().reset()
        self._verlet.reset()

    @property
    def name_of_models(self) -> list[str]:
        return [c.name for c in self.checkpoints]
