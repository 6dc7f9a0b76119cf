"""Geometry optimisation with ASE's BFGS and an EFA model."""

from ase.optimize import BFGS

from efa_calc import EFACalculator
from efa_calc.structures import cumulene

atoms = cumulene(8, dihedral_deg=40.0)  # C8H4 starts twisted; its ground state is planar
atoms.calc = EFACalculator("cumulene-efa", dtype="float64")
BFGS(atoms).run(fmax=0.01)
print(f"E = {atoms.get_potential_energy():.4f} eV, dihedral = {atoms.get_dihedral(8, 0, 7, 10) % 180:.1f}°")
atoms.write("c8h4_optimized.xyz")
