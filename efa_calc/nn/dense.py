"""Equivariant linear layer: e3x's ``Dense`` as one batched matmul.

    y[p, c, g] = Σ_f x[p, c, f] W_{p, ℓ(c)}[f, g]  (+ b[g] on the scalar channel p = 0, c = 0)

with one weight matrix per parity slot p and degree ℓ (component c of degree ℓ(c)).  The
parameters are e3x's (``'0+'``, ``'1-'``, … for features without pseudotensors; ``'0+'``,
``'1+'``, …, ``'0-'``, ``'1-'``, … with them; each an ``nn.Dense`` ``kernel`` (F, G), the
``bias`` (G,) only on ``'0+'``), so checkpoints load unchanged.

Why not e3x's own: it applies one ``nn.Dense`` per (parity, degree) block and concatenates
the results — 2(L+1) matmuls, slices and concatenations for every layer, each a separate
XLA operation.  For a 13-atom molecule the model is bound by the number of operations, not
by arithmetic; here a layer is one gather of the weights and one matmul.
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["Dense"]


class _Linear(nn.Module):
    """The parameters of one ``nn.Dense`` (``kernel`` (F, G), optional ``bias`` (G,))."""

    in_features: int
    features: int
    use_bias: bool
    kernel_init: Callable
    bias_init: Callable

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", self.kernel_init, (self.in_features, self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) if self.use_bias else None
        return kernel, bias


def _names(num_parity: int, max_degree: int) -> list[list[str]]:
    """e3x's parameter names per (parity slot, degree)."""
    if num_parity == 2:
        return [[f"{l}+" for l in range(max_degree + 1)], [f"{l}-" for l in range(max_degree + 1)]]
    return [[f"{l}{'+-'[l % 2]}" for l in range(max_degree + 1)]]


class Dense(nn.Module):
    """Drop-in for ``e3x.nn.Dense``: same attributes, parameters and result.

    Attributes:
      features: output features G.
      use_bias: add a bias to the scalar channel.
      dtype: computation dtype (``None``: the input's).
      kernel_init, bias_init: parameter initialisers (e3x's defaults).

    Input (…, P, (L+1)², F); output (…, P, (L+1)², G).
    """

    features: int
    use_bias: bool = True
    dtype: Optional[jnp.dtype] = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: Float[Array, "... P D F"]) -> Float[Array, "... P D G"]:
        p, d, f = x.shape[-3:]
        max_degree = int(round(np.sqrt(d))) - 1
        if p not in (1, 2) or (max_degree + 1) ** 2 != d:
            raise ValueError(f"expected features (..., 1 or 2, (L+1)², F), got shape {x.shape}")
        params = [[_Linear(f, self.features, self.use_bias and i == 0 and l == 0, self.kernel_init, self.bias_init,
                           name=name)() for l, name in enumerate(row)]
                  for i, row in enumerate(_names(p, max_degree))]
        dtype = self.dtype or x.dtype
        weights = jnp.stack([jnp.stack([k for k, _ in row]) for row in params]).astype(dtype)  # (P, L+1, F, G)
        degree = np.repeat(np.arange(max_degree + 1), 2 * np.arange(max_degree + 1) + 1)
        y = jnp.einsum("...pdf,pdfg->...pdg", x.astype(dtype), weights[:, degree])
        bias = params[0][0][1]
        if bias is not None:
            y = y + jnp.pad(bias.astype(dtype)[None, None, :], ((0, p - 1), (0, d - 1), (0, 0)))
        return y
