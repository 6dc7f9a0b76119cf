"""Exact all-to-all node attention (AllScAIP-style; Qu & Wood et al., arXiv 2603.06567).

Multi-head softmax attention over *all* atoms of the same structure, with an optional
learned distance bias.  For heads h = 1 … H with width d = F_qk / H:

    s_hij = ⟨q_hi, k_hj⟩/√d + b_h(r_ij),     a_hij = softmax_{j ∈ g(i), j real}(s_hij)
    y_i   = Σ_j a_hij v_hj
    b_h(r) = log(softplus(Σ_k w_hk j₀(ω_k r)) + ε),   j₀(x) = sin x / x

q and k come from the scalar (0+) channel of the features, so a_hij is invariant and the
values v_j may carry any degree (the output keeps their parity and degree: equivariant).
ω_k are log-spaced from ``min_frequency`` to ``max_frequency`` (π/120 … π/0.25 Å⁻¹, K = 32);
w (H × K) starts at 1/K.  (AllScAIP writes b = log(c·(…)); a constant c shifts every score
of a row equally and cancels in the softmax, so it is left out.)

Everything depends on positions through r_ij only, so the block is exactly translation,
rotation and permutation invariant at every distance.  Cost and memory O(G·S²·H) in the
slot layout (graphs of S atom slots), O(N²·H) for arbitrary segment layouts: this is the
exact O(N²) counterpart of EFA, whose ERoPE kernel averages the same j₀ over a Lebedev grid.
Masked pairs (padding atoms, other structures) get zero weight.

**Periodic cells** (``cells`` given; :attr:`AllToAllConfig.periodic` is True): as AllScAIP
(fairchem) does, r_ij is the *minimum-image* distance min_n |r_j − r_i + n·cell|
(:func:`~efa_calc.nn.long_range.pair_kernels.minimum_image_distances`, exact for reduced
triclinic cells), and i attends to every atom j of its cell once, O(N²) over the cell's
atoms.  The energy is then periodic (wrapping an atom by a lattice vector changes
nothing), invariant under a joint rotation of cell and positions, and *continuous but not
smooth*: where the nearest image of a pair switches (|r_ij| passes half a lattice
spacing), r_ij has a kink, so forces and stress jump there (by an amount set by the
distance bias's slope at that distance).  A supercell is **not** consistent: in a 2×2×2
supercell an atom attends to 8 copies of every atom, at other minimum-image distances,
so the energy is not 8× that of the cell.  A molecule in a box at least twice its
extent equals the isolated molecule exactly.  Stress by autodiff through the cell
(:func:`~efa_calc.nn.energy_model.energy_forces_stress`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

from efa_calc.nn.dense import Dense
from efa_calc.nn.long_range import LongRangeConfig, register
from efa_calc.nn.long_range.pair_kernels import minimum_image_distances, pair_j0, pair_layout, safe_distances

__all__ = ["AllToAllConfig", "AllToAllAttention", "distance_frequencies"]

_MASKED = -1e9  # additive score of a masked pair: exp underflows to exactly 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class AllToAllConfig(LongRangeConfig):
    """All-to-all softmax attention.

    Attributes:
      iterations, max_degree, include_pseudotensors: see :class:`LongRangeConfig`.
      num_heads: H.
      qk_features: total query/key width over heads (divisible by H); ``None``: model width.
      v_features: total value width over heads (divisible by H); ``None``: model width.
      distance_bias: add the learned b_h(r_ij).
      num_frequencies: K, distance-bias frequencies.
      min_frequency, max_frequency: ω range of the distance bias in rad/Å (log-spaced).
      epsilon: ε inside the log of the distance bias.
    """

    kind: ClassVar[str] = "all_to_all"
    num_heads: int = 4
    qk_features: int | None = None
    v_features: int | None = None
    distance_bias: bool = True
    num_frequencies: int = 32
    min_frequency: float = math.pi / 120.0
    max_frequency: float = math.pi / 0.25
    epsilon: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        if self.num_heads < 1:
            raise ValueError(f"all_to_all num_heads must be >= 1, got {self.num_heads}")
        for name in ("qk_features", "v_features"):
            val = getattr(self, name)
            if val is not None and val % self.num_heads:
                raise ValueError(f"all_to_all {name}={val} is not divisible by num_heads={self.num_heads}")
        if not 0 < self.min_frequency <= self.max_frequency:
            raise ValueError("all_to_all needs 0 < min_frequency <= max_frequency (rad/Å)")

    @property
    def periodic(self) -> bool:
        """Defined in periodic cells: minimum-image distances (see the module docstring)."""
        return True


def distance_frequencies(config: AllToAllConfig) -> np.ndarray:
    """ω_k in rad/Å, (K,), log-spaced."""
    return np.geomspace(config.min_frequency, config.max_frequency, config.num_frequencies)


@register(AllToAllConfig, init_layers=("query", "key", "value"))
class AllToAllAttention(nn.Module):
    """All-to-all attention block.

    Parameters (flax names): ``query``, ``key`` (``nn.Dense`` on the scalar channel),
    ``value`` (``e3x.nn.Dense``), ``distance_weights`` (H, K).
    """

    config: AllToAllConfig

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
    ) -> Float[Array, "N P D Fv"]:
        """(N, P, (L+1)², F) features and positions (Å) → (N, P, (L+1)², F_v).

        ``cells`` (G, 3, 3), rows a, b, c in Å: periodic graphs, minimum-image r_ij.

        ``axis_name`` (sharded evaluation of one structure, :mod:`efa_calc.backends.sharded`):
        ``node_mask`` marks the atoms this device owns; keys, values, positions and the
        mask of every device are all-gathered over the mesh axis (D·N_local rows each:
        all-to-all attention has no N-independent summary), and the local queries attend
        to all of them.
        """
        cfg = self.config
        n, p, d, f = x.shape
        h = cfg.num_heads
        f_qk, f_v = cfg.qk_features or f, cfg.v_features or f
        if f_qk % h or f_v % h:
            raise ValueError(f"all_to_all widths ({f_qk}, {f_v}) are not divisible by num_heads={h}")
        dtype = x.dtype
        scalars = x[:, 0, 0, :]
        q = nn.Dense(f_qk, dtype=dtype, name="query")(scalars).reshape(n, h, f_qk // h)
        k = nn.Dense(f_qk, dtype=dtype, name="key")(scalars).reshape(n, h, f_qk // h)
        v = Dense(f_v, dtype=dtype, name="value")(x)  # (N, P, D, F_v)

        if axis_name is not None:
            if cells is not None:
                raise ValueError("sharded all-to-all attention evaluates isolated structures only (no cells)")
            if num_graphs != 1:
                raise ValueError("sharded all-to-all attention evaluates one structure (num_graphs=1)")
            gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, axis=0, tiled=True)
            k, v, key_pos, key_mask = gather(k), gather(v), gather(positions), gather(node_mask)
            g, s, same, s_key = 1, n, None, k.shape[0]
        else:
            g, s, same = pair_layout(n, batch_segments, num_graphs, nodes_per_graph)
            key_pos, key_mask, s_key = positions, node_mask, s
        q, k = q.reshape(g, s, h, -1), k.reshape(g, s_key, h, -1)
        scores = jnp.einsum("gihc,gjhc->ghij", q, k) / np.sqrt(f_qk // h)
        if cfg.distance_bias:
            w = self.param("distance_weights", nn.initializers.constant(1.0 / cfg.num_frequencies),
                           (h, cfg.num_frequencies)).astype(dtype)
            if axis_name is None:
                pos = positions.astype(dtype).reshape(g, s, 3)
                dist = None
                if cells is not None:  # one cell per graph (slot layout) or per row (segments)
                    row_cells = cells[:, None] if same is None else cells[batch_segments][None]
                    dist = minimum_image_distances(pos, row_cells.astype(dtype))
                j0 = pair_j0(pos, distance_frequencies(cfg), dist)  # (G, S, S, K)
            else:
                j0 = pair_j0_between(positions.astype(dtype), key_pos.astype(dtype), distance_frequencies(cfg))
            bias = jnp.log(jax.nn.softplus(jnp.einsum("gijk,hk->ghij", j0, w)) + cfg.epsilon)
            scores = scores + bias
        mask = key_mask.reshape(g, 1, 1, s_key)
        if same is not None:
            mask = mask & same[:, None]
        scores = jnp.where(mask, scores, _MASKED)
        attn = jax.nn.softmax(scores, axis=-1) * mask  # a fully masked row (padding graph) gives 0
        vh = v.reshape(g, s_key, p, d, h, f_v // h)
        y = jnp.einsum("ghij,gjpdhc->gipdhc", attn, vh)
        return y.reshape(n, p, d, f_v)


def pair_j0_between(
    positions: Float[Array, "N 3"], key_positions: Float[Array, "Nk 3"], omega: np.ndarray
) -> Float[Array, "1 N Nk K"]:
    """j₀(ω_k |r_i − r_j|) between local atoms i and gathered key atoms j (1 at r = 0, with
    a finite gradient there, as :func:`~efa_calc.nn.long_range.pair_kernels.pair_j0`)."""
    dist = safe_distances(positions[:, None, :] - key_positions[None, :, :])
    return jnp.sinc(dist[..., None] * jnp.asarray(np.asarray(omega) / np.pi, positions.dtype))[None]
