"""The message passing of :mod:`efa_calc.nn.tensor` as one cuequivariance segmented polynomial.

Selected by ``message_passing="cuequivariance"`` (:func:`efa_calc.nn.tensor.aggregate_messages`);
needs ``pip install 'efa-calc[cuequivariance]'`` (CPU) or ``'efa-calc[gpu]'`` (CUDA 12, with the
fused kernel), so this module is only imported when that path is traced.

The message of :mod:`efa_calc.nn.tensor`, summed into the destination atom,

    m_i[(r,ℓ₃)][k, u] = Σ_{e: dst_e = i} Σ_{paths p = (ℓ₁,q,ℓ₂,r,ℓ₃)} w_e[p, u]
                        Σ_{i', j} C^p[i', j, k] x[src_e][(q,ℓ₂)][i', u] Y_e[ℓ₁][j],
    w_e[p, u] = g_e · W[p, u] · ρ_e[ℓ₁(p), u],     ρ_e[ℓ, u] = Σ_k g_k(r_e) V_ℓ[k, u]

(C^p the e3x Clebsch–Gordan block of path p with its first two axes swapped, W the ``tensor``
kernel, V the ``filter`` weights, g_e the optional edge gate, u the feature index) is one
segmented tensor product with subscripts ``"u,iu,j,ku+ijk"``: operand 0 holds one segment (F,)
per path (w_e), operand 1 one segment (2ℓ₂+1, F) per input irrep (q, ℓ₂), operand 2 one segment
(2ℓ₁+1,) per basis degree (Y_e), operand 3 one segment (2ℓ₃+1, F) per output irrep (r, ℓ₃).
The segments are laid out in e3x's order, so the flattened (P, (L+1)², F) feature arrays are
the operands as they are — no convention change, no transpose.  The gather x[src_e] and the
scatter into m[dst_e] are the polynomial's ``indices``; on a GPU with ``cuequivariance-ops-jax``
installed, ``method="uniform_1d"`` fuses them with the contraction (per-edge messages never
exist in memory), elsewhere ``method="naive"`` evaluates the same sums with jax operations.
Every derivative order is available (cuequivariance defines JVP and transpose rules).

Shapes: x (N, P, (L+1)², F), radial (E, K), angular (E, (L_b+1)²), filter weights (L_b+1, K, F),
kernel (1, L_b+1, P, L+1, P₃, L₃+1, F) → (N', P₃, (L₃+1)², F).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Optional

import cuequivariance as cue
import cuequivariance_jax as cuex
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Integer

from efa_calc.nn.coupling import block, clebsch_gordan, coupling_paths, max_degree

__all__ = ["kernel_method", "message_polynomial", "cueq_messages"]


@functools.lru_cache(maxsize=None)
def kernel_method() -> str:
    """``"uniform_1d"`` (NVIDIA's fused CUDA kernel) when ``cuequivariance_ops_jax`` is
    installed, else ``"naive"`` (jax operations).  On a non-CUDA platform cuequivariance
    itself evaluates ``uniform_1d`` as ``naive`` (with a warning), so the choice is safe."""
    return "uniform_1d" if importlib.util.find_spec("cuequivariance_ops_jax") is not None else "naive"


@functools.lru_cache(maxsize=None)
def message_polynomial(l1max: int, p2n: int, l2max: int, p3n: int, l3max: int, features: int
                       ) -> cue.SegmentedPolynomial:
    """The segmented polynomial (w, x, Y) → m of the module docstring, CG blocks in float64."""
    paths = coupling_paths(l1max, p2n, l2max, p3n, l3max)
    d = cue.SegmentedTensorProduct.from_subscripts("u,iu,j,ku+ijk")
    for _ in paths:
        d.add_segment(0, (features,))
    x_seg = {(q, b): d.add_segment(1, (2 * b + 1, features)) for q in range(p2n) for b in range(l2max + 1)}
    y_seg = {a: d.add_segment(2, (2 * a + 1,)) for a in range(l1max + 1)}
    o_seg = {(r, c): d.add_segment(3, (2 * c + 1, features)) for r in range(p3n) for c in range(l3max + 1)}
    for k, p in enumerate(paths):
        cg = clebsch_gordan(p.l1, p.l2, p.l3)[block(p.l1), block(p.l2), block(p.l3)]  # [j, i, k]
        d.add_path(k, x_seg[p.q, p.l2], y_seg[p.l1], o_seg[p.r, p.l3], c=np.transpose(cg, (1, 0, 2)))
    return cue.SegmentedPolynomial.eval_last_operand(d)


def _path_weights(radial, filter_weights, kernel, gate, paths) -> Float[Array, "E PF"]:
    """w_e[p, u] = g_e W[p, u] ρ_e[ℓ₁(p), u], flattened to (E, paths·F)."""
    idx = np.asarray(paths, np.int32)  # (paths, 5): l1, q, l2, r, l3
    w = kernel[0, idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3], idx[:, 4]]  # (paths, F)
    l1s = np.unique(idx[:, 0])
    # ρ only for the basis degrees some path uses, then repeated per path
    rho = jnp.einsum("ek,lkf->elf", radial, filter_weights[l1s])
    rho = rho[:, np.searchsorted(l1s, idx[:, 0]), :]  # (E, paths, F)
    if gate is not None:
        w = w * gate.astype(w.dtype)[:, None, None]
    return (rho * w).reshape(radial.shape[0], -1)


def cueq_messages(
    x: Float[Array, "N P D F"],
    radial: Float[Array, "E K"],
    angular: Float[Array, "E Db"],
    src_idx: Optional[Integer[Array, "E"]],
    filter_weights: Float[Array, "Lb K F"],
    kernel: Float[Array, "1 Lb P L P3 L3 F"],
    p3n: int,
    l3max: int,
    gate: Optional[Float[Array, "E"]] = None,
    dst_idx: Optional[Integer[Array, "E"]] = None,
    num_segments: Optional[int] = None,
) -> Float[Array, "M P3 D3 F"]:
    """g_e m_e per edge (M = E, ``dst_idx`` None) or Σ_{e: dst_e = i} g_e m_e per atom
    (M = ``num_segments``), equal to :func:`efa_calc.nn.tensor.messages` (times the gate).

    ``src_idx`` None: ``x`` already holds the source features of every edge (E, P, D, F).
    """
    p2n, l2max, features = x.shape[-3], max_degree(x.shape[-2]), x.shape[-1]
    l1max = max_degree(angular.shape[-1])
    poly = message_polynomial(l1max, p2n, l2max, p3n, l3max, features)
    w = _path_weights(radial, filter_weights, kernel, gate, coupling_paths(l1max, p2n, l2max, p3n, l3max))
    rows = radial.shape[0] if dst_idx is None else num_segments
    out_shape = (rows, p3n, (l3max + 1) ** 2, features)
    [m] = cuex.segmented_polynomial(
        poly,
        [w, x.reshape(x.shape[0], -1), angular.astype(x.dtype)],
        [jax.ShapeDtypeStruct((rows, int(np.prod(out_shape[1:]))), x.dtype)],
        indices=[None, src_idx, None, dst_idx],
        method=kernel_method(),
        name="efa_message_pass",
    )
    return m.reshape(out_shape)
