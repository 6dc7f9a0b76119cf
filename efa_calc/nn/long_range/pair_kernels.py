"""O(N²) pair helpers shared by the long-range blocks: safe distances, the analytic EFA
kernel j₀(ω r) per pair (:func:`exact_kernel_attention`, the limit of infinitely many
Lebedev points), open EFA's Lebedev sum evaluated pair by pair for batches of small
molecules (:func:`pair_kernel_attention`) and the batch layout of N × N blocks.  Positions
in Å, ω in rad/Å."""

from __future__ import annotations

import itertools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

__all__ = ["exact_kernel_attention", "fold_antipodal", "minimum_image_distances", "pair_j0", "pair_kernel_attention",
           "pair_layout", "pair_phases", "quadrature_cosine_kernel", "safe_distances", "use_pair_kernel"]


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


def fold_antipodal(directions: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """One point of every antipodal pair (u, −u) with doubled weight, or None when the grid
    is not inversion symmetric with equal weights.  Σ_m w_m cos(u_m·a) is then unchanged
    and Σ_m w_m sin(u_m·a) = 0 exactly."""
    # O(M) lookup of −u by rounded coordinates (an M×M dot product is 270 MB for M = 5810)
    key = [tuple(r) for r in np.round(directions, 9) + 0.0]
    index = {k: i for i, k in enumerate(key)}
    partner = np.array([index.get(tuple(-np.asarray(k) + 0.0), i) for i, k in enumerate(key)])
    ok = np.allclose(directions[partner], -directions, atol=1e-12) and np.allclose(weights[partner], weights, atol=1e-15)
    if not ok:
        return None
    keep = np.flatnonzero(np.arange(len(directions)) < partner)
    return directions[keep], 2.0 * weights[keep]


#: :func:`pair_kernel_attention` is used for slot sizes S up to this, and while its
#: (G, S, S, M/2, K) phase array stays below :data:`PAIR_KERNEL_MAX_ELEMENTS`; larger
#: graphs use the linear order, whose cost and memory are O(N).
PAIR_KERNEL_MAX_SLOTS = 64
PAIR_KERNEL_MAX_ELEMENTS = 2**26


def use_pair_kernel(num_graphs: int, nodes_per_graph: int | None, lebedev_num: int, qk_features: int) -> bool:
    """Static choice between :func:`pair_kernel_attention` and :func:`linear_attention`."""
    if nodes_per_graph is None or nodes_per_graph > PAIR_KERNEL_MAX_SLOTS:
        return False
    return num_graphs * nodes_per_graph**2 * lebedev_num * qk_features // 4 <= PAIR_KERNEL_MAX_ELEMENTS


def pair_phases(
    positions: Float[Array, "G S 3"], directions: Float[Array, "M 3"], omega: Float[Array, "K"]
) -> Float[Array, "G S S M K"]:
    """ω_k u_m·(r_i − r_j) for every atom pair of each graph (rad; positions in Å)."""
    proj = jnp.einsum("gix,mx->gim", positions, directions)  # u_m·r_i; u_m·r_ij = proj_i − proj_j
    return (proj[:, :, None, :] - proj[:, None, :, :])[..., None] * omega


def quadrature_cosine_kernel(
    positions: Float[Array, "G S 3"],
    directions: Float[np.ndarray, "M 3"],
    weights: Float[np.ndarray, "M"],
    omega: Float[np.ndarray, "K"],
) -> Float[Array, "G S S K"]:
    """C_ijk = Σ_m w_m cos(ω_k u_m·(r_i − r_j)) for every atom pair of each graph.

    A ``custom_jvp`` with the analytic tangent

        dC_ijk = D_ijk · (dr_i − dr_j),   D_ijk = −Σ_m w_m ω_k u_m sin(ω_k u_m·r_ij),

    so that reverse mode keeps only D (G, S, S, K, 3) instead of the (G, S, S, M, K) phase,
    cosine and sine arrays, and every EFA layer on the same grid shares one evaluation
    (XLA merges the identical computations; the layers' cotangents meet in (G, S, S, K)).

    Args:
      positions: (G, S, 3) in Å.
      directions, weights: grid (M, 3) and weights (M,) as numpy arrays (constants).
      omega: (K,) frequencies in rad/Å (constants).
    """
    dtype = positions.dtype
    u, w, om = (jnp.asarray(a, dtype) for a in (directions, weights, omega))

    @jax.custom_jvp
    def kernel(r):
        return jnp.einsum("gijmk,m->gijk", jnp.cos(pair_phases(r, u, om)), w)

    @kernel.defjvp
    def _(primals, tangents):
        (r,), (dr,) = primals, tangents
        th = pair_phases(r, u, om)
        d = -jnp.einsum("gijmk,m,mx,k->gijkx", jnp.sin(th), w, u, om)
        dr_ij = dr[:, :, None, :] - dr[:, None, :, :]
        return jnp.einsum("gijmk,m->gijk", jnp.cos(th), w), jnp.einsum("gijkx,gijx->gijk", d, dr_ij)

    return kernel(positions)


def pair_kernel_attention(
    q: Float[Array, "N PD F"],
    k: Float[Array, "N PD F"],
    v: Float[Array, "N Dv"],
    positions: Float[Array, "N 3"],
    directions: Float[np.ndarray, "M 3"],
    weights: Float[np.ndarray, "M"],
    omega: Float[np.ndarray, "K"],
    num_graphs: int,
    nodes_per_graph: int,
) -> Float[Array, "N Dv"]:
    """The same EFA sum evaluated pair by pair, for graphs of a few dozen atoms.

    ERoPE rotates each channel pair (a, b) of q and k by θ_imk = ω_k u_m·r_i, i.e. multiplies
    q^a + i q^b by e^{iθ}.  The rotated dot product of atoms i and j is therefore

        Σ_m w_m q̃_im·k̃_jm = Σ_k [X_ijk C_ijk − Y_ijk S_ijk],
        X_ijk = Σ_pd (q^a_i k^a_j + q^b_i k^b_j),   Y_ijk = Σ_pd (q^b_i k^a_j − q^a_i k^b_j),
        C_ijk = Σ_m w_m cos(ω_k u_m·r_ij),          S_ijk = Σ_m w_m sin(ω_k u_m·r_ij),

    with r_ij = r_i − r_j: the identical Lebedev sum.  Lebedev grids are inversion
    symmetric (u and −u, equal weights), so S = 0 and C needs only one point of each
    antipodal pair (:func:`fold_antipodal`); other grids keep every point and S.  Cost O(G·S²·M·K) instead of
    O(N·M·D_qk·D_v); for a batch of 16-atom molecules about 20× fewer operations, and the
    positions enter only through C and S, which makes forces and their parameter
    gradients (training) much cheaper than differentiating through the rotated arrays.

    Args:
      q, k: (N, P·(L+1)², F_qk) unrotated queries and keys, F_qk = 2K; keys of padding
        atoms must be zero, 1/√D_qk folded into ``q``.
      v: (N, D_v) values, zero for padding atoms.
      positions: (N, 3) in Å (centred per graph).
      directions, weights: the Lebedev grid (M, 3), (M,) (weights sum to 1), as numpy
        arrays (static: the grid's symmetry is checked at trace time).
      omega: ERoPE frequencies (K,) in rad/Å.
      num_graphs, nodes_per_graph: slot layout G × S = N.

    Returns:
      (N, D_v).
    """
    g, s = num_graphs, nodes_per_graph
    pd, f = q.shape[1:]
    qa, qb = jnp.moveaxis(q.reshape(g, s, pd, f // 2, 2), -1, 0)  # (G, S, PD, K) each
    ka, kb = jnp.moveaxis(k.reshape(g, s, pd, f // 2, 2), -1, 0)
    x = jnp.einsum("gipk,gjpk->gijk", qa, ka) + jnp.einsum("gipk,gjpk->gijk", qb, kb)
    r = positions.reshape(g, s, 3)
    half = fold_antipodal(np.asarray(directions, np.float64), np.asarray(weights, np.float64))
    if half is not None:
        scores = jnp.einsum("gijk,gijk->gij", x, quadrature_cosine_kernel(r, *half, np.asarray(omega, np.float64)))
    else:  # the sine part survives only on grids without inversion symmetry
        directions, weights, omega = (jnp.asarray(a, positions.dtype) for a in (directions, weights, omega))
        phase = pair_phases(r, directions, omega)
        y = jnp.einsum("gipk,gjpk->gijk", qb, ka) - jnp.einsum("gipk,gjpk->gijk", qa, kb)
        scores = jnp.einsum("gijk,gijmk,m->gij", x, jnp.cos(phase), weights)
        scores = scores - jnp.einsum("gijk,gijmk,m->gij", y, jnp.sin(phase), weights)
    return jnp.einsum("gij,gjv->giv", scores, v.reshape(g, s, -1)).reshape(g * s, -1)
