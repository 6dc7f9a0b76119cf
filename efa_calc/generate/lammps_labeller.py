"""Reference labels from LAMMPS: energy, forces and stress of ASE ``Atoms`` for a classical potential.

The potential is given as LAMMPS input commands in ``units metal`` (e.g.
``["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"]``); atom types are
numbered in the order of ``species``.  Needs the ``lammps`` extra (``efa-calc[lammps]``).

Cells.  ASE cells are rows of lattice vectors (Å) in any orientation; LAMMPS wants a
restricted triclinic box (a along x, b in the xy plane: a lower-triangular cell matrix with
small tilts).  :class:`ase.calculators.lammps.Prism` gives the rotation ``R`` (3×3,
orthogonal) with ``cell_lammps = cell_ase @ R`` and the reduced, equivalent tilts; positions
go in as ``r @ R`` (wrapped), forces come back as ``f_lammps @ Rᵀ`` and the stress as
``R σ_lammps Rᵀ``.  Non-periodic directions are shrink-wrapped (``boundary s``); a missing
(zero) cell vector there is completed orthogonally (:func:`ase.geometry.complete_cell`).

Stress.  LAMMPS's ``compute pressure NULL virial`` is the virial part of the pressure tensor
(bar, positive under compression; no kinetic term):  P_ab = W_ab / V with the virial
W_ab = Σ r_a f_b (pair, bond, k-space, ... contributions).  ASE's stress is the strain
derivative of the energy per volume, positive under tension:

    σ_ab = (1/V) ∂E/∂ε_ab = −W_ab / V = −P_ab,      in eV/Å³ (1 bar = ``ase.units.bar`` eV/Å³),

returned in Voigt order (xx, yy, zz, yz, xz, xy).  Only for cells periodic in all three
directions; otherwise the stress is ``None``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.lammps import Prism
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import complete_cell

from efa_calc.generate.runner import Label
from efa_calc.interfaces.lammps_runtime import load_lammps, new_lammps

__all__ = ["LammpsLabeller", "setup_lammps_system", "lammps_state", "lammps_frame", "rms_displacement"]

# LAMMPS's global pressure vector order: pxx, pyy, pzz, pxy, pxz, pyz
_LMP_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def setup_lammps_system(lmp, atoms: Atoms, species: Sequence[str], pair_commands: Sequence[str],
                        masses: dict[str, float] | None = None, charges: dict[str, float] | None = None) -> Prism:
    """Clear ``lmp`` and load ``atoms`` (units metal) with the potential.

    Atom IDs are 1..N in the order of ``atoms``; the type of atom i is 1 + its index in ``species``.
    Without ``charges`` the atoms are ``atom_style atomic``; with ``charges`` (elementary
    charges e by symbol, e.g. ``{"Na": 1.0, "Cl": -1.0}``) they are ``atom_style charge`` and
    every atom of a type carries its symbol's charge (a k-space solver then needs a fully
    periodic cell: slabs go in with a vacuum gap).

    Returns:
      The :class:`~ase.calculators.lammps.Prism` that maps ASE to LAMMPS coordinates.

    Raises:
      ValueError: an element of ``atoms`` is missing from ``species`` (or from ``charges``),
        a periodic cell vector is zero, or ``charges`` are given for a cell that is not
        periodic in all three directions.
    """
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(species))
    if unknown:
        raise ValueError(f"atoms hold {unknown}, not in species={list(species)}")
    if charges is not None:
        uncharged = sorted(set(species) - set(charges))
        if uncharged:
            raise ValueError(f"charges={dict(charges)} lack species {uncharged}")
        if not np.all(atoms.pbc):
            raise ValueError(f"charged atoms need pbc=(True, True, True) for the Ewald sum, got pbc={atoms.pbc.tolist()}; "
                             "put a slab or cluster in a periodic cell with a vacuum gap")
    pbc = np.asarray(atoms.pbc, bool)
    lengths = atoms.cell.lengths()
    if np.any(pbc & (lengths == 0.0)):
        raise ValueError(f"periodic direction(s) {np.flatnonzero(pbc & (lengths == 0.0)).tolist()} have a zero cell vector")
    # the vectors of shrink-wrapped directions only orient the box: replace them by an
    # orthogonal completion (LAMMPS forbids tilt towards a non-periodic direction)
    cell = complete_cell(np.where(pbc[:, None], atoms.cell.array, 0.0))
    prism = Prism(cell, pbc=pbc, reduce_cell=True)
    lx, ly, lz, xy, xz, yz = (repr(float(v)) for v in prism.get_lammps_prism())
    boundary = " ".join("p" if p else "s" for p in pbc)
    # an orthogonal cell goes in as a block: with a zero-tilt prism box, the same NaCl input gave results
    # that depended on earlier LAMMPS instances in the process (1e-9 Å, and once "Lost atoms" in CI);
    # with a block box they are reproducible (tests/test_nacl_data.py::test_lammps_md_does_not_depend_on_earlier_instances)
    tilted = any(float(t) != 0.0 for t in (xy, xz, yz))
    region = (f"region box prism 0 {lx} 0 {ly} 0 {lz} {xy} {xz} {yz} units box" if tilted
              else f"region box block 0 {lx} 0 {ly} 0 {lz} units box")
    masses = masses or {}
    lmp.commands_list([
        "clear", "units metal", f"atom_style {'atomic' if charges is None else 'charge'}", "atom_modify map array",
        f"boundary {boundary}",
        region,
        f"create_box {len(species)} box",
    ])
    for t, s in enumerate(species, start=1):
        m = masses.get(s, atomic_masses[atomic_numbers[s]])
        lmp.command(f"mass {t} {float(m)!r}")
    types = [1 + list(species).index(s) for s in symbols]
    x = prism.vector_to_lammps(atoms.positions, wrap=True)
    n = lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, x.ravel().tolist(), shrinkexceed=True)
    if n != len(atoms):
        raise RuntimeError(f"LAMMPS created {n} of {len(atoms)} atoms")
    if charges is not None:
        for t, s in enumerate(species, start=1):
            lmp.command(f"set type {t} charge {float(charges[s])!r}")
    lmp.commands_list(list(pair_commands))
    lmp.commands_list(["compute efa_vir all pressure NULL virial", "thermo_style custom step pe",
                       "thermo_modify norm no"])
    return prism


def _per_atom(lmp, name: str, n: int) -> np.ndarray:
    """Per-atom array ``name`` (n, 3) in the order of atom IDs 1..n (serial LAMMPS)."""
    ids = np.asarray(lmp.numpy.extract_atom("id"))[:n]
    arr = np.array(lmp.numpy.extract_atom(name)[:n], dtype=np.float64)
    out = np.empty_like(arr)
    out[ids - 1] = arr
    return out


def lammps_state(lmp, prism: Prism, n: int, periodic: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces (n, 3) eV/Å and Voigt stress (6,) eV/Å³ (``None`` unless periodic)
    of the current LAMMPS state, rotated to ASE's frame; call after ``run 0``."""
    consts = load_lammps()
    energy = float(lmp.get_thermo("pe"))
    forces = _per_atom(lmp, "f", n) @ prism.rot_mat.T  # rotation only: never wrap forces
    if not periodic:
        return energy, forces, None
    p = lmp.numpy.extract_compute("efa_vir", consts.LMP_STYLE_GLOBAL, consts.LMP_TYPE_VECTOR)
    p_tensor = np.zeros((3, 3))
    for (a, b), value in zip(_LMP_PAIRS, np.asarray(p, np.float64)):
        p_tensor[a, b] = p_tensor[b, a] = value
    sigma = -prism.tensor2_to_ase(p_tensor) * units.bar
    voigt = sigma[(0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)]
    return energy, forces, voigt


def lammps_frame(lmp, n: int, species: Sequence[str]) -> Atoms:
    """The current LAMMPS box, types and positions as fully periodic ``Atoms`` (LAMMPS orientation, Å);
    type t is ``species[t - 1]``."""
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lo, hi = np.asarray(boxlo), np.asarray(boxhi)
    cell = np.array([[hi[0] - lo[0], 0.0, 0.0], [xy, hi[1] - lo[1], 0.0], [xz, yz, hi[2] - lo[2]]])
    ids = np.asarray(lmp.numpy.extract_atom("id"))[:n] - 1
    pos, types = np.empty((n, 3)), np.empty(n, int)
    pos[ids] = np.array(lmp.numpy.extract_atom("x")[:n], dtype=np.float64) - lo
    types[ids] = np.asarray(lmp.numpy.extract_atom("type"))[:n]
    return Atoms([species[t - 1] for t in types], pos, cell=cell, pbc=True)


def rms_displacement(frame: Atoms, sites: Atoms) -> float:
    """RMS distance (Å) of the atoms of ``frame`` from ``sites`` (minimum image, mean drift removed)."""
    d = frame.positions - sites.positions
    frac = np.linalg.solve(frame.cell.array.T, d.T).T
    d = (frac - np.round(frac)) @ frame.cell.array
    d -= d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


class LammpsLabeller:
    """Energies (eV), forces (eV/Å) and stresses (eV/Å³, ASE sign and Voigt order) from LAMMPS.

    Args:
      pair_commands: LAMMPS commands (units metal) that define the potential for atom types
        1..len(species), e.g. ``["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"]``.
      species: chemical symbols of LAMMPS types 1, 2, ... (every element of the frames).
      masses: optional masses (amu) by symbol (they do not change the labels).
      charges: optional fixed charges (e) by symbol: ``atom_style charge``, for potentials with
        a k-space part (e.g. ``pair_style born/coul/long`` + ``kspace_style ewald``); frames
        must then be periodic in all three directions.

    Calling it on an ``Atoms`` returns a :class:`~efa_calc.generate.runner.Label` whose
    ``stress`` is set for fully periodic cells.
    """

    def __init__(self, pair_commands: Sequence[str], species: Sequence[str], masses: dict[str, float] | None = None,
                 charges: dict[str, float] | None = None):
        if isinstance(pair_commands, str) or not pair_commands:
            raise ValueError("pair_commands must be a non-empty list of LAMMPS commands (one string each)")
        if not species:
            raise ValueError("species must name the element of every LAMMPS atom type, e.g. ['Ar']")
        self.pair_commands, self.species = list(pair_commands), list(species)
        self.masses = dict(masses or {})
        self.charges = None if charges is None else {k: float(v) for k, v in charges.items()}
        self._lmp = None

    def compute(self, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
        """(energy eV, forces (N, 3) eV/Å, stress (6,) eV/Å³ or ``None`` when not fully periodic)."""
        if self._lmp is None:
            self._lmp = new_lammps()
        prism = setup_lammps_system(self._lmp, atoms, self.species, self.pair_commands, self.masses, self.charges)
        self._lmp.command("run 0 post no")
        return lammps_state(self._lmp, prism, len(atoms), bool(np.all(atoms.pbc)))

    def __call__(self, atoms: Atoms) -> Label:
        energy, forces, stress = self.compute(atoms)
        ok = bool(np.isfinite(energy) and np.all(np.isfinite(forces)))
        return Label(energy, forces, ok, stress=stress)

    def close(self) -> None:
        """Release the LAMMPS instance."""
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None
