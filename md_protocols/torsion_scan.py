"""Relaxed torsion scan of your own structure (``--structure FILE --dihedral i,j,k,l``).

At each angle from ``start_deg`` to ``stop_deg`` the dihedral i–j–k–l is set by rotating
the part of the molecule bonded to k (the j–k bond cut; bonds from ASE's natural
cut-offs), held by ASE's ``FixInternals`` and everything else relaxed with BFGS to ``fmax``
(eV/Å).  Outputs as ``cumulene-torsion-scan``: scan.csv, scan.extxyz, torsion_scan.png.
"""

import csv

import numpy as np
from ase.constraints import FixInternals
from ase.io import write
from ase.optimize import BFGS
from tqdm.auto import tqdm

NAME = "torsion-scan"
DESCRIPTION = "relaxed scan of a dihedral of your structure (--structure FILE --model M --dihedral i,j,k,l)"
DEFAULTS = {"structure": None, "model": None, "dihedral": None, "dtype": "float32", "start_deg": 0.0,
            "stop_deg": 180.0, "step_deg": 10.0, "fmax": 0.05, "max_steps": 200}


def moving_group(atoms, j: int, k: int) -> list[int]:
    """Atoms on k's side of the j–k bond (bond graph from ASE's natural cut-offs).

    Raises:
      ValueError: if j and k are not bonded or the bond is in a ring.
    """
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    if j not in nl.get_neighbors(k)[0]:
        raise ValueError(f"--dihedral: atoms {j} and {k} are not bonded; the middle two atoms of the dihedral must be")
    seen, todo = {k}, [k]
    while todo:
        a = todo.pop()
        for b in nl.get_neighbors(a)[0]:
            b = int(b)
            if (a, b) in ((k, j),) or b in seen:
                continue
            if b == j:
                raise ValueError(f"--dihedral: the bond {j}–{k} is part of a ring; it cannot be rotated alone")
            seen.add(b)
            todo.append(b)
    return sorted(seen)


def run(ctx):
    import matplotlib.pyplot as plt

    i, j, k, l = (int(v) for v in ctx["dihedral"])
    calc = ctx.calculator()
    atoms = ctx.structure()
    group = moving_group(atoms, j, k)
    if i in group:
        raise ValueError(f"--dihedral: atom {i} is on the rotating side of the {j}–{k} bond")
    angles = np.arange(float(ctx["start_deg"]), float(ctx["stop_deg"]) + 1e-9, float(ctx["step_deg"]))
    rows, frames = [], []
    for phi in tqdm(angles, desc=NAME, disable=not ctx.progress):
        atoms = atoms.copy()
        atoms.set_constraint()
        atoms.set_dihedral(i, j, k, l, float(phi), indices=group)
        atoms.set_constraint(FixInternals(dihedrals_deg=[[float(phi), [i, j, k, l]]]))
        atoms.calc = calc
        converged = bool(BFGS(atoms, logfile=None).run(fmax=float(ctx["fmax"]), steps=int(ctx["max_steps"])))
        residual = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
        rows.append({"dihedral_deg": float(phi), "energy_eV": float(atoms.get_potential_energy()),
                     "max_residual_force_eV_A": residual, "converged": converged,
                     "extrapolation": calc.results.get("extrapolation", {}).get("status", "")})
        frame = atoms.copy()
        frame.set_constraint()
        frame.info = {"dihedral_deg": float(phi), "energy_eV": rows[-1]["energy_eV"]}
        frames.append(frame)
    with open(ctx.path("scan.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write(ctx.path("scan.extxyz"), frames, format="extxyz")
    ctx.files.update({"scan": "scan.csv", "trajectory": "scan.extxyz"})
    e = np.array([r["energy_eV"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(angles, e - e.min(), "o-")
    ax.set(xlabel=f"dihedral {i}-{j}-{k}-{l} (degrees)", ylabel="relative energy (eV)",
           title=f"{atoms.get_chemical_formula()} relaxed torsion scan ({ctx['model']})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    ctx.savefig(fig, "torsion_scan.png")
    m = int(np.argmin(e))
    outside = [r["dihedral_deg"] for r in rows if r["extrapolation"] == "outside"]
    return {"minimum_dihedral_deg": float(angles[m]), "barrier_eV": float(e.max() - e.min()),
            "energy_at_minimum_eV": float(e[m]), "all_converged": all(r["converged"] for r in rows),
            "max_residual_force_eV_A": float(max(r["max_residual_force_eV_A"] for r in rows)),
            "angles_outside_training_envelope_deg": outside}
