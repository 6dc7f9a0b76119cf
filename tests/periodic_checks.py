"""Shared numerical checks of periodic models (float64): wrapping by lattice vectors and a
joint rotation of cell and positions.  ``evaluate(atoms)`` returns (energy eV, forces (N, 3)
eV/Å, stress (3, 3) eV/Å³)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation


def rotation(angle: float, axis) -> np.ndarray:
    """3 × 3 rotation by ``angle`` (rad) about ``axis``."""
    return Rotation.from_rotvec(angle * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()


def assert_wrapping_changes_nothing(evaluate, atoms: Atoms, energy_rtol=1e-10, force_atol=1e-10, stress_atol=None):
    """Atom 2 moved by 2a − b + 3c: same energy, forces (and stress if ``stress_atol``)."""
    e0, f0, s0 = evaluate(atoms)
    wrapped = atoms.copy()
    wrapped.positions[2] += 2 * atoms.cell[0] - atoms.cell[1] + 3 * atoms.cell[2]
    e1, f1, s1 = evaluate(wrapped)
    assert abs(e1 - e0) < energy_rtol * abs(e0), (e1, e0)
    np.testing.assert_allclose(f1, f0, atol=force_atol)
    if stress_atol is not None:
        np.testing.assert_allclose(s1, s0, atol=stress_atol)


def assert_joint_rotation_changes_nothing(evaluate, atoms: Atoms, angle=0.7, axis=(1.0, -2.0, 0.5),
                                          energy_rtol=1e-10, force_atol=1e-9, stress_atol=1e-10):
    """Cell and positions rotated together: same energy, forces and stress rotated with them."""
    e0, f0, s0 = evaluate(atoms)
    rot = rotation(angle, axis)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    turned.positions = atoms.positions @ rot.T
    e1, f1, s1 = evaluate(turned)
    assert abs(e1 - e0) < energy_rtol * abs(e0), (e1, e0)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=force_atol)
    np.testing.assert_allclose(s1, rot @ s0 @ rot.T, atol=stress_atol)
