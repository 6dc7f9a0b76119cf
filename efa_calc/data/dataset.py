"""The :class:`Dataset` container and its file formats (extxyz, ASE db, reference npz).

Periodic frames carry their cell (3, 3) in Å (rows a, b, c), ``pbc`` (3,) and, where
labelled, the stress σ (3, 3) in eV/Å³ in ASE's sign (σ = (1/V) ∂E/∂ε, positive under
tension, no kinetic part).  An extxyz ``stress`` is read as is; a frame with only a
``virial`` W (eV, W = Σ r ⊗ f, positive under compression) gets σ = −W / V.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers as _Z
from ase.data import chemical_symbols

from efa_calc.checkpoint import EnergyShift
from efa_calc.errors import InputError

__all__ = ["Dataset", "read_dataset", "read_datasets", "write_dataset", "split_indices", "fit_energy_shift"]


@dataclasses.dataclass
class Dataset:
    """Molecules or periodic cells with total energies, forces and (periodic) stress.

    Attributes:
      numbers: per frame, atomic numbers (n,) int.
      positions: per frame, positions (n, 3) in Å.
      energy: (F,) total energies in eV.
      forces: per frame, forces (n, 3) in eV/Å.
      info: per frame, a dict of metadata (kind, system, ...).
      cells: ``None`` (molecules), or per frame the cell (3, 3) in Å, rows a, b, c
        (``None`` for a non-periodic frame).
      pbc: ``None``, or per frame the periodic directions (3,) bool.
      stress: ``None``, or per frame the stress (3, 3) in eV/Å³, ASE's sign (``None`` where
        a frame has no stress label).
    """

    numbers: list
    positions: list
    energy: np.ndarray
    forces: list
    info: list = dataclasses.field(default_factory=list)
    cells: list | None = None
    pbc: list | None = None
    stress: list | None = None

    def __post_init__(self):
        self.energy = np.asarray(self.energy, np.float64)
        if not self.info:
            self.info = [{} for _ in self.numbers]
        n = len(self.numbers)
        if not (len(self.positions) == len(self.forces) == len(self.energy) == len(self.info) == n):
            raise ValueError("dataset fields have different lengths")
        for k, (z, r, f) in enumerate(zip(self.numbers, self.positions, self.forces)):
            if np.shape(r) != (len(z), 3) or np.shape(f) != (len(z), 3):
                raise ValueError(f"frame {k}: positions/forces do not match {len(z)} atoms")
        if (self.cells is None) != (self.pbc is None):
            raise ValueError("cells and pbc are given together or not at all")
        if self.stress is not None and self.cells is None:
            raise ValueError("stress labels need cells")
        for name in ("cells", "pbc", "stress"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries for {n} frames")
        if self.cells is not None:
            self.pbc = [np.zeros(3, bool) if p is None else np.broadcast_to(np.asarray(p, bool), (3,)).copy() for p in self.pbc]
            self.cells = [None if c is None else np.asarray(c, np.float64).reshape(3, 3) for c in self.cells]
            for k, (c, p) in enumerate(zip(self.cells, self.pbc)):
                if p.any() and (c is None or abs(np.linalg.det(c)) < 1e-12):
                    raise ValueError(f"frame {k} is periodic (pbc={p.tolist()}) but its cell is missing or singular")
        if self.stress is not None:
            self.stress = [None if s is None else np.asarray(s, np.float64).reshape(3, 3) for s in self.stress]

    @property
    def periodic_mask(self) -> np.ndarray:
        """(F,) bool: which frames are periodic (any direction)."""
        if self.pbc is None:
            return np.zeros(len(self), bool)
        return np.array([bool(np.any(p)) for p in self.pbc], bool)

    @property
    def is_periodic(self) -> bool:
        """True when every frame is periodic, False when none is.

        Raises:
          InputError: for a mix of periodic and non-periodic frames (one model is trained
            for one or the other).
        """
        m = self.periodic_mask
        if m.any() and not m.all():
            raise InputError(f"the dataset mixes {int(m.sum())} periodic and {int((~m).sum())} non-periodic "
                             "frames; train periodic and molecular models on separate datasets")
        return bool(m.any())

    @property
    def has_stress(self) -> bool:
        """True when every frame has a stress label."""
        return self.stress is not None and len(self) > 0 and all(s is not None for s in self.stress)

    def __len__(self) -> int:
        return len(self.numbers)

    def subset(self, idx: Sequence[int]) -> "Dataset":
        idx = [int(i) for i in idx]
        pick = (lambda v: None if v is None else [v[i] for i in idx])
        return Dataset([self.numbers[i] for i in idx], [self.positions[i] for i in idx], self.energy[idx],
                       [self.forces[i] for i in idx], [self.info[i] for i in idx],
                       pick(self.cells), pick(self.pbc), pick(self.stress))

    def select(self, include: dict | None) -> "Dataset":
        """The frames whose ``info[key]`` is one of ``include[key]`` for every key
        (e.g. ``{"n_carbons": [3, 5, 7]}``); ``None`` or ``{}`` keeps all.

        Raises:
          ValueError: a key missing from some frame's info, or nothing selected.
        """
        if not include:
            return self
        missing = sorted({k for k in include for i in self.info if k not in i})
        if missing:
            raise ValueError(f"frames lack the info keys {missing} used to select them")
        idx = [k for k, i in enumerate(self.info) if all(i[key] in allowed for key, allowed in include.items())]
        if not idx:
            raise ValueError(f"no frame matches {include}")
        return self.subset(idx)

    @property
    def species(self) -> list[str]:
        """Chemical symbols present, by atomic number."""
        zs = sorted({int(z) for zz in self.numbers for z in zz})
        return [chemical_symbols[z] for z in zs]

    def to_atoms(self) -> list[Atoms]:
        """ASE Atoms with a SinglePointCalculator holding energy (eV), forces (eV/Å) and,
        for periodic frames with a label, stress (eV/Å³)."""
        out = []
        for k, (z, r, e, f, info) in enumerate(zip(self.numbers, self.positions, self.energy, self.forces, self.info)):
            periodic = self.pbc is not None and bool(np.any(self.pbc[k]))
            a = Atoms(z, r, info=dict(info), cell=self.cells[k] if periodic else None,
                      pbc=self.pbc[k] if periodic else False)
            results = {"energy": float(e), "forces": np.asarray(f)}
            if periodic and self.stress is not None and self.stress[k] is not None:
                results["stress"] = self.stress[k]
            a.calc = SinglePointCalculator(a, **results)
            out.append(a)
        return out

    @classmethod
    def from_atoms(cls, frames: Sequence[Atoms]) -> "Dataset":
        """A dataset of ASE Atoms with stored energy and forces; periodic frames keep their
        cell, pbc and stress (the stored ``stress``, else −``info['virial']``/V)."""
        num, pos, ene, frc, info, cells, pbc, stress = [], [], [], [], [], [], [], []
        for k, a in enumerate(frames):
            try:
                e, f = a.get_potential_energy(), a.get_forces()
            except Exception as exc:  # no calculator / no stored results
                raise ValueError(f"frame {k} has no stored energy and forces ({exc})") from exc
            num.append(np.asarray(a.numbers, np.int32))
            pos.append(np.asarray(a.positions, np.float64))
            ene.append(float(e))
            frc.append(np.asarray(f, np.float64))
            info.append({k2: v for k2, v in a.info.items() if isinstance(v, (int, float, str, bool, np.integer, np.floating))})
            periodic = bool(np.any(a.pbc))
            cells.append(np.array(a.cell[:], np.float64) if periodic else None)
            pbc.append(np.array(a.pbc, bool))
            stress.append(_frame_stress(a, k) if periodic else None)
        if not any(np.any(p) for p in pbc):
            return cls(num, pos, np.array(ene), frc, info)
        return cls(num, pos, np.array(ene), frc, info, cells, pbc, stress if any(s is not None for s in stress) else None)


def _frame_stress(a: Atoms, k: int) -> np.ndarray | None:
    """The stress (3, 3) eV/Å³ of a periodic frame: its stored stress, else −virial/V, else None."""
    results = a.calc.results if a.calc is not None else {}
    if "stress" in results:
        from ase.stress import voigt_6_to_full_3x3_stress

        s = np.asarray(results["stress"], np.float64)
        return voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s.reshape(3, 3)
    virial = a.info.get("virial", results.get("virial"))
    if virial is None:
        return None
    if not a.pbc.all():
        raise ValueError(f"frame {k}: a virial needs a volume, but pbc={a.pbc.tolist()} is not periodic in 3D")
    w = np.asarray(virial, np.float64)
    if w.shape == (6,):  # Voigt xx yy zz yz xz xy
        from ase.stress import voigt_6_to_full_3x3_stress

        w = voigt_6_to_full_3x3_stress(w)
    return -w.reshape(3, 3) / a.get_volume()


def read_dataset(path: str | Path) -> Dataset:
    """Read ``.extxyz``/``.xyz``, ``.db`` (ASE database) or ``.npz`` (reference layout)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as d:
            pos, z, e = d["positions"], d["atomic_numbers"], d["energy"]
            f = d["forces"] if "forces" in d.files else np.zeros_like(pos)
            mask = d["node_mask"].astype(bool) if "node_mask" in d.files else np.ones(z.shape, bool)
            cells = list(d["cells"]) if "cells" in d.files else None
            pbc = list(d["pbc"]) if "pbc" in d.files else None
            stress = list(d["stress"]) if "stress" in d.files else None
        z = np.rint(z).astype(np.int32)  # some reference files store atomic numbers as floats
        return Dataset([z[k][mask[k]] for k in range(len(e))], [pos[k][mask[k]].astype(np.float64) for k in range(len(e))],
                       np.asarray(e, np.float64).reshape(-1), [f[k][mask[k]].astype(np.float64) for k in range(len(e))],
                       cells=cells, pbc=pbc, stress=stress)
    if suffix == ".db":
        from ase.db import connect

        return Dataset.from_atoms([row.toatoms(add_additional_information=True) for row in connect(path).select()])
    from ase.io import read

    return Dataset.from_atoms(read(path, index=":"))


def read_datasets(paths: Sequence[str | Path]) -> Dataset:
    """One dataset of the frames of every file in ``paths``, in order (one file: :func:`read_dataset`)."""
    if len(paths) == 1:
        return read_dataset(paths[0])
    return Dataset.from_atoms([a for p in paths for a in read_dataset(p).to_atoms()])


def write_dataset(ds: Dataset, path: str | Path) -> None:
    """Write ``ds`` in the format given by the suffix (``.extxyz``, ``.db`` or ``.npz``).

    npz pads molecules of different sizes to the largest with a ``node_mask``; periodic
    datasets add ``cells`` (F, 3, 3) Å, ``pbc`` (F, 3) and ``stress`` (F, 3, 3) eV/Å³.
    extxyz writes the stress as ASE's ``stress`` (eV/Å³).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        n = max(len(z) for z in ds.numbers)
        k = len(ds)
        z = np.zeros((k, n), np.int32)
        pos = np.zeros((k, n, 3))
        frc = np.zeros((k, n, 3))
        mask = np.zeros((k, n), bool)
        for i in range(k):
            m = len(ds.numbers[i])
            z[i, :m], pos[i, :m], frc[i, :m], mask[i, :m] = ds.numbers[i], ds.positions[i], ds.forces[i], True
        extra = {}
        if ds.cells is not None:
            if not ds.is_periodic:
                raise ValueError("npz stores either periodic or molecular frames; this dataset has no periodic frame")
            extra = {"cells": np.stack(ds.cells), "pbc": np.stack(ds.pbc)}  # (F, 3, 3) Å, (F, 3)
            if ds.has_stress:
                extra["stress"] = np.stack(ds.stress)  # (F, 3, 3) eV/Å³
        np.savez(path, positions=pos, atomic_numbers=z, energy=ds.energy, forces=frc, node_mask=mask, **extra)
        return
    if suffix == ".db":
        from ase.db import connect

        with connect(path, append=False) as db:
            for a in ds.to_atoms():
                # numpy scalars (as ASE's extxyz reader returns them) are not ase.db-encodable
                db.write(a, data={"info": {k: v.item() if isinstance(v, np.generic) else v for k, v in a.info.items()}})
        return
    from ase.io import write

    write(path, ds.to_atoms(), format="extxyz")


def split_indices(n: int, sizes: Sequence[int | float], seed: int = 0) -> list[np.ndarray]:
    """Random disjoint index sets of the given sizes (ints, or fractions of ``n``).

    A final size of ``-1`` takes the rest.  Deterministic for a given ``seed``.
    """
    perm = np.random.default_rng(seed).permutation(n)
    counts = []
    for s in sizes:
        counts.append(n - sum(counts) if s == -1 else int(round(s * n)) if isinstance(s, float) and s < 1 else int(s))
    if sum(counts) > n:
        raise ValueError(f"split sizes {counts} exceed the {n} frames")
    out, start = [], 0
    for c in counts:
        out.append(np.sort(perm[start : start + c]))
        start += c
    return out


def fit_energy_shift(ds: Dataset, species: Sequence[str] | None = None) -> EnergyShift:
    """Per-element energies (eV) minimising Σ (E − Σ_i e[Z_i])², by least squares.

    Where the element counts are linearly dependent (CH3XY always has three H per C) the
    fit is not unique.  We then take the solution closest to a Thomas–Fermi prior,
    e[Z] = α·Z^(7/3) with one fitted scale α (atomic energies grow as Z^(7/3)): e =
    prior plus the correction of minimum norm relative to it.  A plain minimum-norm fit gives, for the SN2
    data, +22 300 eV to F and −45 000 eV to Br — harmless for totals, absurd per-atom
    energies.  Where the counts are independent the result is the unique fit.
    """
    species = list(species or ds.species)
    counts = np.zeros((len(ds), len(species)))
    col = {_Z[s]: k for k, s in enumerate(species)}
    for i, z in enumerate(ds.numbers):
        for zz in z:
            counts[i, col[int(zz)]] += 1
    tf = np.array([_Z[s] ** (7.0 / 3.0) for s in species])
    alpha = float(np.dot(counts @ tf, ds.energy) / np.dot(counts @ tf, counts @ tf))
    prior = alpha * tf
    # minimum-norm in relative terms (δ_Z / prior_Z), so a light element is not handed the
    # correction of a heavy one
    rel, *_ = np.linalg.lstsq(counts * np.abs(prior), ds.energy - counts @ prior, rcond=None)
    return EnergyShift({s: float(p + abs(p) * d) for s, p, d in zip(species, prior, rel)}, 0.0)
