"""Clebsch–Gordan coupling of e3x irreps: the path list and the per-edge coupling tables that
both message-passing kernels (:mod:`efa_calc.nn.tensor`, :mod:`efa_calc.nn.tensor_cueq`)
are built from.  Degrees ℓ, parity slots q/r, Cartesian order and Racah normalisation as
in e3x; a path (0, ℓ₁) ⊗ (q, ℓ₂) → (r, ℓ₃) is allowed when |ℓ₁−ℓ₂| ≤ ℓ₃ ≤ ℓ₁+ℓ₂, the
parities match and its CG block is not zero."""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import e3x
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["Path", "block", "clebsch_gordan", "coupling_paths", "coupling_table", "irreps", "max_degree"]


@functools.lru_cache(maxsize=None)
def clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    """Dense e3x CG tensor ((l1+1)², (l2+1)², (l3+1)²) in float64 (Cartesian order)."""
    with jax.enable_x64(True), jax.ensure_compile_time_eval():
        return np.asarray(e3x.so3.clebsch_gordan(l1, l2, l3, cartesian_order=True), np.float64)


def irreps(num_parity: int, max_degree: int) -> list[tuple[int, int, int]]:
    """(parity slot, degree, parity bit) for every irrep block (e3x's convention)."""
    if num_parity == 2:
        return [(0, l, 0) for l in range(max_degree + 1)] + [(1, l, 1) for l in range(max_degree + 1)]
    return [(0, l, l % 2) for l in range(max_degree + 1)]


def block(l: int) -> slice:
    return slice(l * l, (l + 1) ** 2)


class Path(NamedTuple):
    """One coupling path (0, ℓ₁) ⊗ (q, ℓ₂) → (r, ℓ₃)."""

    l1: int
    q: int
    l2: int
    r: int
    l3: int


@functools.lru_cache(maxsize=None)
def coupling_paths(l1max: int, p2n: int, l2max: int, p3n: int, l3max: int) -> tuple[Path, ...]:
    """The allowed paths with a non-zero CG block (filter: one parity slot, parity ℓ₁ mod 2)."""
    cg = clebsch_gordan(l1max, l2max, l3max)
    paths = []
    for (_, a, d1), (q, b, d2), (r, c, d3) in itertools.product(
        irreps(1, l1max), irreps(p2n, l2max), irreps(p3n, l3max)
    ):
        if (d1 + d2) % 2 != d3 or not abs(a - b) <= c <= a + b:
            continue
        if np.any(cg[block(a), block(b), block(c)]):
            paths.append(Path(a, q, b, r, c))
    return tuple(paths)


def coupling_table(angular: Float[Array, "E D1"], l1: int, l2: int, l3: int) -> Float[Array, "E D2 D3"]:
    """T_e[c₂, c₃] = Σ_{c₁} C^{ℓ₁ℓ₂ℓ₃}[c₁,c₂,c₃] Y_{c₁}(r̂_e): shape (E, 2ℓ₂+1, 2ℓ₃+1) (geometry only)."""
    cg = clebsch_gordan(l1, l2, l3)[block(l1), block(l2), block(l3)]
    return jnp.einsum("ei,ijk->ejk", angular[:, block(l1)], jnp.asarray(cg, angular.dtype))


def max_degree(size: int) -> int:
    return int(round(np.sqrt(size))) - 1
