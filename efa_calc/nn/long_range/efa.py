"""Euclidean fast attention (EFA), spec §3: linear-cost, rotation-invariant global attention.

For atoms i, j of the same graph g, with ERoPE-rotated queries q̃_im and keys k̃_jm (flattened
over parity, degree and feature to width D_qk) and unrotated values v_j (width D_v):

    KV_gm = Σ_{j∈g} k̃_jm ⊗ v_j                       (D_qk × D_v per graph and grid point)
    y_i   = (1/√D_qk) Σ_m w_m q̃_imᵀ KV_{g(i)m}        (D_v per atom)

which equals the pairwise form y_i = Σ_{j∈g(i)} α_ij v_j with
α_ij ≈ (1/√D_qk) Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) — an unnormalised (no softmax, no 1/N)
linear attention with a Bessel kernel, self-term included.  Padding atoms (``node_mask``
False) contribute no keys or values.

Two exact evaluations of the same quadrature sum, chosen statically (:func:`use_pair_kernel`):

* :func:`linear_attention` — the order above, cost O(N·M·D_qk·D_v); no N×N array is formed.
  Used for large structures (more than 64 atoms per graph) and arbitrary segment layouts.
* :func:`pair_kernel_attention` — for batches of small molecules (≤ 64 atom slots per
  graph): the quadrature kernel is summed per atom pair, O(G·S²·M·K).  For 16-atom
  molecules it is ~18× cheaper to differentiate twice (forces, then training gradients).

and one evaluation of the kernel the quadrature approximates (``EFAConfig.kernel = "exact"``,
``EFACalculator(..., efa_exact=True)``):

* :func:`exact_kernel_attention` — y_i = (1/√D_qk) Σ_j Σ_k ⟨q_i^(k), k_j^(k)⟩ j₀(ω_k r_ij) v_j
  with the analytic j₀(x) = sin x / x, O(N²).  It is the yardstick for the Lebedev rule:
  both agree to ~1e-5 while ω_max·r_ij ≤ b(M) (pairs within ``max_length``), and only the
  exact kernel stays rotation invariant beyond it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import e3x
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

from efa_calc.nn import erope
from efa_calc.nn.dense import Dense
from efa_calc.nn.lebedev import lebedev_grid
from efa_calc.nn.long_range import LongRangeConfig, register
from efa_calc.nn.long_range.pair_kernels import (
    exact_kernel_attention, fold_antipodal, pair_j0, pair_kernel_attention, pair_layout, pair_phases, safe_distances,
    use_pair_kernel,
)
from efa_calc.nn.long_range.reciprocal import check_periodic_settings, periodic_attention, reciprocal_cutoff

__all__ = [
    "EFAConfig", "EuclideanFastAttention", "exact_kernel_attention", "linear_attention", "pair_kernel_attention",
    "use_pair_kernel", "pair_layout", "pair_j0", "pair_phases", "safe_distances", "fold_antipodal",
]

KERNELS = ("lebedev", "exact")
PERIODIC_FIELDS = ("periodic_smoothing", "reciprocal_tolerance", "max_reciprocal_vectors")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EFAConfig(LongRangeConfig):
    """Euclidean fast attention (ERoPE + Lebedev quadrature), spec §2–§5.

    Attributes:
      iterations: message-passing iterations (0-based) that get an EFA branch.
      lebedev_num: number of Lebedev grid points M; must be an available grid size.
      max_frequency: b_max, the largest phase ω·r the grid integrates exactly (rad).
      max_length: r_max in Å; rotational invariance holds for pair distances up to it.
        The largest ERoPE frequency is ω_max = b_max / r_max (rad/Å).
      max_degree: degree of the EFA input features in intermediate iterations
        (``None`` keeps the degree of the MPNN features).
      include_pseudotensors: parity of the EFA input in intermediate iterations.
      qk_features: query/key width F_qk (even); ``None`` means the model width.
      v_features: value width F_v; ``None`` means the model width.
      activation: activation on queries and keys (``"gelu"``: e3x gated tanh-GELU;
        ``"identity"``).
      kernel: ``"lebedev"`` (the paper's O(N) quadrature) or ``"exact"`` (the analytic
        j₀ kernel it approximates, O(N²); same parameters, rotation invariant at every
        distance).
      periodic_smoothing: λ in Å, or ``None`` (molecular EFA, unchanged).  Set, the block is
        *periodic EFA* (:mod:`.reciprocal`): channel k's kernel is the lattice sum of
        j₀(ω_k r)·exp(−r²/2λ²), evaluated on the reciprocal lattice of the cell (molecules:
        the same damped kernel in open space, O(N²)); the Lebedev grid is then unused.
      reciprocal_tolerance: relative weight f̂ neglected beyond q_on (periodic EFA).
      max_reciprocal_vectors: budget of G vectors per structure (half space, periodic EFA):
        a cell needing more is refused before compiling.
    """

    kind: ClassVar[str] = "efa"
    lebedev_num: int
    max_frequency: float
    max_length: float
    qk_features: int | None = None
    v_features: int | None = None
    activation: str = "gelu"
    kernel: str = "lebedev"
    periodic_smoothing: float | None = None
    reciprocal_tolerance: float = 1e-12
    max_reciprocal_vectors: int = 50_000

    def __post_init__(self):
        super().__post_init__()
        if self.qk_features is not None and self.qk_features % 2:
            raise ValueError(f"EFA qk_features must be even (channel pairs are rotated), got {self.qk_features}")
        if self.activation not in ("gelu", "identity"):
            raise ValueError(f"unknown EFA activation {self.activation!r}; use 'gelu' or 'identity'")
        if not (self.max_length > 0 and self.max_frequency > 0):
            raise ValueError("EFA max_length and max_frequency must be positive")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown EFA kernel {self.kernel!r}; use one of {KERNELS}")
        check_periodic_settings(self.periodic_smoothing, self.reciprocal_tolerance, self.max_reciprocal_vectors)

    def to_dict(self) -> dict:
        """As :meth:`LongRangeConfig.to_dict`; molecular EFA omits the periodic fields, so its
        ``config.json`` is written exactly as before they existed."""
        d = super().to_dict()
        if not self.periodic:
            for name in PERIODIC_FIELDS:
                d.pop(name)
        return d

    @property
    def periodic(self) -> bool:
        """Periodic EFA (``periodic_smoothing`` set) is defined in periodic cells."""
        return self.periodic_smoothing is not None

    @property
    def omega_max(self) -> float:
        """Largest ERoPE frequency b_max / r_max (rad/Å)."""
        return float(self.max_frequency) / float(self.max_length)

    @property
    def reciprocal_cutoff(self) -> tuple[float, float]:
        """(q_on, q_max) of periodic EFA's G set in 1/Å (:func:`.reciprocal.reciprocal_cutoff`)."""
        if not self.periodic:
            raise ValueError("reciprocal_cutoff: this EFA block is molecular (periodic_smoothing is None)")
        return reciprocal_cutoff(self.omega_max, self.periodic_smoothing, self.reciprocal_tolerance)

    @property
    def invariance_length(self) -> float:
        return math.inf if self.kernel == "exact" or self.periodic else float(self.max_length)


def linear_attention(
    q: Float[Array, "N M Dqk"],
    k: Float[Array, "N M Dqk"],
    v: Float[Array, "N Dv"],
    batch_segments: Integer[Array, "N"],
    num_graphs: int,
    nodes_per_graph: Optional[int] = None,
    axis_name: Optional[str] = None,
) -> Float[Array, "N Dv"]:
    """y_i = Σ_m q_im · Σ_{j∈g(i)} k_jm ⊗ v_j, summing over atoms before contracting.

    With ``axis_name`` (inside ``shard_map``) the grid sums KV_gm are all-reduced over that
    mesh axis: one ``psum`` of G·M·D_qk·D_v numbers, whatever the number of atoms.

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
        if axis_name is not None:
            kv = jax.lax.psum(kv, axis_name)
        return jnp.einsum("gsmd,gmdv->gsv", q.reshape(g, s, m, d), kv).reshape(n, -1)
    onehot = (batch_segments[:, None] == jnp.arange(num_graphs)[None, :]).astype(v.dtype)  # (N, G)
    kv = jnp.einsum("nmd,ngv->gmdv", k, onehot[:, :, None] * v[:, None, :])
    if axis_name is not None:
        kv = jax.lax.psum(kv, axis_name)
    per_graph = jnp.einsum("nmd,gmdv->ngv", q, kv)
    return jnp.einsum("ngv,ng->nv", per_graph, onehot)


@register(EFAConfig, init_layers=("query", "key", "value"))
class EuclideanFastAttention(nn.Module):
    """EFA block: q, k, v projections, ERoPE on q and k, linear global attention.

    Attributes:
      config: the :class:`EFAConfig` (grid, frequencies, widths, kernel).

    Parameters (flax names): ``query``, ``key``, ``value`` (``e3x.nn.Dense``: one matrix per
    degree and parity, bias on the scalar channel only).
    """

    config: EFAConfig

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "N P D F"],
        positions: Float[Array, "N 3"],
        batch_segments: Integer[Array, "N"],
        node_mask: Bool[Array, "N"],
        num_graphs: int,
        nodes_per_graph: Optional[int] = None,
        axis_name: Optional[str] = None,
        cells: Optional[Float[Array, "G 3 3"]] = None,
        reciprocal_indices: Optional[Integer[Array, "G K 3"]] = None,
        reciprocal_mask: Optional[Bool[Array, "G K"]] = None,
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
          axis_name: sharded evaluation (:mod:`efa_calc.backends.sharded`): ``node_mask`` marks the
            atoms this device owns, and the grid sums are all-reduced over this mesh axis
            (always the linear order; the exact kernel cannot be sharded).
          cells, reciprocal_indices, reciprocal_mask: periodic EFA in a periodic batch: cells
            (G, 3, 3) Å (rows a, b, c) and each graph's G set, (G, K, 3) Miller indices with a
            (G, K) mask (:mod:`efa_calc.graphs.reciprocal`).  Periodic EFA without ``cells``
            evaluates molecules in open space.

        Returns:
          (N, P, (L+1)², F_v): the value's parity and degree, F_v channels.
        """
        cfg = self.config
        f_qk = cfg.qk_features or x.shape[-1]
        f_v = cfg.v_features or x.shape[-1]
        q = Dense(f_qk, dtype=x.dtype, name="query")(x)
        k = Dense(f_qk, dtype=x.dtype, name="key")(x)
        v = Dense(f_v, dtype=x.dtype, name="value")(x)
        if cfg.activation == "gelu":
            q, k = e3x.nn.gelu(q), e3x.nn.gelu(k)

        dtype = q.dtype
        u, w = lebedev_grid(cfg.lebedev_num)
        omega = erope.frequencies(f_qk, cfg.max_frequency, cfg.max_length)
        mask = node_mask.astype(dtype)
        if cfg.periodic or cells is not None:
            if not cfg.periodic or axis_name is not None:
                raise ValueError("periodic EFA (periodic_smoothing set) on one device only; a molecular EFA block "
                                 "(periodic_smoothing None) is not defined in cells")
            y = periodic_attention(q, k, v, mask, positions, omega, cfg.periodic_smoothing, cfg.reciprocal_cutoff,
                                   batch_segments, num_graphs, nodes_per_graph,
                                   cells, reciprocal_indices, reciprocal_mask)
            return y.reshape(v.shape)
        if axis_name is not None and cfg.kernel == "exact":
            raise ValueError("EFA's exact kernel (O(N²), efa_exact=True) cannot be sharded; use the Lebedev kernel")
        if cfg.kernel == "exact":
            n = q.shape[0]
            d_qk = q.shape[1] * q.shape[2] * q.shape[3]
            y = exact_kernel_attention(
                q.reshape(n, -1, f_qk) / np.sqrt(d_qk), k.reshape(n, -1, f_qk) * mask[:, None, None],
                v.reshape(n, -1) * mask[:, None], positions.astype(dtype), omega, batch_segments, num_graphs,
                nodes_per_graph,
            )
            return y.reshape(v.shape)
        if axis_name is None and use_pair_kernel(num_graphs, nodes_per_graph, len(w), f_qk):
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
        y = linear_attention(q_rot, k_rot, v_flat, batch_segments, num_graphs, nodes_per_graph, axis_name)
        return y.reshape(v.shape)


