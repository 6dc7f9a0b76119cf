"""Energies and forces of a cumulene with a bundled EFA model (eV, Å, eV/Å)."""

from efa_calc import EFACalculator, list_models
from efa_calc.structures import cumulene

print("bundled models:", list_models())
atoms = cumulene(9, dihedral_deg=90.0)  # C9H4, CH2 planes perpendicular
atoms.calc = EFACalculator("cumulene-efa")  # dtype="float64" for a fully float64 model
print(f"energy {atoms.get_potential_energy():.4f} eV")
print("forces (eV/Å):\n", atoms.get_forces().round(3))
print("per-atom energies (eV):", atoms.get_potential_energies().round(3))

# many structures per XLA call (phonopy displacements, NEB images, datasets)
twisted = [cumulene(9, dihedral_deg=d) for d in (0, 30, 60, 90)]
for d, r in zip((0, 30, 60, 90), atoms.calc.evaluate_batch(twisted)):
    print(f"dihedral {d:3d}°: {r['energy']:.4f} eV")
