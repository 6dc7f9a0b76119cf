"""Checks on structures before anything reaches XLA; each failure is a specific :class:`InputError`."""

from __future__ import annotations

import warnings

import numpy as np
from ase.data import chemical_symbols

from efa_calc.errors import InputError

__all__ = ["max_pair_distance", "check_structure"]


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
) -> None:
    """Raise :class:`InputError` for input the model cannot evaluate correctly.

    Checks: non-empty; finite positions; no periodic boundary conditions; every element
    in ``species``; largest interatomic distance ≤ ``max_length`` (Å), EFA's range of
    rotational invariance — a one-time warning instead when ``strict`` is False
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
    if np.any(np.asarray(pbc)):
        raise InputError(
            f"{where} has periodic boundary conditions (pbc={np.asarray(pbc).tolist()}), but this model has no "
            "periodic support (EFA is defined for isolated molecules); set atoms.pbc = False"
        )
    known = set(species)
    unknown = sorted({chemical_symbols[int(z)] if 0 <= int(z) < len(chemical_symbols) else f"Z={int(z)}"
                      for z in numbers} - known)
    if unknown:
        raise InputError(
            f"{where} contains element(s) {', '.join(unknown)} the model was not trained on; "
            f"the model knows {', '.join(species)}"
        )
    if np.isfinite(max_length):
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
