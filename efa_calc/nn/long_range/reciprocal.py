"""EFA in periodic cells: the lattice sum of a damped EFA kernel on the reciprocal lattice.

Open EFA approximates, per frequency channel k (channel pair of the queries and keys), the
kernel j₀(ω_k r) by a Lebedev sum of cos(ω_k u_m·r).  In a cell of volume V (rows a, b, c of
``cell`` in Å) the same channel uses instead the lattice sum of the damped kernel

    f_k(r) = j₀(ω_k r) · exp(−r²/2λ²)                                   (λ in Å)
    K_k(r) = Σ_R f_k(|r + R|) = (1/V) Σ_G f̂_k(|G|) cos(G·r)            (Poisson summation)
    f̂_k(q) = 4π ∫ r² f_k(r) j₀(q r) dr
           = (2π)^{3/2} λ³ exp(−λ²(q² + ω_k²)/2) · sinh(λ² q ω_k)/(λ² q ω_k)
           = (2π)^{3/2} λ³ exp(−λ²(q − ω_k)²/2) · (1 − exp(−2x))/(2x),   x = λ² q ω_k ≥ 0,

a Gaussian shell of width 1/λ around |G| = ω_k (q → 0 or ω_k = 0: (2π)^{3/2} λ³ e^{−λ²ω_k²/2},
the integral of f_k).  G = n·B, B = 2π (cell⁻¹)ᵀ (rows b_i with a_i·b_j = 2πδ_ij), n integer.
f̂ depends on |G| only, so G and −G have equal weights and the sine parts cancel: the sum
keeps n = 0 and one n of every pair ±n with weight 2 (:func:`miller_indices`).

The attention of atom i (flattened query/key q_i, k_i of shape (PD, F), F = 2K, value v_j):

    y_i = Σ_j Σ_k X_ijk K_k(r_i − r_j) v_j,     X_ijk = Σ_pd (q^a_i k^a_j + q^b_i k^b_j)
        = Σ_G Σ_f W_{f//2}(G) q_if [cos(G·r_i) C_f(G) + sin(G·r_i) S_f(G)],
    C(G) = Σ_j cos(G·r_j) k_j ⊗ v_j,   S(G) = Σ_j sin(G·r_j) k_j ⊗ v_j,   W_k(G) = m(G) f̂_k(|G|)/V,

a structure factor per graph shared by all channels (the "grid" of open EFA is the G set),
cost O(N·N_G·D_qk·D_v).  N_G ≈ V q_max³/(12π²) (half space) grows with the cell volume.

The G set ends at q_max (:func:`reciprocal_cutoff`): W is multiplied by a C² switch from 1 at
q_on (where f̂ has fallen below ``tolerance`` of its peak) to exactly 0 at q_max = q_on + 1/λ,
so a G vector entering or leaving the set (a strained cell, NPT) changes nothing: energy,
forces and stress are continuous in positions and cell.  G is computed from ``cells`` inside
the jitted call, so the stress is autodiff through the cell.

Molecules (no cell) get the same damped kernel summed over pairs in open space,
:func:`open_space_attention`, the limit of K_k as the cell grows.  :func:`direct_image_attention`
is the real-space image sum of the same (unswitched) kernel, for tests.
"""

from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

from efa_calc.nn.long_range.pair_kernels import pair_layout, safe_distances

__all__ = [
    "check_periodic_settings", "damped_kernel", "direct_image_attention", "kernel_transform", "miller_indices", "open_space_attention",
    "periodic_attention",
    "reciprocal_attention", "reciprocal_cutoff", "reciprocal_vectors", "reciprocal_weights", "smooth_switch",
]


#: allowed smoothing lengths λ (Å): below 0.1 Å the G set explodes (N_G ∝ λ⁻³).
MIN_SMOOTHING, MAX_SMOOTHING = 0.1, 1000.0


def check_periodic_settings(smoothing, tolerance, budget) -> None:
    """ValueError naming the setting and its allowed values for a bad periodic-EFA λ (Å,
    ``None`` allowed: molecular EFA), ``reciprocal_tolerance`` or ``max_reciprocal_vectors``."""
    lam = smoothing
    if lam is not None and not (isinstance(lam, (int, float)) and MIN_SMOOTHING <= lam <= MAX_SMOOTHING):
        raise ValueError(f"EFA periodic_smoothing={lam!r}; allowed: None (molecular EFA) or a length λ in Å "
                         f"with {MIN_SMOOTHING} <= λ <= {MAX_SMOOTHING}")
    if not (isinstance(tolerance, float) and 1e-16 <= tolerance <= 1e-3):
        raise ValueError(f"EFA reciprocal_tolerance={tolerance!r}; allowed: a float in [1e-16, 1e-3]")
    if not (isinstance(budget, int) and not isinstance(budget, bool) and 1 <= budget <= 10_000_000):
        raise ValueError(f"EFA max_reciprocal_vectors={budget!r}; allowed: an integer in [1, 10000000]")


def reciprocal_cutoff(omega_max: float, smoothing: float, tolerance: float = 1e-12) -> tuple[float, float]:
    """(q_on, q_max) in 1/Å: f̂_k(q)/max_q f̂_k ≤ exp(−λ²(q − ω_k)²/2) ≤ ``tolerance`` for
    q ≥ q_on = ω_max + √(2 ln(1/tolerance))/λ; the switch runs from q_on to q_max = q_on + 1/λ.

    Args:
      omega_max: largest ERoPE frequency (rad/Å).
      smoothing: λ (Å).
      tolerance: relative weight neglected beyond q_on (0 < tolerance < 1).
    """
    q_on = float(omega_max) + math.sqrt(2.0 * math.log(1.0 / tolerance)) / float(smoothing)
    return q_on, q_on + 1.0 / float(smoothing)


def reciprocal_vectors(cells: Float[Array, "G 3 3"], indices: Integer[Array, "G K 3"]) -> Float[Array, "G K 3"]:
    """G = n·B with B = 2π (cell⁻¹)ᵀ (1/Å; ``cells`` rows a, b, c in Å): G·a_i = 2π n_i."""
    b = 2.0 * jnp.pi * jnp.swapaxes(jnp.linalg.inv(cells), -1, -2)
    return jnp.einsum("gkx,gxy->gky", indices.astype(cells.dtype), b)


def miller_indices(cell: Float[np.ndarray, "3 3"], q_max: float) -> Integer[np.ndarray, "K 3"]:
    """Integer n of every reciprocal vector G = n·B with |G| < ``q_max`` (1/Å), one of every
    pair ±n (the first non-zero component positive) and n = 0 first; ordered by |G| (host, numpy).

    |n_i| = |G·a_i|/2π ≤ q_max |a_i|/2π bounds the search box.
    """
    cell = np.asarray(cell, np.float64)
    b = 2.0 * np.pi * np.linalg.inv(cell).T
    top = np.floor(q_max * np.linalg.norm(cell, axis=1) / (2.0 * np.pi)).astype(int)
    axes = [np.arange(-t, t + 1) for t in top]
    n = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    half = (n[:, 0] > 0) | ((n[:, 0] == 0) & (n[:, 1] > 0)) | ((n[:, 0] == 0) & (n[:, 1] == 0) & (n[:, 2] >= 0))
    n = n[half]
    q = np.linalg.norm(n @ b, axis=1)
    keep = q < q_max
    order = np.lexsort((n[keep, 2], n[keep, 1], n[keep, 0], q[keep]))
    return n[keep][order].astype(np.int32)


def kernel_transform(q: Float[Array, "..."], omega: Float[Array, "K"], smoothing: float) -> Float[Array, "... K"]:
    """f̂_k(q) in Å³ for |G| = q ≥ 0 (1/Å) and ω_k ≥ 0 (rad/Å), in the overflow-free form
    (2π)^{3/2} λ³ exp(−λ²(q − ω)²/2)(1 − e^{−2x})/(2x), x = λ²qω (→ 1 − x + 2x²/3 at x → 0)."""
    lam = smoothing
    qq = q[..., None]
    x = lam * lam * qq * omega
    small = x < 1e-4
    xs = jnp.where(small, 1.0, x)
    ratio = jnp.where(small, 1.0 - x + (2.0 / 3.0) * x * x, -jnp.expm1(-2.0 * xs) / (2.0 * xs))
    return (2.0 * jnp.pi) ** 1.5 * lam**3 * jnp.exp(-0.5 * lam * lam * (qq - omega) ** 2) * ratio


def smooth_switch(q: Float[Array, "..."], q_on: float, q_max: float) -> Float[Array, "..."]:
    """1 for q ≤ q_on, 1 − 10t³ + 15t⁴ − 6t⁵ with t = (q − q_on)/(q_max − q_on) between, 0 from
    q_max on: C² (value, slope and curvature vanish at q_max)."""
    t = jnp.clip((q - q_on) / (q_max - q_on), 0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t * t)


def reciprocal_weights(
    cells: Float[Array, "G 3 3"], indices: Integer[Array, "G K 3"], mask: Bool[Array, "G K"],
    omega: Float[Array, "C"], smoothing: float, q_on: float, q_max: float,
) -> tuple[Float[Array, "G K 3"], Float[Array, "G K C"]]:
    """(G vectors (1/Å), W_c(G) = m(G) f̂_c(|G|) s(|G|)/V (dimensionless)): m = 1 for n = 0,
    2 for the half-space representative of ±n, 0 for padding entries (``mask`` False)."""
    g = reciprocal_vectors(cells, indices)
    q = safe_distances(g)  # zero gradient at G = 0, where f̂ is flat
    volume = jnp.abs(jnp.linalg.det(cells))
    mult = jnp.where(jnp.all(indices == 0, axis=-1), 1.0, 2.0) * mask.astype(cells.dtype)
    w = kernel_transform(q, omega, smoothing) * (smooth_switch(q, q_on, q_max) * mult / volume[:, None])[..., None]
    return g, w


def reciprocal_attention(
    q: Float[Array, "N PD F"], k: Float[Array, "N PD F"], v: Float[Array, "N Dv"], positions: Float[Array, "N 3"],
    cells: Float[Array, "G 3 3"], indices: Integer[Array, "G K 3"], mask: Bool[Array, "G K"],
    omega: Float[np.ndarray, "C"], smoothing: float, q_on: float, q_max: float, num_graphs: int, nodes_per_graph: int,
) -> Float[Array, "N Dv"]:
    """Periodic EFA, y_i = Σ_G Σ_f W_{f//2}(G) q_if [cos(G·r_i) C_f(G) + sin(G·r_i) S_f(G)] (module docstring).

    Args:
      q, k: (N, P·(L+1)², F) unrotated queries and keys, F = 2C; 1/√D_qk folded into ``q``,
        keys of padding atoms zero.
      v: (N, D_v) values, zero for padding atoms.
      positions: (N, 3) Å;  cells: (G, 3, 3) Å, rows a, b, c.
      indices, mask: (G, K, 3) Miller indices of each graph's G set and (G, K) validity.
      omega: (C,) ERoPE frequencies (rad/Å);  smoothing: λ (Å);  q_on, q_max: switch (1/Å).
      num_graphs, nodes_per_graph: slot layout G × S = N.

    Returns:
      (N, D_v).  Memory O(N·K + G·K·D_qk·D_v); cost O(N·K·D_qk·D_v).
    """
    g, s = num_graphs, nodes_per_graph
    pd, f = q.shape[1:]
    dtype = q.dtype
    gvec, w = reciprocal_weights(cells.astype(dtype), indices, mask, jnp.asarray(omega, dtype), smoothing, q_on, q_max)
    w = jnp.repeat(w, 2, axis=-1)  # channel pair c -> features 2c, 2c+1: (G, K, F)
    phase = jnp.einsum("gsx,gkx->gsk", positions.reshape(g, s, 3).astype(dtype), gvec)
    cos, sin = jnp.cos(phase), jnp.sin(phase)
    kv = jnp.einsum("gspf,gsv->gspfv", k.reshape(g, s, pd, f), v.reshape(g, s, -1))
    qs = q.reshape(g, s, pd, f)
    y = 0.0
    for trig in (cos, sin):  # two real structure factors instead of ±G
        sf = jnp.einsum("gsk,gspfv->gkpfv", trig, kv) * w[:, :, None, :, None]
        y = y + jnp.einsum("gspf,gspfv->gsv", qs, jnp.einsum("gsk,gkpfv->gspfv", trig, sf))
    return y.reshape(g * s, -1)


def periodic_attention(
    q: Float[Array, "N P D F"], k: Float[Array, "N P D F"], v: Float[Array, "N Pv Dv Fv"], mask: Float[Array, "N"],
    positions: Float[Array, "N 3"], omega: Float[np.ndarray, "C"], smoothing: float, cutoff: tuple[float, float],
    batch_segments: Integer[Array, "N"], num_graphs: int, nodes_per_graph: Optional[int],
    cells: Optional[Float[Array, "G 3 3"]], indices: Optional[Integer[Array, "G K 3"]],
    reciprocal_mask: Optional[Bool[Array, "G K"]],
) -> Float[Array, "N Dv"]:
    """The periodic EFA block's attention from its projected q, k (F = 2C channels) and v:
    :func:`reciprocal_attention` for a periodic batch (``cells`` given), else
    :func:`open_space_attention`.  Scales q by 1/√D_qk and zeroes keys and values of padding
    atoms (``mask`` 0).  ``cutoff`` = (q_on, q_max) in 1/Å; returns (N, P_v·(L_v+1)²·F_v)."""
    n, f_qk = q.shape[0], q.shape[-1]
    d_qk = q.shape[1] * q.shape[2] * f_qk
    args = (q.reshape(n, -1, f_qk) / np.sqrt(d_qk), k.reshape(n, -1, f_qk) * mask[:, None, None],
            v.reshape(n, -1) * mask[:, None], positions.astype(q.dtype))
    if cells is None:
        return open_space_attention(*args, omega, smoothing, batch_segments, num_graphs, nodes_per_graph)
    if indices is None or reciprocal_mask is None or nodes_per_graph is None:
        raise ValueError("periodic EFA in a cell needs the batch's reciprocal_indices and reciprocal_mask "
                         "(efa_calc.graphs.reciprocal.with_reciprocal) and the slot layout (nodes_per_graph)")
    return reciprocal_attention(*args, cells, indices, reciprocal_mask, omega, smoothing, *cutoff, num_graphs,
                                nodes_per_graph)


def damped_kernel(dist: Float[Array, "..."], omega: Float[Array, "C"], smoothing: float) -> Float[Array, "... C"]:
    """f_c(r) = j₀(ω_c r)·exp(−r²/2λ²) for distances r (Å), 1 at r = 0."""
    d = dist[..., None]
    return jnp.sinc(d * omega / jnp.pi) * jnp.exp(-0.5 * (d / smoothing) ** 2)


def open_space_attention(
    q: Float[Array, "N PD F"], k: Float[Array, "N PD F"], v: Float[Array, "N Dv"], positions: Float[Array, "N 3"],
    omega: Float[np.ndarray, "C"], smoothing: float, batch_segments: Integer[Array, "N"], num_graphs: int,
    nodes_per_graph: Optional[int],
) -> Float[Array, "N Dv"]:
    """Periodic EFA of a molecule: y_i = Σ_{j∈g(i)} Σ_c X_ijc f_c(r_ij) v_j, the exact O(N²)
    open-space sum of the damped kernel (the infinite-cell limit of :func:`reciprocal_attention`).
    Shapes and units as there; ``batch_segments``, ``num_graphs``, ``nodes_per_graph`` give the
    layout (:func:`~efa_calc.nn.long_range.pair_kernels.pair_layout`)."""
    n, pd, f = q.shape
    g, s, same = pair_layout(n, batch_segments, num_graphs, nodes_per_graph)
    x = _pair_products(q.reshape(g, s, pd, f), k.reshape(g, s, pd, f))
    r = positions.reshape(g, s, 3)
    dist = safe_distances(r[:, :, None, :] - r[:, None, :, :])
    scores = jnp.einsum("gijc,gijc->gij", x, damped_kernel(dist, jnp.asarray(omega, q.dtype), smoothing))
    if same is not None:
        scores = jnp.where(same, scores, 0.0)
    return jnp.einsum("gij,gjv->giv", scores, v.reshape(g, s, -1)).reshape(n, -1)


def _pair_products(q: Float[Array, "G S PD F"], k: Float[Array, "G S PD F"]) -> Float[Array, "G S S C"]:
    """X_ijc = Σ_pd (q^a_i k^a_j + q^b_i k^b_j) of channel pair c = (2c, 2c+1)."""
    g, s, pd, f = q.shape
    return jnp.einsum("gipcz,gjpcz->gijc", q.reshape(g, s, pd, f // 2, 2), k.reshape(g, s, pd, f // 2, 2))


def direct_image_attention(
    q: Float[Array, "n PD F"], k: Float[Array, "n PD F"], v: Float[Array, "n Dv"], positions: Float[Array, "n 3"],
    cell: Float[Array, "3 3"], omega: Float[np.ndarray, "C"], smoothing: float, images: int,
) -> Float[Array, "n Dv"]:
    """Real-space image sum of one cell, y_i = Σ_j Σ_R Σ_c X_ijc f_c(|r_i − r_j + R|) v_j over
    R = m·cell, |m_a| ≤ ``images`` (a test yardstick for :func:`reciprocal_attention`: equal up to
    the neglected tails exp(−R²/2λ²) and the switch).  Single structure, no padding; units as there."""
    m = np.stack(np.meshgrid(*[np.arange(-images, images + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    shifts = jnp.asarray(m, positions.dtype) @ cell  # (R, 3)
    n, pd, f = q.shape
    x = _pair_products(q[None], k[None])[0]  # (n, n, C)
    disp = positions[:, None, None, :] - positions[None, :, None, :] + shifts[None, None]
    kern = jnp.sum(damped_kernel(safe_distances(disp), jnp.asarray(omega, q.dtype), smoothing), axis=2)
    return jnp.einsum("ijc,ijc,jv->iv", x, kern, v)
