"""Lebedev quadrature on the unit sphere (spec §2.3).

The grids come from SciPy's public ``scipy.integrate.lebedev_rule`` (SciPy ≥ 1.15), put in
the point order of e3x's tabulated grids (``e3x.so3.lebedev_quadrature``, with which the
reference checkpoints were evaluated; ``tests/test_nn_math.py`` checks that every grid equals
e3x's point by point to 1e-14) and normalised so that Σ_m w_m = 1, i.e.
(1/4π)∫_{S²} f(u) du ≈ Σ_m w_m f(u_m).  Every grid is inversion symmetric (u and −u carry
the same weight), so Σ_m w_m sin(ω u_m·r) vanishes to rounding for any ω.

A grid of M points integrates the ERoPE kernel cos(ω u·r) to within 1e-5 of
sinc(ω r) = j₀(ω r) for phases ω·r ≤ b(M); :data:`MAX_PHASE` holds b(M) for the grids the
reference code tabulates (Tab. S3 of the paper, via ``LEBEDEV_FREQUENCY_LOOKUP``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from jaxtyping import Float

__all__ = ["GRID_SIZES", "MAX_PHASE", "lebedev_grid", "max_phase"]

#: Every Lebedev grid size provided (the sizes of e3x's and SciPy's tables alike).
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


#: grid size -> degree of exactness, the ``n`` of ``scipy.integrate.lebedev_rule``.
ORDERS: dict[int, int] = dict(zip(GRID_SIZES, (
    3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 35, 41, 47, 53, 59, 65, 71, 77, 83, 89, 95,
    101, 107, 113, 119, 125, 131,
)))

_PERMUTATIONS = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


def _e3x_order(u: np.ndarray) -> np.ndarray:
    """Permutation that puts SciPy's points (M, 3) in the order of e3x's tables.

    Both list the octahedral orbits in the same order; inside an orbit e3x orders

    * a 48-point orbit (|x|, |y|, |z| distinct, none 0) by the coordinate permutation of
      the orbit's first point (r,s,t), (r,t,s), (s,r,t), (s,t,r), (t,r,s), (t,s,r), then
      by signs;
    * other orbits block by block (a block = one |x|, |y|, |z| pattern) by signs,

    where "by signs" is lexicographic with + before −, over (x, y, z) except for the
    (a, a, b) patterns, whose two equal coordinates come first.
    """
    a = np.round(np.abs(u), 12)
    orbit_key = np.sort(a, axis=1)
    order: list[int] = []
    start = 0
    for end in range(1, len(u) + 1):
        if end < len(u) and np.array_equal(orbit_key[end], orbit_key[start]):
            continue
        v = orbit_key[start]
        idx = list(range(start, end))
        if v[0] > 0 and v[0] != v[1] and v[1] != v[2]:
            base = a[start]

            def key(j):
                perm = tuple(int(np.flatnonzero(base == a[j][c])[0]) for c in range(3))
                return (_PERMUTATIONS.index(perm), tuple(u[j] < 0))
        else:
            block, prev, blocks = -1, None, {}
            for j in idx:
                if prev is None or not np.array_equal(a[j], prev):
                    block, prev = block + 1, a[j]
                blocks[j] = block

            def key(j):
                x, y, z = a[j]
                c = [0, 1, 2]
                if min(x, y, z) > 0:
                    if x == z != y:
                        c = [0, 2, 1]
                    elif y == z != x:
                        c = [1, 2, 0]
                return (blocks[j], tuple(u[j][c] < 0))
        order += sorted(idx, key=key)
        start = end
    return np.array(order)


@functools.lru_cache(maxsize=None)
def lebedev_grid(num: int) -> tuple[Float[np.ndarray, "M 3"], Float[np.ndarray, "M"]]:
    """Directions u_m (M, 3) and weights w_m (M,) of the M = ``num`` point Lebedev grid.

    Returned as float64 numpy arrays (read-only); weights sum to 1.

    Raises:
      ValueError: if ``num`` is not one of :data:`GRID_SIZES`.
    """
    if num not in GRID_SIZES:
        raise ValueError(f"no Lebedev grid with {num} points; available sizes: {GRID_SIZES}")
    from scipy.integrate import lebedev_rule

    x, w = lebedev_rule(ORDERS[num])
    u = np.asarray(x, np.float64).T
    order = _e3x_order(u)
    u, w = np.ascontiguousarray(u[order]), np.asarray(w, np.float64)[order]
    w = w / w.sum()
    if u.shape != (num, 3) or abs(w.sum() - 1.0) > 1e-12:
        raise RuntimeError(f"SciPy's {num}-point Lebedev grid is malformed")
    u.setflags(write=False)
    w.setflags(write=False)
    return u, w
