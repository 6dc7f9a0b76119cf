"""Relaxed torsion scan of a cumulene: the CH2–CH2 dihedral held by ASE's FixInternals.

Both H–C₁⋯Cₙ–H dihedrals are held at the scan angle, so each CH2 group rotates as a whole
(with one constraint the free hydrogen may scissor instead); everything else relaxes
(:mod:`md_protocols.scan`).
"""

import numpy as np

from efa_calc.structures import cumulene_dihedral, cumulene_dihedral_atoms, rotate_terminal_group
from md_protocols.scan import finish_scan, relaxed_scan
from md_protocols.systems import cumulene_start

NAME = "cumulene-torsion-scan"
DESCRIPTION = "constrained relaxations of C9H4 at CH2-CH2 dihedrals 0..180 deg; barrier and profile"
DEFAULTS = {"model": "cumulene-efa", "dtype": "float32", "n_carbons": 9, "start_deg": 0.0, "stop_deg": 180.0,
            "step_deg": 10.0, "fmax": 0.05, "max_steps": 200}


def run(ctx):
    calc = ctx.calculator()
    base = cumulene_start(int(ctx["n_carbons"]), calc)
    idx = [cumulene_dihedral_atoms(base), cumulene_dihedral_atoms(base, second=True)]
    angles, rows = relaxed_scan(ctx, base, calc, lambda a, phi: rotate_terminal_group(a, phi - cumulene_dihedral(a)),
                                idx, desc=NAME)
    return finish_scan(ctx, angles, rows, "CH2–CH2 dihedral (degrees)",
                       f"C{ctx['n_carbons']}H4 relaxed torsion scan ({ctx['model']})", xticks=np.arange(0, 181, 30))
