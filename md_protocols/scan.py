"""The relaxed dihedral scan shared by ``torsion-scan`` and ``cumulene-torsion-scan``.

At each angle φ (degrees) the structure of the previous point is turned to φ by the
protocol's ``rotate(atoms, φ)``, the dihedral(s) are held at φ by ASE's ``FixInternals``
and everything else is relaxed with BFGS to ``fmax`` (eV/Å).  Rows of ``scan.csv``:
``dihedral_deg``, ``energy_eV`` (eV), ``max_residual_force_eV_A`` (largest constrained
force, eV/Å), ``converged`` and, if asked, the calculator's ``extrapolation`` verdict.
"""

from __future__ import annotations

import numpy as np
from ase.constraints import FixInternals
from ase.optimize import BFGS
from tqdm.auto import tqdm

from md_protocols.common import write_scan

__all__ = ["relaxed_scan", "finish_scan"]


def relaxed_scan(ctx, atoms, calc, rotate, dihedrals, *, desc: str, verdict: bool = False):
    """Scan the angles ``start_deg … stop_deg`` by ``step_deg`` of ``ctx``; ``dihedrals``
    are the atom quadruples held at each angle.  Writes scan.csv / scan.extxyz; returns
    ``(angles, rows)``."""
    angles = np.arange(float(ctx["start_deg"]), float(ctx["stop_deg"]) + 1e-9, float(ctx["step_deg"]))
    rows, frames = [], []
    for phi in tqdm(angles, desc=desc, disable=not ctx.progress):
        atoms = atoms.copy()
        atoms.set_constraint()
        atoms = rotate(atoms, float(phi))
        atoms.set_constraint(FixInternals(dihedrals_deg=[[float(phi), list(d)] for d in dihedrals]))
        atoms.calc = calc
        converged = bool(BFGS(atoms, logfile=None).run(fmax=float(ctx["fmax"]), steps=int(ctx["max_steps"])))
        residual = float(np.linalg.norm(atoms.get_forces(), axis=1).max())  # constrained forces
        row = {"dihedral_deg": float(phi), "energy_eV": float(atoms.get_potential_energy()),
               "max_residual_force_eV_A": residual, "converged": converged}
        if verdict:
            row["extrapolation"] = calc.results.get("extrapolation", {}).get("status", "")
        rows.append(row)
        frame = atoms.copy()
        frame.set_constraint()
        frame.info = {"dihedral_deg": float(phi), "energy_eV": row["energy_eV"]}
        frames.append(frame)
    write_scan(ctx, rows, frames)
    return angles, rows


def finish_scan(ctx, angles, rows, xlabel: str, title: str, xticks=None) -> dict:
    """Plot ``torsion_scan.png`` (energy relative to the minimum, eV) and return the results:
    the minimum's dihedral (degrees) and energy (eV), the barrier (eV), convergence."""
    import matplotlib.pyplot as plt

    e = np.array([r["energy_eV"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(angles, e - e.min(), "o-")
    ax.set(xlabel=xlabel, ylabel="relative energy (eV)", title=title)
    if xticks is not None:
        ax.set_xticks(xticks)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    ctx.savefig(fig, "torsion_scan.png")
    m = int(np.argmin(e))
    return {"minimum_dihedral_deg": float(angles[m]), "barrier_eV": float(e.max() - e.min()),
            "energy_at_minimum_eV": float(e[m]), "all_converged": all(r["converged"] for r in rows),
            "max_residual_force_eV_A": float(max(r["max_residual_force_eV_A"] for r in rows))}
