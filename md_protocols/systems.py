"""Starting structures of the bundled protocols (Å, degrees), relaxed with the run's model."""

from __future__ import annotations

from ase import Atoms
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from efa_calc.structures import cumulene, sn2_complex

__all__ = ["relaxed", "cumulene_start", "sn2_reactant_complex", "sn2_product_complex"]


def relaxed(atoms: Atoms, calc, fmax: float = 0.05, steps: int = 300, fixed: list[int] | None = None) -> Atoms:
    """A copy of ``atoms`` relaxed with ASE's BFGS to ``fmax`` (eV/Å)."""
    a = atoms.copy()
    if fixed:
        a.set_constraint(FixAtoms(indices=fixed))
    a.calc = calc
    BFGS(a, logfile=None).run(fmax=fmax, steps=steps)
    a.set_constraint()
    return a


def cumulene_start(n_carbons: int, calc, dihedral_deg: float | None = None, fmax: float = 0.05) -> Atoms:
    """C_nH4 cumulene at its ground-state dihedral (90° odd n, 0° even n), relaxed."""
    if dihedral_deg is None:
        dihedral_deg = 90.0 if n_carbons % 2 else 0.0
    return relaxed(cumulene(n_carbons, dihedral_deg), calc, fmax)


def sn2_reactant_complex(calc, x: str = "Cl", y: str = "Br", d_cx: float = 3.3, fmax: float = 0.02) -> Atoms:
    """X⁻···CH3Y ion–molecule complex (atoms C, H, H, H, X, Y), relaxed."""
    return relaxed(sn2_complex(x, y, d_cx, 1.95, 109.5), calc, fmax)


def sn2_product_complex(calc, x: str = "Cl", y: str = "Br", d_cy: float = 3.4, fmax: float = 0.02) -> Atoms:
    """XCH3···Y⁻ complex (atoms C, H, H, H, X, Y), relaxed."""
    return relaxed(sn2_complex(x, y, 1.79, d_cy, 70.5), calc, fmax)
