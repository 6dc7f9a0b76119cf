"""An ``openmm.PythonForce`` that adds an efa-calc model's energy and forces to an OpenMM System.

    import openmm
    from efa_calc.openmm import make_force
    system = openmm.System()
    for m in atoms.get_masses():                    # amu (= Da)
        system.addParticle(m)
    system.addForce(make_force("cumulene-efa", atoms.numbers, dtype="float64"))

Particle i of the System is atom i of ``numbers``.  At every force evaluation OpenMM's
positions r (N, 3) in nm become Å (× 10) of one structure, evaluated with
``atoms.get_potential_energy()`` (eV) and ``atoms.get_forces()`` (eV/Å), and returned in
OpenMM's units:

    E [kJ/mol] = E [eV] · EV_IN_KJ_PER_MOL,   F [kJ/mol/nm] = F [eV/Å] · EV_IN_KJ_PER_MOL · 10,

with EV_IN_KJ_PER_MOL = e · N_A / 1000 = 96.485 332 123 310 02, exact in SI 2019 (e and N_A
are defined constants) and equal to OpenMM's own ``openmm.unit`` conversion.

Periodic boxes: ``periodic=True`` passes OpenMM's box vectors as the cell (so the Monte Carlo
barostat, which rescales the box and asks for energies, works) — for periodic models only
(trained on periodic data, e.g. ``argon-local``); a molecular model refuses it.

Errors inside the force (atoms closer than 0.3 Å, ``guard="error"``) propagate as
exceptions out of ``Context.getState`` / ``Integrator.step``.  The force is not meant for
``XmlSerializer`` (which pickles the Python function, here the calculator).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import atomic_numbers, chemical_symbols

from efa_calc.errors import InputError
from efa_calc.interfaces import model_is_periodic

__all__ = ["make_force", "EFAForceComputation", "EV_IN_KJ_PER_MOL"]

EV_IN_KJ_PER_MOL = 1.602176634e-19 * 6.02214076e23 / 1e3  # exact: e [C] · N_A [1/mol] / 1000
ANGSTROM_PER_NM = 10.0


def _numbers(numbers) -> np.ndarray:
    out = []
    for k, z in enumerate(numbers):
        if isinstance(z, str):
            if z not in atomic_numbers:
                raise InputError(f"numbers[{k}] = {z!r} is not a chemical symbol")
            z = atomic_numbers[z]
        if not (isinstance(z, (int, np.integer)) and 0 < int(z) < len(chemical_symbols)):
            raise InputError(f"numbers[{k}] = {z!r}: allowed: an atomic number 1..{len(chemical_symbols) - 1} "
                             f"or a chemical symbol")
        out.append(int(z))
    if not out:
        raise InputError("numbers: empty; give the atomic number (or symbol) of every particle")
    return np.array(out)


class EFAForceComputation:
    """The function OpenMM's ``PythonForce`` calls: ``state -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)``."""

    def __init__(self, calc: Calculator, numbers: np.ndarray, periodic: bool):
        self.atoms = Atoms(numbers=numbers, pbc=periodic)
        self.atoms.calc = calc
        self.periodic = periodic
        self.calls = 0

    def __call__(self, state):
        from openmm import unit

        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        self.atoms.positions = np.asarray(pos) * ANGSTROM_PER_NM
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            self.atoms.cell = np.asarray(box) * ANGSTROM_PER_NM
        energy = self.atoms.get_potential_energy()
        forces = self.atoms.get_forces()
        self.calls += 1
        return energy * EV_IN_KJ_PER_MOL, forces.astype(np.float64) * (EV_IN_KJ_PER_MOL * ANGSTROM_PER_NM)


def make_force(model, numbers, *, periodic: bool = False, **calculator_kwargs):
    """An ``openmm.PythonForce`` computing ``model`` on the particles ``numbers``.

    Args:
      model: a bundled model name, checkpoint directory, ``Checkpoint``, list of these
        (committee), or a ready ASE calculator (then no ``calculator_kwargs``).
      numbers: atomic number (or chemical symbol) of every particle of the System, in
        particle order; the force acts on all of them (``force.setParticles`` restricts it
        to a subset, then ``numbers`` describes that subset, in its order).
      periodic: use OpenMM's periodic box as the cell (periodic models only, e.g. ``argon-local``).
      calculator_kwargs: passed to ``EFACalculator`` (``dtype="float64"``, ``guard=``, ...).

    Returns:
      ``openmm.PythonForce``; its computation (with ``.atoms`` and ``.calls``) is
      ``force.efa``.  Energies in kJ/mol, forces in kJ/mol/nm (see the module docstring).

    Raises:
      InputError: a particle that is no element or one the model does not know;
        ``periodic=True`` with a molecular model.
    """
    import openmm

    z = _numbers(numbers)
    if isinstance(model, Calculator):
        if calculator_kwargs:
            raise TypeError(f"make_force: calculator keyword arguments {sorted(calculator_kwargs)} given with a "
                            f"ready calculator; pass a model name instead")
        calc = model
    else:
        from efa_calc.calculator import EFACalculator

        calc = EFACalculator(model, **calculator_kwargs)
    species = getattr(calc, "species", None)
    if species is not None:
        unknown = sorted({chemical_symbols[k] for k in z} - set(species))
        if unknown:
            raise InputError(f"numbers: element(s) {', '.join(unknown)} not known to the model; it knows "
                             f"{', '.join(species)}")
    if periodic and not model_is_periodic(calc):
        raise InputError("make_force: periodic=True, but the model is molecular (not trained on periodic data); "
                         "build a non-periodic System or use a periodic model such as argon-local")
    computation = EFAForceComputation(calc, z, bool(periodic))
    force = openmm.PythonForce(computation)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setName("efa-calc")
    force.efa = computation
    return force
