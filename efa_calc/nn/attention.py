"""Euclidean fast attention (EFA), spec §3: linear-cost, rotation-invariant global attention.

For atoms i, j of the same graph g, with ERoPE-rotated queries q̃_im and keys k̃_jm (flattened
over parity, degree and feature to width D_qk) and unrotated values v_j (width D_v):

    KV_gm = Σ_{j∈g} k̃_jm ⊗ v_j                       (D_qk × D_v per graph and grid point)
    y_i   = (1/√D_qk) Σ_m w_m q̃_imᵀ KV_{g(i)m}        (D_v per atom)

which equals the pairwise form y_i = Σ_{j∈g(i)} α_ij v_j with
α_ij ≈ (1/√D_qk) Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) — an unnormalised (no softmax, no 1/N)
linear attention with a Bessel kernel, self-term included.  Cost O(N·M·D_qk·D_v); no N×N
array is ever formed.  Padding atoms (``node_mask`` False) contribute no keys or values.
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

__all__ = ["EuclideanFastAttention", "linear_attention"]


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
      cost O(N·M·D_qk·D_v), memory O(G·M·D_qk·D_v).  For small graphs
      (S·(M·D_qk + D_v) < 2·M·D_qk·D_v, e.g. a batch of 16-atom molecules with D_v = 64)
      the same sum is contracted in the other order, y_i = Σ_j (Σ_m q_im·k_jm) v_j: fewer
      operations, and its (G, S, S) array is then smaller than the (G, M, D_qk, D_v) one,
      so neither cost nor memory ever exceeds the linear order's.
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
        qg, kg, vg = q.reshape(g, s, m, d), k.reshape(g, s, m, d), v.reshape(g, s, -1)
        dv = vg.shape[-1]
        if s * (m * d + dv) < 2 * m * d * dv:  # static: pick the cheaper exact order
            scores = jnp.einsum("gsmd,gtmd->gst", qg, kg)
            return jnp.einsum("gst,gtv->gsv", scores, vg).reshape(n, -1)
        kv = jnp.einsum("gsmd,gsv->gmdv", kg, vg)
        return jnp.einsum("gsmd,gmdv->gsv", qg, kv).reshape(n, -1)
    onehot = (batch_segments[:, None] == jnp.arange(num_graphs)[None, :]).astype(v.dtype)  # (N, G)
    kv = jnp.einsum("nmd,ngv->gmdv", k, onehot[:, :, None] * v[:, None, :])
    per_graph = jnp.einsum("nmd,gmdv->ngv", q, kv)
    return jnp.einsum("ngv,ng->nv", per_graph, onehot)


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
        theta = erope.phases(positions.astype(dtype), jnp.asarray(u, dtype), jnp.asarray(omega, dtype))
        n, m = theta.shape[:2]
        q_rot = erope.rotate(q, theta).reshape(n, m, -1)  # (N, M, D_qk)
        k_rot = erope.rotate(k, theta).reshape(n, m, -1)
        d_qk = q_rot.shape[-1]
        q_rot = q_rot * (jnp.asarray(w, dtype)[None, :, None] / np.sqrt(d_qk))
        mask = node_mask.astype(dtype)
        k_rot = k_rot * mask[:, None, None]
        v_flat = v.reshape(n, -1) * mask[:, None]
        y = linear_attention(q_rot, k_rot, v_flat, batch_segments, num_graphs, nodes_per_graph)
        return y.reshape(v.shape)


#: long-range block kind -> flax module; each takes the arguments of
#: :meth:`EuclideanFastAttention.__call__` and returns per-atom features.
LONG_RANGE_BLOCKS: dict[str, type[nn.Module]] = {"efa": EuclideanFastAttention}
