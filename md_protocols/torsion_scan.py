"""Relaxed torsion scan of your own structure (``--structure FILE --dihedral i,j,k,l``).

At each angle from ``start_deg`` to ``stop_deg`` (degrees) the dihedral i–j–k–l is set by
rotating, about the j–k axis, the part of the molecule bonded to k (the last bond of the
bond path j → k cut; bonds from ASE's natural cut-offs; j and k need not be bonded, e.g.
the C1⋯Cn axis of a cumulene), held by ASE's ``FixInternals`` and everything else relaxed
with BFGS to ``fmax`` (eV/Å).  Outputs as ``cumulene-torsion-scan``: scan.csv, scan.extxyz, torsion_scan.png.
"""

import numpy as np
from ase.constraints import FixInternals
from ase.optimize import BFGS
from tqdm.auto import tqdm

from md_protocols.common import write_scan

NAME = "torsion-scan"
DESCRIPTION = "relaxed scan of a dihedral of your structure (--structure FILE --model M --dihedral i,j,k,l)"
DEFAULTS = {"structure": None, "model": None, "dihedral": None, "dtype": "float32", "start_deg": 0.0,
            "stop_deg": 180.0, "step_deg": 10.0, "fmax": 0.05, "max_steps": 200}


def moving_group(atoms, j: int, k: int) -> list[int]:
    """Atoms on k's side of the j–k axis: the part of the bond graph (ASE's natural cut-offs)
    that holds k once the last bond of the shortest bond path j → k is cut.  For bonded j, k
    that is the j–k bond itself; for a chain (the C1⋯Cn axis of a cumulene) the bond into k.

    Raises:
      ValueError: if no bond path joins j and k, or the cut bond is part of a ring.
    """
    from collections import deque

    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    nbrs = {a: [int(b) for b in nl.get_neighbors(a)[0]] for a in range(len(atoms))}
    prev, todo = {j: None}, deque([j])
    while todo and k not in prev:
        a = todo.popleft()
        for b in nbrs[a]:
            if b not in prev:
                prev[b] = a
                todo.append(b)
    if k not in prev:
        raise ValueError(f"--dihedral: no chain of bonds joins atoms {j} and {k}, the middle two atoms of the dihedral")
    cut = prev[k]
    seen, stack = {k}, [k]
    while stack:
        a = stack.pop()
        for b in nbrs[a]:
            if (a, b) == (k, cut) or b in seen:
                continue
            if b == cut:
                raise ValueError(f"--dihedral: the bond {cut}–{k} is part of a ring; it cannot be rotated alone")
            seen.add(b)
            stack.append(b)
    return sorted(seen)


def run(ctx):
    import matplotlib.pyplot as plt

    i, j, k, l = (int(v) for v in ctx["dihedral"])
    calc = ctx.calculator()
    atoms = ctx.structure()
    group = moving_group(atoms, j, k)
    if i in group:
        raise ValueError(f"--dihedral: atom {i} is on the rotating side of the {j}–{k} axis")
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
    write_scan(ctx, rows, frames)
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
