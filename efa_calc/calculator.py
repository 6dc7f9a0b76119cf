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

Extrapolation guard: every structure is compared with the training envelope recorded in
the checkpoint (:mod:`efa_calc.envelope`), and ``results["extrapolation"]`` says how::

    {"status": "inside" | "outside" | "unchecked" | "off", "reasons": ["C–C distance 0.62 Å, ..."]}

``guard="warn"`` (default) issues an :class:`~efa_calc.errors.ExtrapolationWarning` for
a structure outside the envelope (once per reason and calculator), ``guard="error"``
raises :class:`~efa_calc.errors.ExtrapolationError`, ``guard="off"`` skips the check.
Checkpoints without an envelope are "unchecked".  Atoms closer than 0.3 Å are always an
:class:`~efa_calc.errors.InputError`.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from efa_calc.batching import edge_bucket, node_bucket, pad_graphs
from efa_calc.checkpoint import Checkpoint, EnergyShift, load_checkpoint
from efa_calc.envelope import check_physical_distances
from efa_calc.errors import ExtrapolationError, ExtrapolationWarning, InputError
from efa_calc.models import resolve_model
from efa_calc.neighbors import VerletList, neighbor_pairs
from efa_calc.potential import Potential
from efa_calc.validation import check_structure

__all__ = ["EFACalculator"]

log = logging.getLogger("efa_calc")

GUARD_MODES = ("warn", "error", "off")
_ASE_KWARGS = ("label", "directory", "atoms")  # what ASE's Calculator itself accepts and we pass on


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
      guard: the extrapolation guard: ``"warn"`` (default: a warning for a structure outside
        the training envelope), ``"error"`` (raise
        :class:`~efa_calc.errors.ExtrapolationError`) or ``"off"``.  The verdict is in
        ``results["extrapolation"]``.
      skin: Verlet-list skin in Å.  The default 0 rebuilds the pair list at every call:
        shapes stay fixed anyway (pair buckets only grow), a rebuild costs tens of µs for
        small molecules, while every skin pair costs a full tensor product on the device.
      lebedev_num: evaluate EFA on another Lebedev grid (testing invariance).
      efa_exact: evaluate EFA with the exact kernel its Lebedev quadrature approximates,
        y_i = Σ_j Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) v_j / √D (O(N²); same parameters).
        Rotation invariant at every distance, so ``max_length`` no longer limits the
        structure.
      devices: spread every structure over several jax devices (and hosts) — a number D
        (the first D of ``jax.devices()``) or a list of ``jax.Device`` of one platform;
        ``None`` (default) evaluates on one device (``device``).  Domain decomposition with
        a one-cutoff halo; EFA's grid sums are all-reduced (:mod:`efa_calc.sharding`,
        ``docs/scaling.md``).  Results equal the single-device ones to rounding.  A
        structure needs at least D atoms (:class:`~efa_calc.errors.InputError`
        otherwise); ``efa_exact`` cannot be combined with it.
      message_passing: the message-passing kernel: ``"native"`` (efa-calc's own),
        ``"cuequivariance"`` (NVIDIA's cuequivariance-jax; the fused CUDA kernel on GPUs; needs
        ``pip install 'efa-calc[cuequivariance]'`` or the ``gpu`` extra) or ``None`` (default:
        native on CPUs, :data:`efa_calc.nn.tensor.GPU_MESSAGE_PASSING` on GPUs).  Both give
        the same energies and forces (to float64 rounding).
      label, directory, atoms: passed on to ASE's ``Calculator``.  Any other keyword
        argument is a ``TypeError`` (ASE would silently keep it as an unused parameter).
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
        guard: str = "warn",
        efa_exact: bool = False,
        devices=None,
        message_passing: str | None = None,
        **kwargs,
    ):
        unknown = [k for k in kwargs if k not in _ASE_KWARGS]
        if unknown:
            allowed = ["model", "dtype", "device", "strict", "skin", "lebedev_num", "guard", "efa_exact", "devices",
                       "message_passing", *_ASE_KWARGS]
            hint = difflib.get_close_matches(unknown[0], allowed, n=1)
            raise TypeError(
                f"EFACalculator got an unexpected keyword argument {unknown[0]!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; it takes {', '.join(allowed)}"
            )
        if dtype not in ("float32", "float64"):
            raise ValueError(f"EFACalculator: dtype={dtype!r}; allowed: 'float32' or 'float64'")
        if guard not in GUARD_MODES:
            raise ValueError(f"EFACalculator: guard={guard!r}; allowed: {', '.join(repr(g) for g in GUARD_MODES)}")
        if not isinstance(strict, bool):
            raise ValueError(f"EFACalculator: strict={strict!r}; allowed: True or False")
        if not (isinstance(skin, (int, float)) and math.isfinite(skin) and 0 <= skin <= 5):
            raise ValueError(f"EFACalculator: skin={skin!r} Å; allowed: a number from 0 to 5 Å")
        if devices is not None and device is not None:
            raise ValueError("EFACalculator: give either device= (one device) or devices= (sharded), not both")
        if devices is not None and efa_exact:
            raise ValueError("EFACalculator: efa_exact=True (the O(N²) exact EFA kernel) cannot be sharded "
                             "over devices")
        super().__init__(**kwargs)
        specs = list(model) if isinstance(model, (list, tuple)) else [model]
        if not specs:
            raise ValueError("EFACalculator needs at least one model")
        self.checkpoints = [_load(s) for s in specs]
        self.potentials = [Potential(c, dtype, device, lebedev_num, efa_exact, message_passing)
                           for c in self.checkpoints]
        self.sharded = None
        if devices is not None:
            from efa_calc.sharding import ShardedPotential

            self.sharded = [ShardedPotential(p.config, c.params, devices, dtype) for p, c in
                            zip(self.potentials, self.checkpoints)]
        self.dtype = dtype
        self.strict = strict
        self.guard = guard
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
        check_physical_distances(atoms.positions, where)

    def _guard_structure(self, atoms: Atoms, pairs) -> list:
        """(key, reason) of every envelope a structure leaves (before evaluation)."""
        if self.guard == "off":
            return []
        out: list = []
        for c in self.checkpoints:
            if c.envelope is not None:
                out += [r for r in c.envelope.check_structure(atoms.numbers, atoms.positions, pairs) if r not in out]
        return out

    def _guard_finish(self, atoms: Atoms, reasons: list, member_energies: Sequence[float] | None,
                      where: str = "structure") -> dict:
        """Add the energy check, report (warn/raise) and return ``results["extrapolation"]``.

        Called with ``member_energies=None`` before evaluation: raises at once under
        ``guard="error"`` when the structure alone is outside (no model call wasted)."""
        if member_energies is None:
            if self.guard == "error" and reasons:
                return self._guard_finish(atoms, reasons, [], where)
            return {}
        if self.guard == "off":
            return {"status": "off", "reasons": []}
        if all(c.envelope is None for c in self.checkpoints):
            return {"status": "unchecked", "reasons": ["the checkpoint records no training envelope"]}
        n = len(atoms)
        for c, e in zip(self.checkpoints, member_energies):
            if c.envelope is not None:
                e_atom = (e - float(np.sum(c.energy_shift.atomic(atoms.numbers)))) / n
                reasons += [r for r in c.envelope.check_energy(e_atom) if r not in reasons]
        if not reasons:
            return {"status": "inside", "reasons": []}
        text = [r for _, r in reasons]
        msg = f"{where} is outside the training data of {', '.join(self.name_of_models)}: " + "; ".join(text)
        if self.guard == "error":
            raise ExtrapolationError(msg + " (guard='error'; pass guard='warn' to evaluate anyway)")
        new = [k for k, _ in reasons if k not in self._warned]
        if new:
            self._warned.update(new)
            warnings.warn(msg + " — predictions are extrapolated and may be unphysical", ExtrapolationWarning,
                          stacklevel=4)
        return {"status": "outside", "reasons": text}

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check(atoms)
        n = len(atoms)
        dst, src = self._verlet.pairs(atoms.positions)
        reasons = self._guard_structure(atoms, (dst, src))
        self._guard_finish(atoms, reasons, None)
        nodes = node_bucket(n)
        if nodes != self._node_capacity:
            if self._node_capacity:
                log.info("EFACalculator: atom count %d -> atom bucket %d (was %d)", n, nodes, self._node_capacity)
            self._node_capacity = nodes
        if len(dst) > self._edge_capacity or not self._edge_capacity:  # (a single atom has no pairs)
            # First call: the tightest bucket (padded pairs cost as much as real ones).
            # Overflow later (a pair list grown during MD): one step up with 25 % headroom.
            new = edge_bucket(len(dst), headroom=1.25 if self._edge_capacity else 1.0)
            if self._edge_capacity:
                log.info("EFACalculator: %d pairs exceed the pair bucket %d; moving to %d (one new compile)",
                         len(dst), self._edge_capacity, new)
            self._edge_capacity = new
        if self.sharded is not None:
            outs = self._evaluate_sharded(atoms, dst, src)
        else:
            batch = pad_graphs([atoms.numbers], [atoms.positions], [(dst, src)], self._node_capacity,
                               self._edge_capacity)
            outs = [self._evaluate_one(p, batch, n, atoms.numbers) for p in self.potentials]
        extrapolation = self._guard_finish(atoms, reasons, [o[0] for o in outs])
        self.results = self._combine(outs)
        self.results["extrapolation"] = extrapolation

    @staticmethod
    def _evaluate_one(pot: Potential, batch, n: int, numbers) -> tuple[float, np.ndarray, np.ndarray]:
        _, forces, e_i = pot(batch, int(batch.node_mask.shape[0]))
        e_i = e_i[:n].astype(np.float64) + pot.checkpoint.energy_shift.atomic(numbers)
        return float(np.sum(e_i)), forces[:n].copy(), e_i.astype(pot.np_dtype)

    def _evaluate_sharded(self, atoms: Atoms, dst, src, where: str = "structure") -> list:
        """(energy, forces, atomic energies) of every member, each spread over the devices."""
        d = self.sharded[0].num_domains
        if len(atoms) < d:
            raise InputError(
                f"{where} has {len(atoms)} atoms, fewer than the {d} devices it should be spread over; "
                f"use devices=None (one device) or at most {len(atoms)} devices"
            )
        outs = []
        for sp, pot in zip(self.sharded, self.potentials):
            _, forces, e_i = sp(atoms.numbers, atoms.positions, dst, src)
            e_i = e_i.astype(np.float64) + pot.checkpoint.energy_shift.atomic(atoms.numbers)
            outs.append((float(np.sum(e_i)), forces.astype(pot.np_dtype), e_i.astype(pot.np_dtype)))
        return outs

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

        Returns one dict per structure with ``energy`` (eV), ``forces`` (eV/Å),
        ``energies`` (eV) and ``extrapolation``, plus ``energy_std``/``forces_std`` for
        committees — the same numbers as one-by-one calls.  Shapes: graph slots = ``batch_size``, atom slots =
        bucket of the largest structure in the chunk, pair slots = bucket of the chunk's
        pairs, so repeated calls on similar structures reuse compiled code.
        """
        structures = list(structures)
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"evaluate_batch: batch_size={batch_size!r}; allowed: an integer ≥ 1")
        for k, a in enumerate(structures):
            self._check(a, f"structure {k}")
        out: list[dict] = []
        if self.sharded is not None:  # one structure at a time, each spread over the devices
            for k, a in enumerate(structures):
                pairs = neighbor_pairs(a.positions, self.cutoff)
                reasons = self._guard_structure(a, pairs)
                self._guard_finish(a, reasons, None, f"structure {k}")
                outs = self._evaluate_sharded(a, *pairs, where=f"structure {k}")
                res = self._combine(outs)
                res["extrapolation"] = self._guard_finish(a, reasons, [o[0] for o in outs], f"structure {k}")
                out.append(res)
            return out
        for start in range(0, len(structures), batch_size):
            chunk = structures[start : start + batch_size]
            pairs = [neighbor_pairs(a.positions, self.cutoff) for a in chunk]
            reasons = [self._guard_structure(a, p) for a, p in zip(chunk, pairs)]
            for k, (a, r) in enumerate(zip(chunk, reasons)):
                self._guard_finish(a, r, None, f"structure {start + k}")
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
                res = self._combine([pm[k] for pm in per_model])
                res["extrapolation"] = self._guard_finish(chunk[k], reasons[k], [pm[k][0] for pm in per_model],
                                                          f"structure {start + k}")
                out.append(res)
        return out

    def reset(self):
        super().reset()
        self._verlet.reset()

    @property
    def name_of_models(self) -> list[str]:
        return [c.name for c in self.checkpoints]
