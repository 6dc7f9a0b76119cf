"""The model inside the MD chunk: energies of R replicas and the force function jax-md calls.

This is the one place where the jax engine evaluates the model (a later backend protocol
replaces it in one spot).  Energies are the model's, in eV, *without* the checkpoint's
energy shift (the caller adds it on the host); forces F = −∂E/∂r in eV/Å.

Periodic replicas (each with its cell h, rows a, b, c in Å) also give the strain
derivative W = ∂E/∂ε (3, 3) in eV of a symmetric strain of cell and positions together,
r ↦ r(1 + ε), h ↦ h(1 + ε) — the calculator's stress times the volume (σ = W / V,
ASE's sign; :func:`efa_calc.nn.energy_model.energy_forces_stress`), from the same
backward pass as the forces.  The pair list (minimum image, integer shifts n:
:mod:`~efa_calc.md_jax.periodic`) is built from the undeformed structure and held fixed
under the derivative, as the calculator's is.

Under ``vmap`` (replicas) the force function does not batch the model op by op: its
custom batching rule evaluates all replicas as one flat batch of R graphs, the model's
native layout (timings in ``docs/performance.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from efa_calc.md_jax.pairs import dense_pairs
from efa_calc.md_jax.periodic import periodic_dense_pairs
from efa_calc.nn.batch import Batch
from efa_calc.nn.energy_model import atomic_energies

__all__ = ["model_energies", "make_force_fn"]


def _flat_batch(numbers, positions, dst, src, edge_mask, shifts=None, cells=None):
    """One flat Batch of R graphs of one molecule from per-replica pair slots (R, E)."""
    r, n = positions.shape[0], len(numbers)
    offset = (jnp.arange(r, dtype=jnp.int32) * n)[:, None]
    return Batch(jnp.tile(jnp.asarray(numbers), r), positions.reshape(r * n, 3),
                 (dst + offset).reshape(-1), (src + offset).reshape(-1), edge_mask.reshape(-1),
                 jnp.repeat(jnp.arange(r, dtype=jnp.int32), n), jnp.ones(r * n, bool), jnp.ones(r, bool),
                 cell_shifts=None if shifts is None else shifts.reshape(-1, 3).astype(positions.dtype),
                 cells=cells, nodes_per_graph=n)


def model_energies(params, config, numbers, positions, cutoff: float, capacity: int, cells=None):
    """Model energies (R,) in eV (without the shift) of R structures (R, N, 3) Å of one
    molecule (``numbers`` (N,)), evaluated as one flat batch of R graphs, each with its own
    ``capacity`` pair slots built on the device (:func:`~efa_calc.md_jax.pairs.dense_pairs`;
    with ``cells`` (R, 3, 3) Å the minimum-image pairs of
    :func:`~efa_calc.md_jax.periodic.periodic_dense_pairs`)."""
    r, n = positions.shape[0], len(numbers)
    if cells is None:
        dst, src, edge_mask, _ = jax.vmap(lambda x: dense_pairs(x, cutoff, capacity))(positions)
        batch = _flat_batch(numbers, positions, dst, src, edge_mask)
    else:
        dst, src, shifts, edge_mask, _ = jax.vmap(lambda x, h: periodic_dense_pairs(x, h, cutoff, capacity))(
            jax.lax.stop_gradient(positions), jax.lax.stop_gradient(cells))
        batch = _flat_batch(numbers, positions, dst, src, edge_mask, shifts, cells)
    e_i = atomic_energies(params, config, batch)
    return jnp.sum(e_i.reshape(r, n), axis=1)


def _strain_energies(params, config, numbers, positions, cells, cutoff: float, capacity: int):
    """``(forces (R, N, 3) eV/Å, energies (R,) eV, W (R, 3, 3) eV)`` of periodic replicas."""
    dst, src, shifts, edge_mask, _ = jax.vmap(lambda x, h: periodic_dense_pairs(x, h, cutoff, capacity))(
        positions, cells)

    def total(x, strain):
        sym = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        xd = x + jnp.einsum("rnd,rde->rne", x, sym)
        hd = cells + jnp.einsum("rad,rde->rae", cells, sym)
        e_i = atomic_energies(params, config, _flat_batch(numbers, xd, dst, src, edge_mask, shifts, hd))
        e = jnp.sum(e_i.reshape(x.shape[0], -1), axis=1)
        return jnp.sum(e), e

    zero = jnp.zeros(cells.shape, positions.dtype)
    (_, e), (g, w) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(positions, zero)
    return -g, e, w


def make_force_fn(config, numbers, cutoff: float, capacity: int, periodic: bool = False):
    """The jitted ``(params, positions (N, 3) Å) -> (forces (N, 3) eV/Å, model energy eV)``
    at ``capacity`` pair slots — periodic: ``(params, positions, cell (3, 3) Å) -> (forces,
    energy, W (3, 3) eV)`` (see the module docstring); under ``vmap`` over positions (and
    cells) it evaluates the R replicas as one batch of graphs (a ``custom_vmap`` rule;
    parameters cannot be batched)."""
    from jax.custom_batching import custom_vmap

    def batched(params, positions, cells=None):  # (R, N, 3) -> (R, N, 3) forces, (R,) energies[, (R, 3, 3) W]
        if cells is not None:
            return _strain_energies(params, config, numbers, positions, cells, cutoff, capacity)

        def total(x):
            e = model_energies(params, config, numbers, x, cutoff, capacity)
            return jnp.sum(e), e

        (_, e), g = jax.value_and_grad(total, has_aux=True)(positions)
        return -g, e

    def check(in_batched):
        if any(jax.tree_util.tree_leaves(in_batched[0])):
            raise NotImplementedError("the MD force function: parameters cannot be batched")

    def lift(axis_size, flag, x):
        return x if flag else jnp.broadcast_to(x, (axis_size,) + x.shape)

    if periodic:
        @custom_vmap
        def md_force(params, positions, cell):
            return tuple(a[0] for a in batched(params, positions[None], cell[None]))

        @md_force.def_vmap
        def _rule(axis_size, in_batched, params, positions, cell):
            check(in_batched)
            out = batched(params, lift(axis_size, in_batched[1], positions), lift(axis_size, in_batched[2], cell))
            return out, (True, True, True)
    else:
        @custom_vmap
        def md_force(params, positions):
            f, e = batched(params, positions[None])
            return f[0], e[0]

        @md_force.def_vmap
        def _rule(axis_size, in_batched, params, positions):
            check(in_batched)
            return batched(params, lift(axis_size, in_batched[1], positions)), (True, True)

    return jax.jit(md_force)
