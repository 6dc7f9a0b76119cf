"""The :class:`Dataset` container and its file formats (extxyz, ASE db, reference npz)."""

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

__all__ = ["Dataset", "read_dataset", "write_dataset", "split_indices", "fit_energy_shift"]


@dataclasses.dataclass
class Dataset:
    """Molecules with total energies and forces.

    Attributes:
      numbers: per molecule, atomic numbers (n,) int.
      positions: per molecule, positions (n, 3) in Å.
      energy: (F,) total energies in eV.
      forces: per molecule, forces (n, 3) in eV/Å.
      info: per molecule, a dict of metadata (kind, system, ...).
    """

    numbers: list
    positions: list
    energy: np.ndarray
    forces: list
    info: list = dataclasses.field(default_factory=list)

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

    def __len__(self) -> int:
        return len(self.numbers)

    def subset(self, idx: Sequence[int]) -> "Dataset":
        idx = [int(i) for i in idx]
        return Dataset([self.numbers[i] for i in idx], [self.positions[i] for i in idx], self.energy[idx],
                       [self.forces[i] for i in idx], [self.info[i] for i in idx])

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
        out = []
        for z, r, e, f, info in zip(self.numbers, self.positions, self.energy, self.forces, self.info):
            a = Atoms(z, r, info=dict(info))
            a.calc = SinglePointCalculator(a, energy=float(e), forces=np.asarray(f))
            out.append(a)
        return out

    @classmethod
    def from_atoms(cls, frames: Sequence[Atoms]) -> "Dataset":
        num, pos, ene, frc, info = [], [], [], [], []
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
        return cls(num, pos, np.array(ene), frc, info)


def read_dataset(path: str | Path) -> Dataset:
    """Read ``.extxyz``/``.xyz``, ``.db`` (ASE database) or ``.npz`` (reference layout)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as d:
            pos, z, e = d["positions"], d["atomic_numbers"], d["energy"]
            f = d["forces"] if "forces" in d.files else np.zeros_like(pos)
            mask = d["node_mask"].astype(bool) if "node_mask" in d.files else np.ones(z.shape, bool)
        z = np.rint(z).astype(np.int32)  # some reference files store atomic numbers as floats
        return Dataset([z[k][mask[k]] for k in range(len(e))], [pos[k][mask[k]].astype(np.float64) for k in range(len(e))],
                       np.asarray(e, np.float64).reshape(-1), [f[k][mask[k]].astype(np.float64) for k in range(len(e))])
    if suffix == ".db":
        from ase.db import connect

        return Dataset.from_atoms([row.toatoms(add_additional_information=True) for row in connect(path).select()])
    from ase.io import read

    return Dataset.from_atoms(read(path, index=":"))


def write_dataset(ds: Dataset, path: str | Path) -> None:
    """Write ``ds`` in the format given by the suffix (``.extxyz``, ``.db`` or ``.npz``).

    npz pads molecules of different sizes to the largest with a ``node_mask``.
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
        np.savez(path, positions=pos, atomic_numbers=z, energy=ds.energy, forces=frc, node_mask=mask)
        return
    if suffix == ".db":
        from ase.db import connect

        with connect(path, append=False) as db:
            for a in ds.to_atoms():
                db.write(a, data={"info": a.info})
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
