"""Lebedev quadrature on the unit sphere (spec §2.3).

The grids are e3x's (``e3x.so3.lebedev_quadrature``), normalised so that Σ_m w_m = 1, i.e.
(1/4π)∫_{S²} f(u) du ≈ Σ_m w_m f(u_m).  Every grid is inversion symmetric (u and −u carry
the same weight), so Σ_m w_m sin(ω u_m·r) vanishes to rounding for any ω.

A grid of M points integrates the ERoPE kernel cos(ω u·r) to within 1e-5 of
sinc(ω r) = j₀(ω r) for phases ω·r ≤ b(M); :data:`MAX_PHASE` holds b(M) for the grids the
reference code tabulates (Tab. S3 of the paper, via ``LEBEDEV_FREQUENCY_LOOKUP``).
"""

from __future__ import annotations

import functools
import io
import math
import pkgutil

import numpy as np
from jaxtyping import Float

__all__ = ["GRID_SIZES", "MAX_PHASE", "lebedev_grid", "max_phase"]

#: Every Lebedev grid size e3x provides (e3x silently rounds other requests down).
GRID_SIZES: tuple[int, ...] = (
    6, 14, 26, 38, 50, 74, 86, 110, 146, 170, 194, 230, 266, 302, 350, 434, 590, 770,
    974, 1202, 1454, 1730, 2030, 2354, 2702, 3074, 3470, 3890, 4334, 4802, 5294, 5810,
)

#: grid size -> largest phase ω·r (rad) integrated to 1e-5 (reference lookup table; the
#: reference lists 6000 for what is e3x's 5810-point grid).
MAX_PHASE: dict[int, float] = {
    50: math.pi, 86: 2 * math.pi, 110: 2.5 * math.pi, 146: 3 * math.pi, 194: 4 * math.pi,
    230: 4.5 * math.pi, 266: 5 * math.pi, 302: 5.5 * math.pi, 350: 6.5 * math.pi,
    434: 7.5 * math.pi, 590: 9 * math.pi, 770: 11 * math.pi, 974: 12.5 * math.pi,
    5810: 35 * math.pi,
}


def max_phase(num: int) -> float:
    """b(M) for an M-point grid: the largest grid in :data:`MAX_PHASE` with ≤ M points
    (0 when none is tabulated)."""
    known = [m for m in MAX_PHASE if m <= num]
    return MAX_PHASE[max(known)] if known else 0.0


@functools.lru_cache(maxsize=None)
def lebedev_grid(num: int) -> tuple[Float[np.ndarray, "M 3"], Float[np.ndarray, "M"]]:
    """Directions u_m (M, 3) and weights w_m (M,) of the M = ``num`` point Lebedev grid.

    Returned as float64 numpy arrays (read-only); weights sum to 1.

    Raises:
      ValueError: if ``num`` is not one of :data:`GRID_SIZES` (e3x would silently return
        a smaller grid).
    """
    if num not in GRID_SIZES:
        raise ValueError(f"no Lebedev grid with {num} points; available sizes: {GRID_SIZES}")
    # Read e3x's grid file directly: e3x.so3.lebedev_quadrature converts to a jax array,
    # which drops to float32 unless x64 is enabled, and float64 runs need the full grid.
    with np.load(io.BytesIO(pkgutil.get_data("e3x.so3", "_lebedev_grids.npz"))) as grids:
        i = int(np.flatnonzero(grids["num"] == num)[0])
        u = np.array(grids[f"r{i}"], np.float64)
        w = np.array(grids[f"w{i}"], np.float64)
    if u.shape != (num, 3) or abs(w.sum() - 1.0) > 1e-12:
        raise RuntimeError(f"e3x's {num}-point Lebedev grid is malformed; reinstall e3x")
    u.setflags(write=False)
    w.setflags(write=False)
    return u, w
