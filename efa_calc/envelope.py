"""The training envelope of a model and the extrapolation guard built on it.

At training time a checkpoint records what its model has seen (:class:`Envelope`):

* the elements;
* per element pair, the smallest interatomic distance (Å) among pairs within the cutoff;
* per element, the largest number of neighbours within the cutoff;
* the range of atom counts;
* the range of per-atom interaction energies ``(E − Σ_i shift(Z_i)) / N`` (eV/atom), i.e.
  the reference energy minus the checkpoint's per-element energy shift, per atom;
* periodic training data (``periodic``): pair distances and neighbour counts over periodic
  images, the range of mass densities ρ = Σ m_i / V in **g/cm³** (3D-periodic frames), of
  the cell-vector lengths |a|, |b|, |c| (Å) and of the shortest cell height
  h = min_k V / |a_i × a_j| (Å, the distance between opposite faces; periodic directions
  only).  A structure is flagged for a density outside the range widened by
  :data:`DENSITY_MARGIN`, or a shortest height below :data:`HEIGHT_MARGIN` × the training
  minimum (smaller cells put an atom's own images where training never had them).  The atom
  count is not checked for periodic envelopes: a local model is size-extensive, and larger
  cells of the same material are in its domain.

:meth:`Envelope.check` compares a structure (and, after evaluation, its predicted energy)
with the envelope and returns readable reasons, e.g. ``"C–C distance 0.62 Å, the training
data's minimum is 1.15 Å"``.  Small excursions that molecular dynamics at room temperature
makes beyond the extremes of a few thousand training frames are tolerated by the margins
below (measured on 300 K NVT of C9H4 and the SN2 complex and on the held-out test splits of
the bundled models: none of them is flagged).

Atoms closer than :data:`PHYSICAL_MIN_DISTANCE_A` (0.3 Å) are always an error, whatever
the envelope (:func:`check_physical_distances`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

from efa_calc.errors import InputError

__all__ = [
    "Envelope",
    "PHYSICAL_MIN_DISTANCE_A",
    "DISTANCE_MARGIN",
    "NEIGHBOR_MARGIN",
    "ENERGY_MARGIN_EV",
    "ENERGY_MARGIN_FRACTION",
    "DENSITY_MARGIN",
    "HEIGHT_MARGIN",
    "cell_geometry",
    "check_physical_distances",
]

#: Atoms closer than this (Å) are always an error: no force field is meaningful there.
PHYSICAL_MIN_DISTANCE_A = 0.3
#: A pair distance is flagged below DISTANCE_MARGIN × the training minimum of its element pair.
DISTANCE_MARGIN = 0.85
#: A neighbour count is flagged above the training maximum + max(NEIGHBOR_MARGIN, 10 %).
NEIGHBOR_MARGIN = 2
#: The per-atom energy is flagged outside the training range widened on both sides by
#: max(ENERGY_MARGIN_EV, ENERGY_MARGIN_FRACTION × its width) (eV/atom).
ENERGY_MARGIN_EV = 0.1
ENERGY_MARGIN_FRACTION = 0.25
#: Periodic: the density is flagged outside [lo / (1 + m), hi · (1 + m)] (g/cm³).
DENSITY_MARGIN = 0.1
#: Periodic: the shortest cell height is flagged below HEIGHT_MARGIN × the training minimum.
HEIGHT_MARGIN = 0.9

_AMU_G = 1.66053906660e-24  # g per amu
_A3_CM3 = 1e-24  # cm³ per Å³


def cell_geometry(numbers, cell, pbc) -> dict:
    """Density (g/cm³, ``None`` unless periodic in 3D), cell-vector lengths and heights (Å)
    of the periodic directions of a cell (3, 3) (rows a, b, c, Å)."""
    from ase.data import atomic_masses

    cell = np.asarray(cell, np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
    volume = abs(float(np.linalg.det(cell)))
    heights = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    mass = float(np.sum(atomic_masses[np.asarray(numbers, int)]))
    return {"density": mass * _AMU_G / (volume * _A3_CM3) if pbc.all() else None,
            "lengths": [float(np.linalg.norm(cell[k])) for k in range(3) if pbc[k]],
            "heights": [float(heights[k]) for k in range(3) if pbc[k]]}


def _pair_name(z1: int, z2: int) -> str:
    a, b = sorted((int(z1), int(z2)))
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


def _symbol(z: int) -> str:
    return chemical_symbols[int(z)] if 0 <= int(z) < len(chemical_symbols) else f"Z={int(z)}"


def check_physical_distances(positions: np.ndarray, where: str = "structure") -> None:
    """Raise :class:`InputError` if two atoms are closer than 0.3 Å (eg. two atoms at one spot)."""
    pos = np.asarray(positions, np.float64)
    if len(pos) < 2:
        return
    from scipy.spatial import cKDTree

    close = cKDTree(pos).query_pairs(PHYSICAL_MIN_DISTANCE_A, output_type="ndarray")
    if len(close):
        d = np.linalg.norm(pos[close[:, 0]] - pos[close[:, 1]], axis=1)
        k = int(np.argmin(d))
        i, j = (int(v) for v in close[k])
        raise InputError(
            f"{where}: atoms {i} and {j} are {d[k]:.3f} Å apart, closer than the physical minimum of "
            f"{PHYSICAL_MIN_DISTANCE_A} Å ({len(close)} such pair(s)); no model can evaluate this"
        )


def pair_distances(positions: np.ndarray, dst, src, shifts=None, cell=None) -> np.ndarray:
    """|r_src − r_dst + n·cell| of every pair (Å); the image term only for periodic pairs."""
    disp = positions[src] - positions[dst]
    if shifts is not None and cell is not None:
        disp = disp + np.asarray(shifts, np.float64) @ np.asarray(cell, np.float64)
    return np.linalg.norm(disp, axis=1)


def _pair_stats(numbers: np.ndarray, positions: np.ndarray, dst: np.ndarray, src: np.ndarray, cutoff: float,
                shifts=None, cell=None):
    """Min distance per element pair and neighbour count per atom, for pairs within ``cutoff``."""
    numbers = np.asarray(numbers, int)
    if len(dst):
        d = pair_distances(positions, dst, src, shifts, cell)
        keep = d <= cutoff
        dst, src, d = dst[keep], src[keep], d[keep]
    else:
        d = np.zeros(0)
    counts = np.bincount(dst, minlength=len(numbers)) if len(dst) else np.zeros(len(numbers), int)
    mins: dict[str, tuple[float, int, int]] = {}
    if len(d):
        za, zb = numbers[dst], numbers[src]
        key = np.minimum(za, zb) * 1000 + np.maximum(za, zb)
        order = np.lexsort((d, key))
        first = np.r_[True, key[order][1:] != key[order][:-1]]
        for k in order[first]:
            mins[_pair_name(za[k], zb[k])] = (float(d[k]), int(dst[k]), int(src[k]))
    return mins, counts


@dataclasses.dataclass
class Envelope:
    """What a model has seen in training (lengths in Å, energies in eV/atom).

    Attributes:
      elements: chemical symbols present in the training structures.
      cutoff: the local cutoff (Å) the pair statistics refer to.
      min_distance: ``"C-H"`` (symbols by atomic number) -> smallest distance (Å) of
        that pair within the cutoff.
      max_neighbors: symbol -> largest number of neighbours within the cutoff.
      num_atoms: [smallest, largest] atom count.
      energy_per_atom: [lowest, highest] of (E − Σ_i shift(Z_i)) / N in eV/atom.
      num_frames: training structures the envelope was taken from.
      source: where they came from (free text).
      periodic: trained on periodic cells (the fields below are then set; molecular
        envelopes have ``None`` and do not write them).
      density_g_cm3: [lowest, highest] mass density in g/cm³.
      cell_length_A: [shortest, longest] cell-vector length in Å (periodic directions).
      cell_height_A: [smallest, largest] shortest cell height per frame in Å.
    """

    elements: list
    cutoff: float
    min_distance: dict
    max_neighbors: dict
    num_atoms: list
    energy_per_atom: list
    num_frames: int = 0
    source: str = ""
    periodic: bool = False
    density_g_cm3: list | None = None
    cell_length_A: list | None = None
    cell_height_A: list | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_structures(
        cls,
        numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        energies: Sequence[float],
        cutoff: float,
        energy_shift=None,
        source: str = "",
        cells: Sequence | None = None,
        pbc: Sequence | None = None,
    ) -> "Envelope":
        """The envelope of training structures with reference energies (eV) ``energies``;
        ``energy_shift`` is the checkpoint's :class:`~efa_calc.checkpoint.EnergyShift`.
        ``cells`` (3, 3) Å and ``pbc`` (3,) per structure make a periodic envelope (pairs over
        periodic images; every structure must then be periodic)."""
        from efa_calc.graphs.neighbors import neighbor_list

        elements: set[int] = set()
        mins: dict[str, float] = {}
        nmax: dict[str, int] = {}
        sizes, e_atom, geometry = [], [], []
        periodic = pbc is not None and any(np.any(p) for p in pbc)
        if periodic and not all(np.any(p) for p in pbc):
            raise ValueError("a periodic envelope needs every structure periodic (mixed pbc given)")
        for k, (z, r, e) in enumerate(zip(numbers, positions, energies)):
            z, r = np.asarray(z, int), np.asarray(r, np.float64)
            elements.update(int(v) for v in z)
            if periodic:
                dst, src, shifts = neighbor_list(r, cutoff, cells[k], pbc[k])
                pm, counts = _pair_stats(z, r, dst, src, cutoff, shifts, cells[k])
                geometry.append(cell_geometry(z, cells[k], pbc[k]))
            else:
                dst, src = neighbor_list(r, cutoff)[:2]
                pm, counts = _pair_stats(z, r, dst, src, cutoff)
            for k, (d, _, _) in pm.items():
                mins[k] = min(mins.get(k, math.inf), d)
            for zz in np.unique(z):
                s = _symbol(zz)
                nmax[s] = max(nmax.get(s, 0), int(counts[z == zz].max()))
            sizes.append(len(z))
            shift = float(np.sum(energy_shift.atomic(z))) if energy_shift is not None else 0.0
            e_atom.append((float(e) - shift) / len(z))
        if not sizes:
            raise ValueError("an envelope needs at least one training structure")
        extra = {}
        if periodic:
            dens = [g["density"] for g in geometry if g["density"] is not None]
            lengths = [v for g in geometry for v in g["lengths"]]
            heights = [min(g["heights"]) for g in geometry]
            extra = {"periodic": True, "density_g_cm3": [round(min(dens), 5), round(max(dens), 5)] if dens else None,
                     "cell_length_A": [round(min(lengths), 4), round(max(lengths), 4)],
                     "cell_height_A": [round(min(heights), 4), round(max(heights), 4)]}
        return cls(
            elements=[_symbol(z) for z in sorted(elements)],
            cutoff=float(cutoff),
            min_distance={k: round(v, 4) for k, v in sorted(mins.items())},
            max_neighbors=dict(sorted(nmax.items())),
            num_atoms=[int(min(sizes)), int(max(sizes))],
            energy_per_atom=[float(min(e_atom)), float(max(e_atom))],
            num_frames=len(sizes),
            source=source,
            **extra,
        )

    @classmethod
    def from_dataset(cls, ds, cutoff: float, energy_shift=None, source: str = "") -> "Envelope":
        """The envelope of an :class:`efa_calc.data.Dataset` (e.g. the training split);
        periodic for a periodic dataset."""
        return cls.from_structures(ds.numbers, ds.positions, ds.energy, cutoff, energy_shift, source,
                                   ds.cells, ds.pbc)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["units"] = {"min_distance": "Angstrom", "cutoff": "Angstrom", "energy_per_atom": "eV/atom"}
        if not self.periodic:  # molecular envelopes are written exactly as before
            for k in ("periodic", "density_g_cm3", "cell_length_A", "cell_height_A"):
                d.pop(k)
        else:
            d["units"].update(density_g_cm3="g/cm^3", cell_length_A="Angstrom", cell_height_A="Angstrom")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Envelope":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    # ------------------------------------------------------------------ checks
    def energy_bounds(self) -> tuple[float, float]:
        """The accepted per-atom energy range (eV/atom): the training range plus margins."""
        lo, hi = self.energy_per_atom
        m = max(ENERGY_MARGIN_EV, ENERGY_MARGIN_FRACTION * (hi - lo))
        return lo - m, hi + m

    def neighbor_bound(self, symbol: str) -> int:
        n = int(self.max_neighbors[symbol])
        return n + max(NEIGHBOR_MARGIN, int(math.ceil(0.1 * n)))

    def check_structure(self, numbers, positions, pairs=None, cell=None, pbc=None) -> list[tuple[str, str]]:
        """``(key, reason)`` for every way the structure lies outside the envelope.

        ``pairs`` = (dst, src) or (dst, src, image shifts) within at least the cutoff
        (computed, non-periodic, when ``None``; periodic structures must pass theirs);
        ``cell`` (3, 3) Å for periodic pairs, ``pbc`` (3,) its periodic directions (all three
        when ``None``), used by the density and cell-height checks of periodic envelopes.
        """
        from efa_calc.graphs.neighbors import neighbor_pairs

        numbers = np.asarray(numbers, int)
        positions = np.asarray(positions, np.float64)
        out: list[tuple[str, str]] = []
        unseen = sorted({_symbol(z) for z in numbers} - set(self.elements))
        if unseen:
            out.append(("elements", f"element(s) {', '.join(unseen)} never occur in the training data "
                                    f"(it has {', '.join(self.elements)})"))
        n = len(numbers)
        lo, hi = self.num_atoms
        if not self.periodic and not lo <= n <= hi:
            out.append(("num_atoms", f"{n} atoms, the training data has {lo}–{hi}"))
        if self.periodic:
            out += self._check_cell(numbers, cell, pbc)
        dst, src, *shifts = pairs if pairs is not None else neighbor_pairs(positions, self.cutoff)
        shifts = shifts[0] if shifts else None
        mins, counts = _pair_stats(numbers, positions, np.asarray(dst), np.asarray(src), self.cutoff, shifts, cell)
        for key, (d, i, j) in mins.items():
            ref = self.min_distance.get(key)
            name = key.replace("-", "–")
            if ref is None:
                if not unseen:
                    out.append((f"pair:{key}", f"{name} pair at {d:.2f} Å (atoms {i}, {j}): the training data has "
                                               f"no {name} pair within the {self.cutoff:g} Å cutoff"))
            elif d < DISTANCE_MARGIN * ref:
                out.append((f"pair:{key}", f"{name} distance {d:.2f} Å (atoms {i}, {j}), the training data's "
                                           f"minimum is {ref:.2f} Å"))
        for z in np.unique(numbers):
            s = _symbol(z)
            if s not in self.max_neighbors:
                continue
            c = counts[numbers == z]
            k = int(np.argmax(c))
            if c[k] > self.neighbor_bound(s):
                atom = int(np.flatnonzero(numbers == z)[k])
                out.append((f"neighbors:{s}", f"{s} atom {atom} has {int(c[k])} neighbours within {self.cutoff:g} Å, "
                                              f"the training data's maximum is {self.max_neighbors[s]}"))
        return out

    def _check_cell(self, numbers, cell, pbc) -> list[tuple[str, str]]:
        """Periodic envelopes: density and shortest-height checks of the structure's cell."""
        if cell is None:
            return [("cell", "a non-periodic structure; the model was trained on periodic cells only")]
        g = cell_geometry(numbers, cell, np.ones(3, bool) if pbc is None else pbc)
        out = []
        if self.density_g_cm3 is not None and g["density"] is not None:
            lo, hi = self.density_g_cm3
            if not lo / (1 + DENSITY_MARGIN) <= g["density"] <= hi * (1 + DENSITY_MARGIN):
                out.append(("density", f"density {g['density']:.3f} g/cm³, the training data spans {lo:.3f}–{hi:.3f} g/cm³"))
        if self.cell_height_A is not None and g["heights"] and min(g["heights"]) < HEIGHT_MARGIN * self.cell_height_A[0]:
            out.append(("cell_height", f"shortest cell height {min(g['heights']):.2f} Å, the training data's "
                                       f"smallest is {self.cell_height_A[0]:.2f} Å"))
        return out

    def check_energy(self, energy_per_atom: float) -> list[tuple[str, str]]:
        """``(key, reason)`` if the predicted per-atom interaction energy (eV/atom) is outside."""
        lo, hi = self.energy_bounds()
        if not np.isfinite(energy_per_atom) or not lo <= energy_per_atom <= hi:
            a, b = self.energy_per_atom
            return [("energy", f"predicted energy {energy_per_atom:.4g} eV/atom (relative to the per-element "
                               f"shifts), the training data spans {a:.3f} to {b:.3f} eV/atom")]
        return []
