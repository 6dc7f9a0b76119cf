"""A custom NVT run with ASE's Langevin integrator, writing an extxyz trajectory."""

from ase import units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

from efa_calc import EFACalculator
from efa_calc.structures import cumulene

atoms = cumulene(11, dihedral_deg=90.0)  # C11H4
atoms.calc = EFACalculator("cumulene-efa")
MaxwellBoltzmannDistribution(atoms, temperature_K=500)
Stationary(atoms)
ZeroRotation(atoms)
dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500, friction=0.01 / units.fs)


def report():
    write("c11h4_nvt.extxyz", atoms, format="extxyz", append=True)
    print(f"step {dyn.nsteps:5d}  T = {atoms.get_temperature():6.1f} K  Epot = {atoms.get_potential_energy():.4f} eV")


dyn.attach(report, interval=50)
dyn.run(500)
