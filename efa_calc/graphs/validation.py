"""Checks on structures before anything reaches XLA; each failure is a specific :class:`InputError`."""

from __future__ import annotations

import warnings

import numpy as np
from ase.data import chemical_symbols

from efa_calc.errors import InputError

__all__ = ["check_cell", "check_structure", "max_pair_distance"]


def check_cell(cell, pbc, where: str = "structure") -> None:
    """Raise :class:`InputError` unless ``cell`` (3, 3) Å is finite and right-handed with a
    positive volume (every periodic structure needs all three lattice vectors)."""
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64)
    flags = np.asarray(pbc).tolist()
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise InputError(f"{where}: the cell must be a finite 3×3 matrix (Å), got {cell.tolist()}")
    volume = float(np.linalg.det(cell))
    if not np.any(cell):
        raise InputError(f"{where} has pbc={flags} but no cell (all lattice vectors zero); set atoms.cell")
    if abs(volume) < 1e-6 * max(1.0, float(np.max(np.linalg.norm(cell, axis=1)))) ** 3:
        raise InputError(f"{where} has pbc={flags} but a singular cell (volume {volume:.3g} Å³): give all three "
                         "lattice vectors, including a vacuum direction for slabs")
    if volume < 0:
        raise InputError(f"{where}: the cell is left-handed (volume {volume:.3g} Å³ < 0); swap two lattice vectors")


def max_pair_distance(positions: np.ndarray) -> float:
    """Largest interatomic distance (Å).

    The bounding sphere about the centroid decides most cases in O(N); only when its
    diameter is not conclusive are the convex-hull vertices compared pairwise.
    """
    pos = np.asarray(positions, np.float64)
    if len(pos) < 2:
        return 0.0
    if len(pos) > 64:
        try:
            from scipy.spatial import ConvexHull

            pos = pos[ConvexHull(pos).vertices]
        except Exception:  # degenerate (planar/linear) point sets: fall back to all points
            pass
    d2 = 0.0
    for start in range(0, len(pos), 1024):
        block = pos[start : start + 1024]
        d2 = max(d2, float(np.max(np.sum((block[:, None, :] - pos[None, :, :]) ** 2, axis=-1))))
    return float(np.sqrt(d2))


def check_structure(
    numbers: np.ndarray,
    positions: np.ndarray,
    pbc,
    species: list[str],
    max_length: float,
    strict: bool = True,
    warned: set | None = None,
    where: str = "structure",
    cell=None,
    periodic_model: bool = False,
) -> None:
    """Raise :class:`InputError` for input the model cannot evaluate correctly.

    Checks: non-empty; finite positions; periodic boundary conditions only for a periodic
    model and then a finite cell of positive volume (:func:`check_cell`); every element
    in ``species``; for molecules, largest interatomic distance ≤ ``max_length`` (Å), EFA's
    range of rotational invariance — a one-time warning instead when ``strict`` is False
    (``warned`` remembers that it was given).
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, np.float64)
    if len(numbers) == 0:
        raise InputError(f"empty {where}: it has no atoms")
    if positions.shape != (len(numbers), 3):
        raise InputError(f"{where}: positions have shape {positions.shape}, expected ({len(numbers)}, 3)")
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise InputError(f"{where} has NaN or infinite positions (atoms {bad[:10].tolist()})")
    periodic = bool(np.any(np.asarray(pbc)))
    if periodic and not periodic_model:
        raise InputError(
            f"{where} has periodic boundary conditions (pbc={np.asarray(pbc).tolist()}), but this model was "
            "trained on isolated molecules only (its checkpoint is not periodic); set atoms.pbc = False, or use "
            "a model trained on periodic data"
        )
    if periodic:
        check_cell(cell, pbc, where)
    known = set(species)
    unknown = sorted({chemical_symbols[int(z)] if 0 <= int(z) < len(chemical_symbols) else f"Z={int(z)}"
                      for z in numbers} - known)
    if unknown:
        raise InputError(
            f"{where} contains element(s) {', '.join(unknown)} the model was not trained on; "
            f"the model knows {', '.join(species)}"
        )
    if np.isfinite(max_length) and not periodic:
        extent = max_pair_distance(positions)
        if extent > max_length:
            msg = (
                f"{where} extends {extent:.2f} Å (largest interatomic distance), beyond the model's "
                f"max_length of {max_length:.2f} Å: EFA is rotationally invariant only up to max_length"
            )
            if strict:
                raise InputError(msg + " (pass strict=False to evaluate anyway, with a warning)")
            if warned is not None and "max_length" not in warned:
                warned.add("max_length")
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
