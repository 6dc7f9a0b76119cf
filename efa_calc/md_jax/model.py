"""The model inside the MD chunk: energies of R replicas and the force function jax-md calls.

This is the one place where the jax engine evaluates the model (a later backend protocol
replaces it in one spot).  Energies are the model's, in eV, *without* the checkpoint's
energy shift (the caller adds it on the host); forces F = −∂E/∂r in eV/Å.

Under ``vmap`` (replicas) the force function does not batch the model op by op: its
custom batching rule evaluates all replicas as one flat batch of R graphs, the model's
native layout (timings in ``docs/performance.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from efa_calc.md_jax.pairs import dense_pairs
from efa_calc.nn.batch import Batch
from efa_calc.nn.energy_model import atomic_energies

__all__ = ["model_energies", "make_force_fn"]


def model_energies(params, config, numbers, positions, cutoff: float, capacity: int):
    """Model energies (R,) in eV (without the shift) of R structures (R, N, 3) Å of one
    molecule (``numbers`` (N,)), evaluated as one flat batch of R graphs, each with its own
    ``capacity`` pair slots built on the device (:func:`~efa_calc.md_jax.pairs.dense_pairs`)."""
    r, n = positions.shape[0], len(numbers)
    dst, src, edge_mask, _ = jax.vmap(lambda x: dense_pairs(x, cutoff, capacity))(positions)
    offset = (jnp.arange(r, dtype=jnp.int32) * n)[:, None]
    batch = Batch(jnp.tile(jnp.asarray(numbers), r), positions.reshape(r * n, 3),
                  (dst + offset).reshape(-1), (src + offset).reshape(-1), edge_mask.reshape(-1),
                  jnp.repeat(jnp.arange(r, dtype=jnp.int32), n), jnp.ones(r * n, bool), jnp.ones(r, bool),
                  nodes_per_graph=n)
    e_i = atomic_energies(params, config, batch)
    return jnp.sum(e_i.reshape(r, n), axis=1)


def make_force_fn(config, numbers, cutoff: float, capacity: int):
    """The jitted ``(params, positions (N, 3) Å) -> (forces (N, 3) eV/Å, model energy eV)``
    at ``capacity`` pair slots; under ``vmap`` over positions it evaluates the R replicas
    as one batch of graphs (a ``custom_vmap`` rule; parameters cannot be batched)."""
    from jax.custom_batching import custom_vmap

    def batched(params, positions):  # (R, N, 3) -> (R, N, 3) forces, (R,) energies
        def total(x):
            e = model_energies(params, config, numbers, x, cutoff, capacity)
            return jnp.sum(e), e

        (_, e), g = jax.value_and_grad(total, has_aux=True)(positions)
        return -g, e

    @custom_vmap
    def md_force(params, positions):
        f, e = batched(params, positions[None])
        return f[0], e[0]

    @md_force.def_vmap
    def _rule(axis_size, in_batched, params, positions):
        if any(jax.tree_util.tree_leaves(in_batched[0])):
            raise NotImplementedError("the MD force function: parameters cannot be batched")
        if not in_batched[1]:
            positions = jnp.broadcast_to(positions, (axis_size,) + positions.shape)
        return batched(params, positions), (True, True)

    return jax.jit(md_force)
