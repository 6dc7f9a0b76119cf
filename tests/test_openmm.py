"""efa_calc.openmm.make_force: an OpenMM PythonForce around the calculator.

Checked against the calculator's own energies and forces, OpenMM's own unit conversion, and
the conservation of the total energy under OpenMM's Verlet integrator.
"""

from __future__ import annotations

import numpy as np
import pytest

openmm = pytest.importorskip("openmm", reason="the openmm extra is not installed (pip install 'efa-calc[openmm]')")
from openmm import unit  # noqa: E402

from efa_calc import EFACalculator, InputError  # noqa: E402
from efa_calc.openmm import EV_IN_KJ_PER_MOL, make_force  # noqa: E402
from efa_calc.structures import cumulene  # noqa: E402

MODEL = "cumulene-efa"


def _context(atoms, force, dt_fs: float = 0.5):
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))
    system.addForce(force)
    integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)  # Å -> nm
    return context, integrator


def test_conversion_is_openmms_own():
    ev = (1.0 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA).value_in_unit(unit.kilojoule_per_mole)
    assert EV_IN_KJ_PER_MOL == pytest.approx(ev, rel=1e-15)


def test_context_energy_and_forces_equal_the_calculators():
    atoms = cumulene(9, 90.0)
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    force = make_force(MODEL, atoms.numbers, dtype="float64")
    context, _ = _context(atoms, force)
    state = context.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom) / EV_IN_KJ_PER_MOL
    atoms.calc = EFACalculator(MODEL, dtype="float64")
    assert abs(e - atoms.get_potential_energy()) < 1e-6
    np.testing.assert_allclose(f, atoms.get_forces(), rtol=0, atol=1e-6)
    assert np.abs(f).max() > 0.1  # the structure is strained: the check compares real forces


def test_verlet_conserves_energy_over_500_fs():
    """OpenMM's VerletIntegrator, 1000 steps of 0.5 fs from 300 K: spread of E_total ≤ 1 meV/atom."""
    atoms = cumulene(9, 90.0)
    context, integrator = _context(atoms, make_force(MODEL, atoms.get_chemical_symbols(), dtype="float64"))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    totals, kinetic = [], []
    for _ in range(50):
        integrator.step(20)
        state = context.getState(getEnergy=True)
        ke = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
        pe = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
        totals.append(ke + pe)
        kinetic.append(ke)
    spread = (max(totals) - min(totals)) / len(atoms)
    assert min(kinetic) > 0.05 and max(kinetic) - min(kinetic) > 0.05  # eV: the molecule really moves
    assert spread <= 1e-3, spread


def test_bad_input_is_refused_before_openmm():
    with pytest.raises(InputError, match="Cl not known to the model; it knows H, C"):
        make_force(MODEL, [6, 6, 17])
    with pytest.raises(InputError, match=r"numbers\[1\] = 'Xx' is not a chemical symbol"):
        make_force(MODEL, ["C", "Xx"])
    with pytest.raises(InputError, match="periodic=True, but the model is molecular"):
        make_force(MODEL, [6, 1], periodic=True)
    with pytest.raises(TypeError, match="ready calculator"):
        make_force(EFACalculator(MODEL), [6, 1], dtype="float64")


def test_an_error_in_the_force_reaches_the_caller():
    atoms = cumulene(9, 90.0)
    atoms.positions[1] = atoms.positions[0] + [0.1, 0.0, 0.0]
    context, _ = _context(atoms, make_force(MODEL, atoms.numbers))
    with pytest.raises(Exception, match="closer"):
        context.getState(getEnergy=True)


def test_periodic_box_and_monte_carlo_barostat_with_argon_local():
    """A periodic argon box: energy and forces through the Context equal the calculator's with
    OpenMM's box as the cell, and OpenMM's Monte Carlo barostat changes the box."""
    from ase.build import bulk

    atoms = bulk("Ar", "fcc", a=5.8, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=2)
    force = make_force("argon-local", atoms.numbers, periodic=True, dtype="float64", guard="off")
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) * 0.1 for row in atoms.cell.array))
    system.addForce(force)
    barostat = openmm.MonteCarloBarostat(1000.0 * unit.bar, 90.0 * unit.kelvin, 1)
    system.addForce(barostat)
    integrator = openmm.LangevinMiddleIntegrator(90.0 * unit.kelvin, 1.0 / unit.picosecond, 2.0 * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom) / EV_IN_KJ_PER_MOL
    atoms.calc = EFACalculator("argon-local", dtype="float64", guard="off")
    assert abs(e - atoms.get_potential_energy()) < 1e-6
    np.testing.assert_allclose(f, atoms.get_forces(), rtol=0, atol=1e-6)
    v0 = atoms.get_volume()
    context.setVelocitiesToTemperature(90.0 * unit.kelvin, 3)
    integrator.step(20)
    box = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
    assert abs(np.linalg.det(np.asarray(box)) - v0) > 1e-3 * v0  # the barostat accepted moves
