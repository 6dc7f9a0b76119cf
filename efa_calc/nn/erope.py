"""Euclidean rotary position encoding (ERoPE), spec §2 and §5.

For a grid direction u_m and frequency ω_k, the channel pair (2k, 2k+1) of a query or key
feature x_i is rotated by the angle θ_imk = ω_k (u_m · r_i):

    x'[2k]   = x[2k]   cos θ − x[2k+1] sin θ
    x'[2k+1] = x[2k+1] cos θ + x[2k]   sin θ

The same angle is used for every parity slice and degree component, so the rotation acts
on the feature axis only and commutes with Wigner-D matrices (equivariance is kept).
Because R(a)ᵀR(b) = R(b − a), a rotated query–key product depends on r_j − r_i only.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["frequencies", "phases", "rotate"]


def frequencies(num_features: int, max_frequency: float, max_length: float) -> np.ndarray:
    """ERoPE frequencies ω_k in rad/Å, k = 0 … K−1 with K = ``num_features`` / 2.

    Linearly spaced from 0 to b_max / r_max (inclusive; ω₀ = 0 makes one channel pair a
    plain global sum).  With a single pair (``num_features == 2``), ω = [b_max / r_max].

    Returns:
      float64 array of shape (K,).
    """
    if num_features % 2:
        raise ValueError(f"ERoPE needs an even number of query/key features, got {num_features}")
    k = num_features // 2
    if k > 1:
        return np.linspace(0.0, max_frequency, k) / max_length
    return np.array([max_frequency / max_length])


def phases(
    positions: Float[Array, "N 3"],
    directions: Float[Array, "M 3"],
    omega: Float[Array, "K"],
) -> Float[Array, "N M K"]:
    """θ_imk = ω_k (u_m · r_i)."""
    return (positions @ directions.T)[:, :, None] * omega[None, None, :]


def rotate(x: Float[Array, "N P D F"], theta: Float[Array, "N M K"]) -> Float[Array, "N M P D F"]:
    """Rotate adjacent feature channels (2k, 2k+1) of ``x`` by θ_k for every grid point.

    Args:
      x: features (N, P, (L+1)², F) with F = 2K.
      theta: phases (N, M, K).

    Returns:
      (N, M, P, (L+1)², F): a grid axis is inserted after the node axis.
    """
    n, p, d, f = x.shape
    cos = jnp.repeat(jnp.cos(theta), 2, axis=-1)[:, :, None, None, :]  # (N, M, 1, 1, F)
    sin = jnp.repeat(jnp.sin(theta), 2, axis=-1)[:, :, None, None, :]
    # Partner vector [−x1, x0, −x3, x2, …].
    pairs = x.reshape(n, p, d, f // 2, 2)
    partner = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(n, p, d, f)
    return x[:, None] * cos + partner[:, None] * sin
