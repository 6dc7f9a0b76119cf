"""MARA spherical-attention edge gate (Modular Angular-Radial Attention, arXiv 2602.02671).

For every edge j → i (source j, target i) a small grid of directions u_g (n_θ × n_φ,
Gauss–Legendre in cos θ times uniform φ; quadrature weights w_g, Σ w_g = 1) is placed on a
sphere of radius ρ around the *source* atom, at p_g = r_j + ρ u_g.  Each grid point gets
features from the target's scalars s_i, the distance from the grid point to the target
d_g = |r_i − p_g| (radial basis) and the grid direction relative to the edge,
c_g = u_g · r̂_ji:

    h_g  = silu(A s_i + B φ(d_g) + c c_g + b)                         (E, G, F_m)
    o_g  = Σ_g' softmax_g'(⟨Q h_g, K h_g'⟩/√F_m + log w_g') V h_g'    quadrature-weighted
    gate = sigmoid(wᵀ Σ_g w_g o_g + b₀)                               (E,)

and the edge's message is multiplied by the gate before aggregation.  A scalar gate times an
equivariant message keeps the message passing equivariant.  The grid is fixed in the world
frame, so the gate is rotation invariant only up to the quadrature error of the G-point
grid (measured in ``tests/test_long_range.py`` and ``docs/long_range_blocks.md``);
translations and permutations are exact.
"""

from __future__ import annotations

import dataclasses
import functools

import e3x
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

__all__ = ["MARAGateConfig", "MARAGate", "sphere_grid"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MARAGateConfig:
    """MARA gate settings.

    Attributes:
      num_theta, num_phi: grid size n_θ × n_φ.
      radius: ρ in Å, the grid's distance from the source atom (``None``: half the cutoff).
      features: F_m, width of the grid-point features.
      num_basis: radial basis functions of d_g.
    """

    num_theta: int = 4
    num_phi: int = 8
    radius: float | None = None
    features: int = 16
    num_basis: int = 8

    def __post_init__(self):
        if self.num_theta < 1 or self.num_phi < 1 or self.features < 1 or self.num_basis < 1:
            raise ValueError("MARA num_theta, num_phi, features and num_basis must be >= 1")
        if self.radius is not None and self.radius <= 0:
            raise ValueError(f"MARA radius must be positive (Å), got {self.radius}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_value(cls, value) -> "MARAGateConfig | None":
        """``true``/``false`` or a dict of settings (config files) → config or None."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"mara_gate has no setting(s) {unknown}; settings: {sorted(known)}")
            return cls(**value)
        raise ValueError(f"mara_gate must be true, false or a table of settings, got {value!r}")


@functools.lru_cache(maxsize=None)
def sphere_grid(num_theta: int, num_phi: int) -> tuple[np.ndarray, np.ndarray]:
    """Directions (G, 3) and weights (G,) summing to 1: Gauss–Legendre nodes in cos θ times
    n_φ uniform azimuths (offset by half a step on alternate rings)."""
    x, wx = np.polynomial.legendre.leggauss(num_theta)
    dirs, weights = [], []
    for a, (ct, wt) in enumerate(zip(x, wx)):
        st = np.sqrt(1.0 - ct * ct)
        phi = 2 * np.pi * (np.arange(num_phi) + 0.5 * (a % 2)) / num_phi
        dirs.append(np.stack([st * np.cos(phi), st * np.sin(phi), np.full(num_phi, ct)], -1))
        weights.append(np.full(num_phi, wt / (2.0 * num_phi)))
    u, w = np.concatenate(dirs), np.concatenate(weights)
    u.setflags(write=False)
    w.setflags(write=False)
    return u, w


class MARAGate(nn.Module):
    """One sigmoid gate per edge (see module docstring).

    Attributes:
      config: :class:`MARAGateConfig`.
      cutoff: the local cutoff in Å (default radius ρ = cutoff / 2; radial basis range).
    """

    config: MARAGateConfig
    cutoff: float

    @nn.compact
    def __call__(
        self,
        scalars: Float[Array, "N F"],
        positions: Float[Array, "N 3"],
        dst_idx: Integer[Array, "E"],
        src_idx: Integer[Array, "E"],
        edge_mask: Bool[Array, "E"],
    ) -> Float[Array, "E"]:
        cfg = self.config
        dtype = positions.dtype
        rho = cfg.radius if cfg.radius is not None else 0.5 * self.cutoff
        u_np, w_np = sphere_grid(cfg.num_theta, cfg.num_phi)
        u, w = jnp.asarray(u_np, dtype), jnp.asarray(w_np, dtype)
        disp = positions[dst_idx] - positions[src_idx]  # r_i − r_j, (E, 3)
        # Padding edges: a fixed far displacement keeps every quantity finite.
        disp = jnp.where(edge_mask[:, None], disp, jnp.asarray([self.cutoff, 0.0, 0.0], dtype))
        r = jnp.sqrt(jnp.sum(disp * disp, -1) + 1e-12)
        cos_g = (disp @ u.T) / r[:, None]  # (E, G)
        to_target = disp[:, None, :] - rho * u[None]  # r_i − p_g
        d_g = jnp.sqrt(jnp.sum(to_target * to_target, -1) + 1e-12)
        phi = e3x.nn.sinc(d_g, num=cfg.num_basis, limit=self.cutoff + rho).astype(dtype)
        s = nn.Dense(cfg.features, dtype=dtype, name="target")(scalars)[dst_idx]  # (E, F_m)
        h = nn.Dense(cfg.features, use_bias=False, dtype=dtype, name="distance")(phi)
        h = h + nn.Dense(cfg.features, dtype=dtype, name="direction")(cos_g[..., None])
        h = jax.nn.silu(h + s[:, None, :])  # (E, G, F_m)
        q = nn.Dense(cfg.features, use_bias=False, dtype=dtype, name="query")(h)
        k = nn.Dense(cfg.features, use_bias=False, dtype=dtype, name="key")(h)
        v = nn.Dense(cfg.features, use_bias=False, dtype=dtype, name="value")(h)
        scores = jnp.einsum("egc,ehc->egh", q, k) / np.sqrt(cfg.features) + jnp.log(w)[None, None, :]
        o = jnp.einsum("egh,ehc->egc", jax.nn.softmax(scores, axis=-1), v)
        pooled = jnp.einsum("egc,g->ec", o, w)
        return jax.nn.sigmoid(nn.Dense(1, dtype=dtype, name="gate")(pooled)[:, 0])
