"""Relaxed torsion scan of your own structure (``--structure FILE --dihedral i,j,k,l``).

At each angle from ``start_deg`` to ``stop_deg`` (degrees) the dihedral i–j–k–l is set by
rotating, about the j–k axis, the part of the molecule bonded to k (the last bond of the
bond path j → k cut; bonds from ASE's natural cut-offs; j and k need not be bonded, e.g.
the C1⋯Cn axis of a cumulene), held by ASE's ``FixInternals`` and everything else relaxed
with BFGS to ``fmax`` (eV/Å) (:mod:`md_protocols.scan`).  Outputs as ``cumulene-torsion-scan``: scan.csv, scan.extxyz, torsion_scan.png.
"""

from md_protocols.scan import finish_scan, relaxed_scan

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
    i, j, k, l = (int(v) for v in ctx["dihedral"])
    calc = ctx.calculator()
    atoms = ctx.structure()
    group = moving_group(atoms, j, k)
    if i in group:
        raise ValueError(f"--dihedral: atom {i} is on the rotating side of the {j}–{k} axis")

    def rotate(a, phi):
        a.set_dihedral(i, j, k, l, phi, indices=group)
        return a

    angles, rows = relaxed_scan(ctx, atoms, calc, rotate, [[i, j, k, l]], desc=NAME, verdict=True)
    results = finish_scan(ctx, angles, rows, f"dihedral {i}-{j}-{k}-{l} (degrees)",
                          f"{atoms.get_chemical_formula()} relaxed torsion scan ({ctx['model']})")
    results["angles_outside_training_envelope_deg"] = [r["dihedral_deg"] for r in rows
                                                       if r["extrapolation"] == "outside"]
    return results
