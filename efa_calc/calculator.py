"""``EFACalculator``: the ASE calculator for EFA+MPNN models.

    from efa_calc import EFACalculator
    atoms.calc = EFACalculator("cumulene-efa")          # bundled name or checkpoint dir
    atoms.get_potential_energy()                          # eV
    atoms.get_forces()                                    # eV/Å

Every call computes ``energy``, ``free_energy`` (equal to the energy), ``forces`` and
per-atom ``energies`` together, whatever ASE asked for.  The calculator is a thin adapter:
its settings live in ASE's ``parameters`` (``calc.todict()`` lists those that differ from
the defaults, ``calc.set(guard="error")`` changes them), structures become graphs
(:mod:`efa_calc.graphs`) and a backend (:mod:`efa_calc.backends`) evaluates them.
Structures are padded to atom and pair buckets (:mod:`efa_calc.graphs.padding`), so an MD run of one molecule compiles once;
a structure that no longer fits moves to a larger bucket (logged on ``efa_calc``), never
to a truncated pair list.  Pairs come from a Verlet list with a skin
(:mod:`efa_calc.graphs.neighbors`).  Bad input raises :class:`~efa_calc.errors.InputError`
before anything reaches XLA.

A committee (``EFACalculator([path1, path2, ...])``) returns the member mean and adds
``energy_std`` (eV) and ``forces_std`` (eV/Å) to ``results`` (``calc.get_property("energy_std")``).

Extrapolation guard (:mod:`efa_calc.guard`): every structure is compared with the training
envelope recorded in the checkpoint (:mod:`efa_calc.envelope`), and ``results["extrapolation"]`` says how::

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
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from efa_calc.backends.base import Graph, Slots
from efa_calc.backends.single import Potential
from efa_calc.checkpoint import Checkpoint, EnergyShift, load_checkpoint
from efa_calc.envelope import PHYSICAL_MIN_DISTANCE_A, check_physical_distances, pair_distances
from efa_calc.errors import InputError
from efa_calc.graphs.neighbors import VerletList, neighbor_list
from efa_calc.graphs.padding import edge_bucket, node_bucket
from efa_calc.graphs.reciprocal import periodic_efa
from efa_calc.graphs.validation import check_structure
from efa_calc.guard import GUARD_MODES, Guard
from efa_calc.models import resolve_model

__all__ = ["EFACalculator", "GUARD_MODES"]

log = logging.getLogger("efa_calc")

_ASE_KWARGS = ("label", "directory", "atoms")  # what ASE's Calculator itself accepts and we pass on
#: settings that need the backends rebuilt when they change (the others are cheap)
_BACKEND_SETTINGS = ("model", "dtype", "device", "lebedev_num", "efa_exact", "devices", "skin", "message_passing")


def _load(spec) -> Checkpoint:
    if isinstance(spec, Checkpoint):
        return spec
    return load_checkpoint(resolve_model(spec))


def _check_settings(p: dict) -> None:
    """ValueError naming the setting and its allowed values, before anything is built."""
    if p["dtype"] not in ("float32", "float64"):
        raise ValueError(f"EFACalculator: dtype={p['dtype']!r}; allowed: 'float32' or 'float64'")
    if p["guard"] not in GUARD_MODES:
        raise ValueError(f"EFACalculator: guard={p['guard']!r}; allowed: {', '.join(repr(g) for g in GUARD_MODES)}")
    if not isinstance(p["strict"], bool):
        raise ValueError(f"EFACalculator: strict={p['strict']!r}; allowed: True or False")
    skin = p["skin"]
    if not (isinstance(skin, (int, float)) and math.isfinite(skin) and 0 <= skin <= 5):
        raise ValueError(f"EFACalculator: skin={skin!r} Å; allowed: a number from 0 to 5 Å")
    if p["devices"] is not None and p["device"] is not None:
        raise ValueError("EFACalculator: give either device= (one device) or devices= (sharded), not both")
    if p["devices"] is not None and p["efa_exact"]:
        raise ValueError("EFACalculator: efa_exact=True (the O(N²) exact EFA kernel) cannot be sharded over devices")


class EFACalculator(Calculator):
    """ASE calculator for EFA+MPNN checkpoints (energies in eV, forces in eV/Å).

    Args (all kept in ``self.parameters``):
      model: a bundled model name (:func:`efa_calc.list_models`), a checkpoint directory,
        a loaded :class:`~efa_calc.checkpoint.Checkpoint`, or a list of these (committee).
      dtype: ``"float32"`` (default) or ``"float64"``; float64 computes every operation
        in float64 and returns float64 arrays.
      device: jax device (``None``, ``"cpu"``, ``"gpu"``, ``"cuda:1"``, or a ``jax.Device``).
      strict: raise when a structure extends beyond the model's ``max_length`` (the range
        of EFA's rotational invariance, a limit of the model, not of its training data);
        ``False`` warns once instead.
      guard: the extrapolation guard (:mod:`efa_calc.guard`): ``"warn"`` (default),
        ``"error"`` or ``"off"``.  The verdict is in ``results["extrapolation"]``.
      skin: Verlet-list skin in Å.  The default 0 rebuilds the pair list at every call:
        shapes stay fixed anyway (pair buckets only grow), while every skin pair costs a
        full tensor product on the device.
      lebedev_num: evaluate EFA on another Lebedev grid (testing invariance).
      efa_exact: evaluate EFA with the exact kernel its Lebedev quadrature approximates,
        y_i = Σ_j Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) v_j / √D (O(N²); same parameters).
        Rotation invariant at every distance, so ``max_length`` no longer limits the
        structure.
      devices: spread every structure over several jax devices (and hosts) — a number D
        (the first D of ``jax.devices()``) or a list of ``jax.Device`` of one platform;
        ``None`` (default) evaluates on one device (``device``).  Domain decomposition with
        a one-cutoff halo (:mod:`efa_calc.backends.sharded`, ``docs/scaling.md``).  A
        structure needs at least D atoms; ``efa_exact`` cannot be combined with it.
      message_passing: the message-passing kernel: ``"native"`` (efa-calc's own),
        ``"cuequivariance"`` (NVIDIA's cuequivariance-jax; the fused CUDA kernel on GPUs; needs
        ``pip install 'efa-calc[cuequivariance]'`` or the ``gpu`` extra) or ``None`` (default:
        native on CPUs, :data:`efa_calc.nn.tensor.GPU_MESSAGE_PASSING` on GPUs).  Both give
        the same energies and forces (to float64 rounding).
      label, directory, atoms: passed on to ASE's ``Calculator``.  Any other keyword
        argument is a ``TypeError`` (ASE would silently keep it as an unused parameter).
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress", "stresses", "energy_std",
                              "forces_std"]
    default_parameters = {"dtype": "float32", "device": None, "strict": True, "skin": 0.0, "lebedev_num": None,
                          "guard": "warn", "efa_exact": False, "devices": None, "message_passing": None}

    def __init__(self, model, **kwargs):
        ase_kwargs = {k: kwargs.pop(k) for k in _ASE_KWARGS if k in kwargs}
        self._backends_built = False
        super().__init__(**ase_kwargs)
        self.set(model=model, **kwargs)

    # ------------------------------------------------------------------ settings
    def set(self, **kwargs) -> dict:
        """Change settings (ASE's ``Calculator.set``): unknown names are a ``TypeError``, bad
        values a ``ValueError``; a changed model, dtype, device or grid rebuilds the backends."""
        allowed = ["model", *self.default_parameters, *_ASE_KWARGS]
        unknown = [k for k in kwargs if k not in allowed or k in _ASE_KWARGS]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], allowed, n=1)
            raise TypeError(
                f"EFACalculator got an unexpected keyword argument {unknown[0]!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; it takes {', '.join(allowed)}"
            )
        if "model" in kwargs and isinstance(kwargs["model"], tuple):
            kwargs["model"] = list(kwargs["model"])
        _check_settings({**self.parameters, **kwargs})
        changed = super().set(**kwargs)
        if "model" not in self.parameters:  # ASE's own __init__ calls set() before the model is given
            return changed
        if not self._backends_built or any(k in changed for k in _BACKEND_SETTINGS):
            self._build()
        elif changed:
            self.guard = Guard(self.checkpoints, self.parameters["guard"])
        if changed:
            self.reset()  # results of the old settings are stale
        return changed

    def _build(self) -> None:
        p = self.parameters
        specs = list(p["model"]) if isinstance(p["model"], list) else [p["model"]]
        if not specs:
            raise ValueError("EFACalculator needs at least one model")
        self.checkpoints = [_load(s) for s in specs]
        self.potentials = [Potential(c, p["dtype"], p["device"], p["lebedev_num"], p["efa_exact"],
                                     message_passing=p["message_passing"]) for c in self.checkpoints]
        self.sharded = None
        if p["devices"] is not None:
            from efa_calc.backends.sharded import ShardedPotential

            self.sharded = [ShardedPotential(c, p["devices"], p["dtype"], config=pot.config)
                            for pot, c in zip(self.potentials, self.checkpoints)]
        self.guard = Guard(self.checkpoints, p["guard"])
        self.cutoff = max(c.config.cutoff for c in self.checkpoints)
        self.max_length = min(pot.config.max_length for pot in self.potentials)
        self.species = sorted(set.intersection(*(set(c.species) for c in self.checkpoints)),
                              key=lambda s: self.checkpoints[0].species.index(s))
        # periodic structures: every member trained on periodic data, with no long-range block
        # or one defined in periodic cells
        self.periodic = all(c.evaluates_cells for c in self.checkpoints)
        self._verlet = VerletList(self.cutoff, p["skin"])
        self._slots = Slots(0, 0, 1)
        self._warned: set = set()
        self._backends_built = True

    @property
    def dtype(self) -> str:
        return self.parameters["dtype"]

    @property
    def is_committee(self) -> bool:
        return len(self.checkpoints) > 1

    @property
    def name_of_models(self) -> list[str]:
        return [c.name for c in self.checkpoints]

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
                        self.parameters["strict"], self._warned, where, atoms.cell.array, self.periodic)
        if atoms.pbc.any() and self.sharded is not None:
            raise InputError(f"{where} is periodic: devices= (sharded evaluation) supports isolated structures only; "
                             "use devices=None")
        if not atoms.pbc.any():
            check_physical_distances(atoms.positions, where)
        elif not atoms.pbc.all() and any(periodic_efa(pot.config) for pot in self.potentials):
            raise InputError(f"{where} has pbc={atoms.pbc.tolist()}: periodic EFA needs all three directions "
                             "periodic (put a slab in a 3D cell with vacuum, pbc=True) or none")

    def _graph(self, atoms: Atoms, pairs, where: str = "structure") -> Graph:
        """The structure with its pairs; periodic: image shifts, cell, and the 0.3 Å check
        over every periodic image."""
        if not atoms.pbc.any():
            return Graph(atoms.numbers, atoms.positions, pairs.dst, pairs.src)
        cell = atoms.cell.array
        d = pair_distances(atoms.positions, pairs.dst, pairs.src, pairs.shifts, cell)
        if len(d) and d.min() < PHYSICAL_MIN_DISTANCE_A:
            k = int(np.argmin(d))
            raise InputError(f"{where}: atoms {pairs.dst[k]} and {pairs.src[k]} (image {pairs.shifts[k].tolist()}) are "
                             f"{d[k]:.3f} Å apart, closer than the physical minimum of {PHYSICAL_MIN_DISTANCE_A} Å")
        return Graph(atoms.numbers, atoms.positions, pairs.dst, pairs.src, pairs.shifts, cell)

    def _grow_slots(self, n: int, num_pairs: int) -> Slots:
        """The calculator's slots for one structure: atom bucket of n; pair bucket only grows
        (first call tight, later overflow one step up with 25 % headroom; logged)."""
        nodes, edges = node_bucket(n), self._slots.num_edges
        if nodes != self._slots.nodes_per_graph and self._slots.nodes_per_graph:
            log.info("EFACalculator: atom count %d -> atom bucket %d (was %d)", n, nodes, self._slots.nodes_per_graph)
        if num_pairs > edges or not edges:  # (a single atom has no pairs)
            new = edge_bucket(num_pairs, headroom=1.25 if edges else 1.0)
            if edges:
                log.info("EFACalculator: %d pairs exceed the pair bucket %d; moving to %d (one new compile)",
                         num_pairs, edges, new)
            edges = new
        self._slots = Slots(nodes, edges, 1)
        return self._slots

    def _backends(self):
        return self.sharded if self.sharded is not None else self.potentials

    def _check_shardable(self, atoms: Atoms, where: str) -> None:
        d = self.sharded[0].num_domains
        if len(atoms) < d:
            raise InputError(
                f"{where} has {len(atoms)} atoms, fewer than the {d} devices it should be spread over; "
                f"use devices=None (one device) or at most {len(atoms)} devices"
            )

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check(atoms)
        pairs = self._verlet.pairs(atoms.positions, atoms.cell.array, atoms.pbc)
        graph = self._graph(atoms, pairs)
        reasons = self.guard.structure(atoms.numbers, atoms.positions, pairs, cell=graph.cell)
        slots = self._grow_slots(len(atoms), len(pairs.dst))
        if self.sharded is not None:
            self._check_shardable(atoms, "structure")
        per_atom = "stresses" in properties and graph.is_periodic
        if per_atom and (self.sharded is not None or any(c.config.long_range is not None for c in self.checkpoints)):
            raise PropertyNotImplementedError(
                "per-atom stresses ('stresses') need local periodic models on one device (a long-range block's "
                "energy has no per-pair split); ask for 'stress' instead")
        extra = {"per_atom_stress": True} if per_atom else {}
        preds = [b.predict([graph], slots, **extra)[0] for b in self._backends()]
        self.results = self._combine(preds)
        self.results["extrapolation"] = self.guard.verdict(atoms.numbers, reasons, [p.energy for p in preds])

    def _combine(self, preds: list) -> dict:
        energies = np.array([p.energy for p in preds])
        forces = np.stack([p.forces for p in preds])
        atomic = np.stack([p.energies for p in preds])
        res = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "forces": forces.mean(axis=0).astype(forces.dtype),
            "energies": atomic.mean(axis=0).astype(atomic.dtype),
        }
        if preds[0].stress is not None:  # Voigt order xx yy zz yz xz xy, eV/Å³
            stress = np.mean([p.stress for p in preds], axis=0)
            res["stress"] = full_3x3_to_voigt_6_stress(stress).astype(forces.dtype)
        if preds[0].stresses is not None:  # per atom, Voigt, eV/Å³; they sum to the stress
            stresses = np.mean([p.stresses for p in preds], axis=0)
            res["stresses"] = full_3x3_to_voigt_6_stress(stresses).astype(forces.dtype)
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
        pairs, so repeated calls on similar structures reuse compiled code.  With
        ``devices=`` the structures are evaluated one at a time, each over the devices.
        """
        structures = list(structures)
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"evaluate_batch: batch_size={batch_size!r}; allowed: an integer ≥ 1")
        for k, a in enumerate(structures):
            self._check(a, f"structure {k}")
            if self.sharded is not None:
                self._check_shardable(a, f"structure {k}")
        per_call = 1 if self.sharded is not None else batch_size
        out: list[dict] = []
        for start in range(0, len(structures), per_call):
            chunk = structures[start : start + per_call]
            pairs = [neighbor_list(a.positions, self.cutoff, a.cell.array, a.pbc) for a in chunk]
            graphs = [self._graph(a, p, f"structure {start + k}") for k, (a, p) in enumerate(zip(chunk, pairs))]
            reasons = [self.guard.structure(g.numbers, g.positions, p, f"structure {start + k}", g.cell)
                       for k, (g, p) in enumerate(zip(graphs, pairs))]
            slots = Slots(node_bucket(max(len(a) for a in chunk)), edge_bucket(sum(len(g.dst) for g in graphs)),
                          min(per_call, 1 << (len(chunk) - 1).bit_length()))  # power-of-two graph slots
            per_model = [b.predict(graphs, slots) for b in self._backends()]
            for k, g in enumerate(graphs):
                preds = [pm[k] for pm in per_model]
                res = self._combine(preds)
                res["extrapolation"] = self.guard.verdict(g.numbers, reasons[k], [p.energy for p in preds],
                                                          f"structure {start + k}")
                out.append(res)
        return out

    def reset(self):
        super().reset()
        if getattr(self, "_backends_built", False):
            self._verlet.reset()
