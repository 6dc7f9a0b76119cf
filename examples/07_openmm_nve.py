"""NVE of C9H4 in OpenMM (VerletIntegrator, 0.5 fs) with cumulene-efa as an openmm.PythonForce.

OpenMM works in nm, ps, kJ/mol, Da; efa_calc.openmm converts to and from Å and eV exactly.
Prints the potential, kinetic and total energy (eV) every 100 steps: the total stays put.
"""

import openmm
from openmm import unit

from efa_calc.openmm import EV_IN_KJ_PER_MOL, make_force
from efa_calc.structures import cumulene

atoms = cumulene(9, dihedral_deg=90.0)  # C9H4
system = openmm.System()
for mass in atoms.get_masses():  # amu = Da
    system.addParticle(float(mass))
system.addForce(make_force("cumulene-efa", atoms.numbers, dtype="float64"))

integrator = openmm.VerletIntegrator(0.5 * unit.femtoseconds)
context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
context.setPositions(atoms.positions * 0.1)  # Å -> nm
context.setVelocitiesToTemperature(300 * unit.kelvin, 1)

for block in range(11):
    state = context.getState(getEnergy=True)
    kj = unit.kilojoule_per_mole
    pe = state.getPotentialEnergy().value_in_unit(kj) / EV_IN_KJ_PER_MOL
    ke = state.getKineticEnergy().value_in_unit(kj) / EV_IN_KJ_PER_MOL
    print(f"t = {block * 50:4d} fs  Epot = {pe:.4f} eV  Ekin = {ke:.4f} eV  Etot = {pe + ke:.4f} eV")
    if block < 10:
        integrator.step(100)
