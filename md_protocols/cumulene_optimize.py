"""Geometry optimisation of a cumulene with ASE's BFGS, LBFGS or FIRE."""

from efa_calc.structures import cumulene, cumulene_dihedral
from md_protocols.optimize import run_optimization

NAME = "cumulene-optimize"
DESCRIPTION = "optimise C9H4 from a twisted start (BFGS/LBFGS/FIRE to fmax); reports energy, max force, steps"
DEFAULTS = {"model": "cumulene-efa", "dtype": "float64", "optimizer": "BFGS", "fmax": 0.01, "max_steps": 500,
            "n_carbons": 9, "start_dihedral_deg": 60.0}


def run(ctx):
    atoms = cumulene(int(ctx["n_carbons"]), float(ctx["start_dihedral_deg"]))
    results, atoms = run_optimization(ctx, atoms, NAME)
    return {**results, "final_dihedral_deg": cumulene_dihedral(atoms)}
