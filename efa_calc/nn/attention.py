"""Euclidean fast attention (EFA), spec §3: linear-cost, rotation-invariant global attention.

For atoms i, j of the same graph g, with ERoPE-rotated queries q̃_im and keys k̃_jm (flattened
over parity, degree and feature to width D_qk) and unrotated values v_j (width D_v):

    KV_gm = Σ_{j∈g} k̃_jm ⊗ v_j                       (D_qk × D_v per graph and grid point)
    y_i   = (1/√D_qk) Σ_m w_m q̃_imᵀ KV_{g(i)m}        (D_v per atom)

which equals the pairwise form y_i = Σ_{j∈g(i)} α_ij v_j with
α_ij ≈ (1/√D_qk) Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) — an unnormalised (no softmax, no 1/N)
linear attention with a Bessel kernel, self-term included.  Padding atoms (``node_mask``
False) contribute no keys or values.

Two exact evaluations of the same sum, chosen statically (:func:`use_pair_kernel`):

* :func:`linear_attention` — the order above, cost O(N·M·D_qk·D_v); no N×N array is formed.
  Used for large structures (more than 64 atoms per graph) and arbitrary segment layouts.
* :func:`pair_kernel_attention` — for batches of small molecules (≤ 64 atom slots per
  graph): the quadrature kernel is summed per atom pair, O(G·S²·M·K).  For 16-atom
  molecules it is ~18× cheaper to differentiate twice (forces, then training gradients).
"""

from __future__ import annotations

from typing import Optional

import e3x
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

from efa_calc.config import EFAConfig
from efa_calc.nn import erope
from efa_calc.nn.lebedev import lebedev_grid

__all__ = ["EuclideanFastAttention", "linear_attention", "pair_kernel_attention", "use_pair_kernel"]


def linear_attention(
    q: Float[Array, "N M Dqk"],
    k: Float[Array, "N M Dqk"],
    v: Float[Array, "N Dv"],
    batch_segments: Integer[Array, "N"],
    num_graphs: int,
    nodes_per_graph: Optional[int] = None,
) -> Float[Array, "N Dv"]:
    """y_i = Σ_m q_im · Σ_{j∈g(i)} k_jm ⊗ v_j, summing over atoms before contracting.

    Two exact layouts, chosen statically:

    * ``nodes_per_graph=S`` (slot layout: graph g owns nodes g·S … g·S+S−1, e.g. a single
      padded structure, or a batch padded per graph): a reshape to (G, S, …);
      cost O(N·M·D_qk·D_v), memory O(G·M·D_qk·D_v).
    * ``nodes_per_graph=None`` (arbitrary ``batch_segments``): one-hot segment matrices;
      cost O(N·G·M·D_qk·D_v), memory O(N·G·D_v + G·M·D_qk·D_v).

    Quadrature weights and 1/√D_qk must already be folded into ``q``; masked atoms must
    have zero ``k`` and ``v``.
    """
    n, m, d = q.shape
    if nodes_per_graph is not None:
        g, s = num_graphs, nodes_per_graph
        if g * s != n:
            raise ValueError(f"slot layout needs num_graphs*nodes_per_graph == N, got {g}*{s} != {n}")
        kv = jnp.einsum("gsmd,gsv->gmdv", k.reshape(g, s, m, d), v.reshape(g, s, -1))
        return jnp.einsum("gsmd,gmdv->gsv", q.reshape(g, s, m, d), kv).reshape(n, -1)
    onehot = (batch_segments[:, None] == jnp.arange(num_graphs)[None, :]).astype(v.dtype)  # (N, G)
    kv = jnp.einsum("nmd,ngv->gmdv", k, onehot[:, :, None] * v[:, None, :])
    per_graph = jnp.einsum("nmd,gmdv->ngv", q, kv)
    return jnp.einsum("ngv,ng->nv", per_graph, onehot)


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
    omega = jnp.asarray(omega, positions.dtype)
    half = fold_antipodal(np.asarray(directions, np.float64), np.asarray(weights, np.float64))
    directions, weights = (jnp.asarray(a, positions.dtype) for a in (half or (directions, weights)))
    r = positions.reshape(g, s, 3)
    proj = jnp.einsum("gix,mx->gim", r, directions)  # u_m·r_i; u_m·r_ij = proj_i − proj_j
    phase = (proj[:, :, None, :] - proj[:, None, :, :])[..., None] * omega  # (G, S, S, M, K)
    scores = jnp.einsum("gijk,gijmk,m->gij", x, jnp.cos(phase), weights)
    if half is None:  # the sine part survives only on grids without inversion symmetry
        y = jnp.einsum("gipk,gjpk->gijk", qb, ka) - jnp.einsum("gipk,gjpk->gijk", qa, kb)
        scores = scores - jnp.einsum("gijk,gijmk,m->gij", y, jnp.sin(phase), weights)
    return jnp.einsum("gij,gjv->giv", scores, v.reshape(g, s, -1)).reshape(g * s, -1)


class EuclideanFastAttention(nn.Module):
    """EFA block: q, k, v projections, ERoPE on q and k, linear global attention.

    Attributes:
      config: the :class:`~efa_calc.config.EFAConfig` (grid, frequencies, widths).
      lebedev_num: overrides ``config.lebedev_num`` (e.g. evaluate trained weights on a
        finer grid to test rotational invariance).

    Parameters (flax names): ``query``, ``key``, ``value`` (``e3x.nn.Dense``: one matrix per
    degree and parity, bias on the scalar channel only).
    """

    config: EFAConfig
    lebedev_num: Optional[int] = None

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "N P D F"],
        positions: Float[Array, "N 3"],
        batch_segments: Integer[Array, "N"],
        node_mask: Bool[Array, "N"],
        num_graphs: int,
        nodes_per_graph: Optional[int] = None,
    ) -> Float[Array, "N Pv Dv Fv"]:
        """Apply EFA.

        Args:
          x: input features (N, P, (L+1)², F).
          positions: (N, 3) in Å; should be centred per graph (ERoPE uses absolute
            positions, centring keeps the phases small in float32).
          batch_segments: (N,) graph index of every atom.
          node_mask: (N,) False for padding atoms.
          num_graphs: G (static).
          nodes_per_graph: static slot size, see :func:`linear_attention`.

        Returns:
          (N, P, (L+1)², F_v): the value's parity and degree, F_v channels.
        """
        cfg = self.config
        f_qk = cfg.qk_features or x.shape[-1]
        f_v = cfg.v_features or x.shape[-1]
        q = e3x.nn.Dense(f_qk, dtype=x.dtype, name="query")(x)
        k = e3x.nn.Dense(f_qk, dtype=x.dtype, name="key")(x)
        v = e3x.nn.Dense(f_v, dtype=x.dtype, name="value")(x)
        if cfg.activation == "gelu":
            q, k = e3x.nn.gelu(q), e3x.nn.gelu(k)

        dtype = q.dtype
        u, w = lebedev_grid(self.lebedev_num or cfg.lebedev_num)
        omega = erope.frequencies(f_qk, cfg.max_frequency, cfg.max_length)
        mask = node_mask.astype(dtype)
        if use_pair_kernel(num_graphs, nodes_per_graph, len(w), f_qk):
            n = q.shape[0]
            d_qk = q.shape[1] * q.shape[2] * q.shape[3]
            y = pair_kernel_attention(
                q.reshape(n, -1, f_qk) / np.sqrt(d_qk), k.reshape(n, -1, f_qk) * mask[:, None, None],
                v.reshape(n, -1) * mask[:, None], positions.astype(dtype), u, w, omega, num_graphs,
                nodes_per_graph,
            )
            return y.reshape(v.shape)
        theta = erope.phases(positions.astype(dtype), jnp.asarray(u, dtype), jnp.asarray(omega, dtype))
        n, m = theta.shape[:2]
        q_rot = erope.rotate(q, theta).reshape(n, m, -1)  # (N, M, D_qk)
        k_rot = erope.rotate(k, theta).reshape(n, m, -1)
        d_qk = q_rot.shape[-1]
        q_rot = q_rot * (jnp.asarray(w, dtype)[None, :, None] / np.sqrt(d_qk))
        k_rot = k_rot * mask[:, None, None]
        v_flat = v.reshape(n, -1) * mask[:, None]
        y = linear_attention(q_rot, k_rot, v_flat, batch_segments, num_graphs, nodes_per_graph)
        return y.reshape(v.shape)


#: long-range block kind -> flax module; each takes the arguments of
#: :meth:`EuclideanFastAttention.__call__` and returns per-atom features.
LONG_RANGE_BLOCKS: dict[str, type[nn.Module]] = {"efa": EuclideanFastAttention}
