"""Relaxed torsion scan of a cumulene: the CH2–CH2 dihedral held by ASE's FixInternals.

Both H–C₁⋯Cₙ–H dihedrals are held at the scan angle, so each CH2 group rotates as a whole
(with one constraint the free hydrogen may scissor instead); everything else relaxes.
"""

import numpy as np
from ase.constraints import FixInternals
from ase.optimize import BFGS
from tqdm.auto import tqdm

from efa_calc.structures import cumulene_dihedral, cumulene_dihedral_atoms, rotate_terminal_group
from md_protocols.common import write_scan
from md_protocols.systems import cumulene_start

NAME = "cumulene-torsion-scan"
DESCRIPTION = "constrained relaxations of C9H4 at CH2-CH2 dihedrals 0..180 deg; barrier and profile"
DEFAULTS = {"model": "cumulene-efa", "dtype": "float32", "n_carbons": 9, "start_deg": 0.0, "stop_deg": 180.0,
            "step_deg": 10.0, "fmax": 0.05, "max_steps": 200}


def run(ctx):
    import matplotlib.pyplot as plt

    calc = ctx.calculator()
    base = cumulene_start(int(ctx["n_carbons"]), calc)
    idx = [cumulene_dihedral_atoms(base), cumulene_dihedral_atoms(base, second=True)]
    angles = np.arange(float(ctx["start_deg"]), float(ctx["stop_deg"]) + 1e-9, float(ctx["step_deg"]))
    rows, frames = [], []
    atoms = base
    for phi in tqdm(angles, desc=NAME, disable=not ctx.progress):
        atoms = rotate_terminal_group(atoms, phi - cumulene_dihedral(atoms))
        atoms.set_constraint(FixInternals(dihedrals_deg=[[float(phi), idx[0]], [float(phi), idx[1]]]))
        atoms.calc = calc
        opt = BFGS(atoms, logfile=None)
        converged = bool(opt.run(fmax=float(ctx["fmax"]), steps=int(ctx["max_steps"])))
        residual = float(np.linalg.norm(atoms.get_forces(), axis=1).max())  # constrained forces
        rows.append({"dihedral_deg": float(phi), "energy_eV": float(atoms.get_potential_energy()),
                     "max_residual_force_eV_A": residual, "converged": converged})
        frame = atoms.copy()
        frame.set_constraint()
        frame.info = {"dihedral_deg": float(phi), "energy_eV": rows[-1]["energy_eV"]}
        frames.append(frame)
        atoms = atoms.copy()
        atoms.set_constraint()
    write_scan(ctx, rows, frames)
    e = np.array([r["energy_eV"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(angles, e - e.min(), "o-")
    ax.set(xlabel="CH2–CH2 dihedral (degrees)", ylabel="relative energy (eV)",
           title=f"C{ctx['n_carbons']}H4 relaxed torsion scan ({ctx['model']})")
    ax.set_xticks(np.arange(0, 181, 30))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    ctx.savefig(fig, "torsion_scan.png")
    k = int(np.argmin(e))
    return {"minimum_dihedral_deg": float(angles[k]), "barrier_eV": float(e.max() - e.min()),
            "energy_at_minimum_eV": float(e[k]), "all_converged": all(r["converged"] for r in rows),
            "max_residual_force_eV_A": float(max(r["max_residual_force_eV_A"] for r in rows))}
