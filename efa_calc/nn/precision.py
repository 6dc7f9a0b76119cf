"""One precision policy for every place that runs the model.

A :class:`Precision` names the floating dtype of every operation and parameter
(``"float32"`` or ``"float64"``, e3x's ``dtype``/``param_dtype`` taken together) and
the matrix-multiply precision, and provides the three things a backend needs:

* :meth:`Precision.scope` — the host-side scope to trace and run in: float64 traces and
  runs inside ``jax.enable_x64(True)``, float32 inside ``jax.enable_x64(False)``, so one
  of each can live in the same process without the float64 switch leaking;
* :meth:`Precision.cast` — parameters (or any pytree of floats) in that dtype;
* :meth:`Precision.matmul_scope` — the traced model's matmul precision (``"highest"``:
  no TF32/bf16 shortcuts on GPUs, exact float64 on CPU).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

__all__ = ["Precision", "DTYPES"]

#: dtype name -> numpy dtype
DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclasses.dataclass(frozen=True)
class Precision:
    """dtype of every operation and parameter, and the matmul precision.

    Attributes:
      dtype: ``"float32"`` or ``"float64"``.
      matmul: jax's ``default_matmul_precision`` inside the model (``"highest"``).
    """

    dtype: str = "float32"
    matmul: str = "highest"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; allowed: 'float32' or 'float64'")

    @property
    def np_dtype(self) -> type:
        return DTYPES[self.dtype]

    @property
    def x64(self) -> bool:
        return self.dtype == "float64"

    def scope(self):
        """Host-side context to trace, compile and run in (jax's x64 switch)."""
        return jax.enable_x64(self.x64)

    def matmul_scope(self):
        """Context for the traced model (enter it inside the jitted function)."""
        return jax.default_matmul_precision(self.matmul)

    def cast(self, tree):
        """``tree`` (parameters: numpy or jax arrays, traced or not) in this dtype."""
        return jax.tree_util.tree_map(lambda a: a.astype(self.np_dtype), tree)
