"""Relaxed CH2 torsion scan of C9H4 with FixInternals (both H–C1···C9–H dihedrals held)."""

import numpy as np
from ase.constraints import FixInternals
from ase.optimize import BFGS

from efa_calc import EFACalculator
from efa_calc.structures import cumulene, cumulene_dihedral_atoms

calc = EFACalculator("cumulene-efa")
energies = []
for phi in range(0, 181, 15):
    atoms = cumulene(9, dihedral_deg=phi)
    pairs = [cumulene_dihedral_atoms(atoms), cumulene_dihedral_atoms(atoms, second=True)]
    atoms.set_constraint(FixInternals(dihedrals_deg=[[float(phi), pairs[0]], [float(phi), pairs[1]]]))
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=0.05)
    energies.append(atoms.get_potential_energy())
    print(f"{phi:4d}°  {energies[-1] - energies[0]:+.3f} eV")
print(f"barrier {max(energies) - min(energies):.3f} eV, minimum at {15 * int(np.argmin(energies))}°")
