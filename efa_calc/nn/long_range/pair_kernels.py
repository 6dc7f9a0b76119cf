"""O(N²) pair helpers shared by the long-range blocks: safe distances, the analytic EFA
kernel j₀(ω r) per pair (:func:`exact_kernel_attention`, the limit of infinitely many
Lebedev points) and the batch layout of N × N blocks.  Positions in Å, ω in rad/Å."""

from __future__ import annotations

import itertools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

__all__ = ["exact_kernel_attention", "minimum_image_distances", "pair_j0", "pair_layout", "safe_distances"]


def safe_distances(r: Float[Array, "... 3"]) -> Float[Array, "..."]:
    """|r| with a zero (not NaN) gradient at r = 0 (the self-pair i = j)."""
    r2 = jnp.sum(r * r, axis=-1)
    pos = r2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1.0)), 0.0)


def pair_j0(
    positions: Float[Array, "G S 3"], omega: Float[np.ndarray, "K"], distances: Optional[Float[Array, "G S S"]] = None
) -> Float[Array, "G S S K"]:
    """j₀(ω_k r_ij) = sin(ω_k r_ij)/(ω_k r_ij) for every atom pair of each graph (1 at r = 0,
    with a finite gradient there); ``omega`` in rad/Å, positions in Å.  ``distances`` (Å)
    replaces the open-space r_ij (e.g. by :func:`minimum_image_distances`)."""
    dist = safe_distances(positions[:, :, None, :] - positions[:, None, :, :]) if distances is None else distances
    return jnp.sinc(dist[..., None] * jnp.asarray(np.asarray(omega) / np.pi, positions.dtype))  # sinc(x) = sin(πx)/(πx)


def minimum_image_distances(positions: Float[Array, "G S 3"], row_cells: Float[Array, "G R 3 3"]) -> Float[Array, "G S S"]:
    """Minimum-image distances min_n |r_j − r_i + n·cell| (Å) between all atom slots of each
    graph; ``row_cells`` (rows a, b, c in Å) is the cell of atom i: R = 1 (one cell per
    graph, the slot layout) or R = S (one per row, the arbitrary-segment layout).

    The fractional displacement is rounded to the nearest lattice vector, then the minimum
    is taken over that image and its 26 neighbours (n ∈ {−1, 0, 1}³ around it), so a
    skewed (triclinic) cell does not pick a wrong image: exact for every cell whose
    minimum image lies within one lattice step of the rounded one (any Niggli- or
    Minkowski-reduced cell, as ASE's builders give; reduce a pathological cell with
    ``ase.geometry.minkowski_reduce`` first).  Cost and memory O(27·S²) per graph, the 27
    images in sequence so that only one (S, S) array is live.  The image choice has zero
    derivative (rounding), so forces and the cell derivative (stress) are those of the
    chosen image; d = 0 (i = j) has a zero gradient."""
    cell = row_cells[:, :, None]  # (G, R, 1, 3, 3): broadcast over j
    diff = positions[:, None, :, :] - positions[:, :, None, :]  # (G, S, S, 3): r_j − r_i
    frac = jnp.squeeze(diff[..., None, :] @ jnp.linalg.inv(cell), -2)
    base = diff - jnp.squeeze(jax.lax.stop_gradient(jnp.round(frac))[..., None, :] @ cell, -2)
    best = None
    for n in itertools.product((-1.0, 0.0, 1.0), repeat=3):
        d = base + jnp.asarray(n, positions.dtype) @ cell if any(n) else base  # (G, R, 1, 3) image shift
        d2 = jnp.sum(d * d, axis=-1)
        best = d2 if best is None else jnp.minimum(best, d2)
    pos = best > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, best, 1.0)), 0.0)


def pair_layout(
    num_atoms: int, batch_segments: Integer[Array, "N"], num_graphs: int, nodes_per_graph: Optional[int]
) -> tuple[int, int, Optional[Bool[Array, "1 N N"]]]:
    """(G, S, same-graph mask) for O(N²) blocks: the slot layout G × S needs no mask
    between graphs; arbitrary segments are one N × N block masked to same-graph pairs."""
    if nodes_per_graph is not None:
        return num_graphs, nodes_per_graph, None
    return 1, num_atoms, (batch_segments[:, None] == batch_segments[None, :])[None]


def exact_kernel_attention(
    q: Float[Array, "N PD F"],
    k: Float[Array, "N PD F"],
    v: Float[Array, "N Dv"],
    positions: Float[Array, "N 3"],
    omega: Float[np.ndarray, "K"],
    batch_segments: Integer[Array, "N"],
    num_graphs: int,
    nodes_per_graph: Optional[int],
) -> Float[Array, "N Dv"]:
    """EFA with the analytic kernel: the limit of infinitely many Lebedev points.

        y_i = Σ_{j∈g(i)} Σ_k X_ijk j₀(ω_k r_ij) v_j,   X_ijk = Σ_pd (q^a_i k^a_j + q^b_i k^b_j),

    since (1/4π)∮ cos(ω u·r) du = j₀(ω r) = sin(ω r)/(ω r) and the sine part integrates to
    zero.  Cost and memory O(G·S²·K) (slot layout) or O(N²·K).

    Args:
      q, k: (N, P·(L+1)², F_qk) unrotated queries and keys, F_qk = 2K; keys of padding
        atoms zero, 1/√D_qk folded into ``q``.
      v: (N, D_v) values, zero for padding atoms.
      positions: (N, 3) in Å.
      omega: ERoPE frequencies (K,) in rad/Å.
      batch_segments, num_graphs, nodes_per_graph: the batch layout (:func:`pair_layout`).
    """
    n, pd, f = q.shape
    g, s, same = pair_layout(n, batch_segments, num_graphs, nodes_per_graph)
    qa, qb = jnp.moveaxis(q.reshape(g, s, pd, f // 2, 2), -1, 0)
    ka, kb = jnp.moveaxis(k.reshape(g, s, pd, f // 2, 2), -1, 0)
    x = jnp.einsum("gipk,gjpk->gijk", qa, ka) + jnp.einsum("gipk,gjpk->gijk", qb, kb)
    j0 = pair_j0(positions.reshape(g, s, 3), omega)
    scores = jnp.einsum("gijk,gijk->gij", x, j0)
    if same is not None:
        scores = jnp.where(same, scores, 0.0)
    return jnp.einsum("gij,gjv->giv", scores, v.reshape(g, s, -1)).reshape(n, -1)


