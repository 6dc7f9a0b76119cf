"""Write c9h4.data: C9H4 at its 90° ground-state dihedral, relaxed with cumulene-efa (BFGS, fmax 0.01 eV/Å),
centred in a 10 Å-vacuum box (non-periodic), LAMMPS units metal, types 1 = C, 2 = H.

    python examples/lammps/make_data.py
"""

from pathlib import Path

from ase.io.lammpsdata import write_lammps_data
from ase.optimize import BFGS

from efa_calc import EFACalculator
from efa_calc.structures import cumulene

atoms = cumulene(9, 90.0)
atoms.calc = EFACalculator("cumulene-efa", dtype="float64")
BFGS(atoms, logfile=None).run(fmax=0.01)
atoms.center(vacuum=10.0)
out = Path(__file__).with_name("c9h4.data")
write_lammps_data(out, atoms, specorder=["C", "H"], masses=True, units="metal")
print(f"wrote {out}: {len(atoms)} atoms, E = {atoms.get_potential_energy():.6f} eV")
