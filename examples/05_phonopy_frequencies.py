"""Harmonic frequencies of C9H4 with phonopy's finite displacements (molecule in a vacuum box)."""

from ase.optimize import BFGS

from efa_calc import EFACalculator
from efa_calc.structures import cumulene
from md_protocols.cumulene_vibrations import frequencies

atoms = cumulene(9, dihedral_deg=90.0)
atoms.calc = calc = EFACalculator("cumulene-efa", dtype="float64")
BFGS(atoms, logfile=None).run(fmax=1e-4)
freqs, n_displacements = frequencies(atoms, calc, displacement=0.01, box=40.0)
print(f"{n_displacements} displaced structures; frequencies (cm⁻¹):")
print(freqs.round(1))
