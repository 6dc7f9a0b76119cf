"""Molecule builders for the bundled systems (positions in Å, angles in degrees).

* :func:`cumulene` — H2C(=C)n−2=CH2 along x with a chosen dihedral between the CH2 planes;
* :func:`rotate_terminal_group` — rigid torsion of the last CH2 about the chain axis;
* :func:`cumulene_dihedral` — the CH2–CH2 dihedral of a cumulene built here;
* :func:`sn2_complex` — collinear X⁻···CH3–Y with a C3v methyl group.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

__all__ = ["cumulene", "rotate_terminal_group", "cumulene_dihedral", "cumulene_dihedral_atoms", "sn2_complex"]


def cumulene(n_carbons: int, dihedral_deg: float = 0.0, cc: float = 1.28, cc_end: float = 1.31,
             ch: float = 1.09, hch_deg: float = 117.0) -> Atoms:
    """H2C(=C)n−2=CH2 along x.

    Atom order: C₁ … Cₙ, then H₁, H₂ on C₁ and H₃, H₄ on Cₙ.  The C₁H₂ plane is the xy
    plane; the CₙH₂ plane is rotated by ``dihedral_deg`` about x (0° planar, 90°
    perpendicular).  Bond lengths: ``cc_end`` for the terminal C=C bonds, ``cc`` inside.
    """
    if n_carbons < 3:
        raise ValueError("a cumulene needs at least 3 carbons")
    bonds = [cc_end] + [cc] * (n_carbons - 3) + [cc_end]
    x = np.concatenate([[0.0], np.cumsum(bonds)])
    half = np.deg2rad(hch_deg / 2)
    hx, hr = ch * np.cos(half), ch * np.sin(half)
    phi = np.deg2rad(dihedral_deg)
    pos = [[xi, 0.0, 0.0] for xi in x]
    pos += [[-hx, hr, 0.0], [-hx, -hr, 0.0]]
    pos += [[x[-1] + hx, hr * np.cos(phi), hr * np.sin(phi)], [x[-1] + hx, -hr * np.cos(phi), -hr * np.sin(phi)]]
    return Atoms(["C"] * n_carbons + ["H"] * 4, positions=pos)


def _chain(atoms: Atoms) -> tuple[int, int, list[int]]:
    """(first C, last C, indices of the two H on the last C) for a cumulene built by :func:`cumulene`."""
    n = int(np.sum(atoms.numbers == 6))
    return 0, n - 1, [n + 2, n + 3]


def cumulene_dihedral_atoms(atoms: Atoms, second: bool = False) -> list[int]:
    """Indices (H₁, C₁, Cₙ, H₃) defining the CH2–CH2 dihedral; ``second`` gives the
    equivalent (H₂, C₁, Cₙ, H₄)."""
    first, last, h_end = _chain(atoms)
    n = last + 1
    return [n + 1, first, last, h_end[1]] if second else [n, first, last, h_end[0]]


def cumulene_dihedral(atoms: Atoms) -> float:
    """Dihedral H₁–C₁–Cₙ–H₃ in degrees, folded to [0, 180]."""
    d = atoms.get_dihedral(*cumulene_dihedral_atoms(atoms)) % 360.0
    return 360.0 - d if d > 180.0 else d


def rotate_terminal_group(atoms: Atoms, angle_deg: float) -> Atoms:
    """Rotate the last CH2 group rigidly by ``angle_deg`` about the C₁–Cₙ axis (a copy)."""
    a = atoms.copy()
    first, last, h_end = _chain(a)
    axis = a.positions[last] - a.positions[first]
    axis /= np.linalg.norm(axis)
    th = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k
    origin = a.positions[last]
    a.positions[h_end] = (a.positions[h_end] - origin) @ rot.T + origin
    return a


def sn2_complex(x: str, y: str, d_cx: float, d_cy: float, umbrella_deg: float = 109.5) -> Atoms:
    """Collinear X⁻···CH3–Y: C at the origin, Y on +z at ``d_cy``, X on −z at ``d_cx``,
    three H at 1.09 Å with H–C–Y angle ``umbrella_deg``.  Atom order: C, H, H, H, X, Y."""
    th = np.deg2rad(umbrella_deg)
    pos = [[0.0, 0.0, 0.0]]
    for k in range(3):
        ph = 2 * np.pi * k / 3
        pos.append([1.09 * np.sin(th) * np.cos(ph), 1.09 * np.sin(th) * np.sin(ph), 1.09 * np.cos(th)])
    pos += [[0.0, 0.0, -d_cx], [0.0, 0.0, d_cy]]
    return Atoms(["C", "H", "H", "H", x, y], positions=pos)
