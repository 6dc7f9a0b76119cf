"""A model bound to a dtype and a device: jitted evaluation of padded batches.

Compiled code is shared process-wide: :func:`compiled_energy_and_forces` keeps one
``jax.jit`` per (model hyperparameters, grid override), and jax caches executables per
(input shapes = buckets, dtype, device).  Parameters are *arguments*, not constants, so
every calculator of the same architecture — other instances, committee members, NEB
images, phonopy displacements — reuses the same executables.

Precision is scoped, not global: float64 potentials trace and run inside
``jax.enable_x64(True)`` and float32 ones inside ``jax.enable_x64(False)``, so one of each
can live in the same process without the float64 switch leaking into the other.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from efa_calc.checkpoint import Checkpoint
from efa_calc.config import ModelConfig
from efa_calc.nn.energy_model import Batch, energy_and_forces
from efa_calc.nn.tensor import resolve_message_passing

__all__ = ["Potential", "compiled_energy_and_forces", "resolve_device"]

_DTYPES = {"float32": np.float32, "float64": np.float64}


@functools.lru_cache(maxsize=None)
def compiled_energy_and_forces(config: ModelConfig):
    """The process-wide jitted ``(params, batch, nodes_per_graph) -> (E_g, F, E_i)``
    (evaluation variants are configs: :meth:`ModelConfig.for_evaluation`)."""

    def fn(params, batch, nodes_per_graph):
        return energy_and_forces(params, config, batch, nodes_per_graph=nodes_per_graph)

    return jax.jit(fn, static_argnums=(2,))


def resolve_device(device) -> Optional[jax.Device]:
    """``None`` (jax default), a ``jax.Device``, or a string such as ``"cpu"``, ``"gpu"``, ``"cuda:1"``."""
    if device is None or isinstance(device, jax.Device):
        return device
    name, _, index = str(device).partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(name.lower(), name.lower())
    try:
        devices = jax.devices(platform)
    except RuntimeError as exc:
        raise ValueError(f"no jax device of kind {name!r} available ({exc}); install the 'gpu' extra for CUDA") from exc
    i = int(index or 0)
    if i >= len(devices):
        raise ValueError(f"device {device!r} requested, but only {len(devices)} {platform} device(s) exist")
    return devices[i]


class Potential:
    """Evaluate a :class:`~efa_calc.checkpoint.Checkpoint` on padded batches.

    Args:
      checkpoint: the model.
      dtype: ``"float32"`` or ``"float64"`` — the precision of every operation.
      device: where to run (see :func:`resolve_device`).
      lebedev_num: evaluate the EFA blocks on a different Lebedev grid.
      efa_exact: evaluate the EFA blocks with their exact j₀ kernel (O(N²)).
      message_passing: ``"native"``, ``"cuequivariance"`` or ``None`` (the device's default,
        :func:`efa_calc.nn.tensor.resolve_message_passing`); same numbers either way.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        dtype: str = "float32",
        device=None,
        lebedev_num: Optional[int] = None,
        efa_exact: bool = False,
        message_passing: Optional[str] = None,
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        platform = self.device.platform if self.device is not None else jax.default_backend()  # (issue 24)
        message_passing = resolve_message_passing(message_passing, platform)
        self.config = checkpoint.config.for_evaluation(lebedev_num=lebedev_num, efa_exact=efa_exact,
                                                       message_passing=message_passing)
        self.dtype = dtype
        self.np_dtype = _DTYPES[dtype]
        self.x64 = dtype == "float64"
        self._fn = compiled_energy_and_forces(self.config)
        with jax.enable_x64(self.x64):
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, self.np_dtype), checkpoint.params)
            self._params = jax.device_put(params, self.device)

    def __call__(self, batch: Batch, nodes_per_graph: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Graph energies (G,), forces (N, 3) and atomic energies (N,) of the *model*
        (without the checkpoint's energy shift), as numpy arrays in the potential's dtype.

        Raises:
          FloatingPointError: if the model returns a non-finite value for a real atom
            (never passes garbage on to an integrator).
        """
        # numpy inputs go straight into the jitted call (an explicit device_put of the
        # eight arrays cost more than the whole 6-atom model on CPU).
        b = batch._replace(positions=np.asarray(batch.positions, self.np_dtype))
        with jax.enable_x64(self.x64), jax.default_device(self.device):
            e_g, forces, e_i = self._fn(self._params, b, nodes_per_graph)
            e_g, forces, e_i = np.asarray(e_g), np.asarray(forces), np.asarray(e_i)
        mask = np.asarray(batch.node_mask)
        if not (np.all(np.isfinite(e_i[mask])) and np.all(np.isfinite(forces[mask]))):
            raise FloatingPointError(
                f"model {self.checkpoint.name!r} returned non-finite energies or forces; "
                "the structure is probably far outside the training range"
            )
        return e_g, forces, e_i
