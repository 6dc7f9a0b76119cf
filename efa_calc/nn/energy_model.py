"""The equivariant MPNN energy model with optional long-range (EFA) branches, spec §6.

For iterations t = 0 … T−1 with features x (N, P, (L+1)², F):

    local:      y    = MLP(add(x, MessagePass_t(x, basis [· gate])))  (scalar output at t = T−1)
    long range: y_nl = MLP(add(Dense(EFA_t(x_lr, r)), x))          (only for t in config)
    update:     x    ← x + silu(c_t)·y + silu(1 − c_t)·y_nl        (c_t learned, init 0.5)

An *energy block* (``BlockSpec.energy``, e.g. ``latent_ewald``) instead returns atomic
energies E_lr,i (eV) that are added to E_i; it sees the uncentred positions (a PME mesh is
anchored to the cell) and gets no projection, MLP or switch.

where MLP = Dense → gated silu → Dense (last layer zero-initialised), ``basis`` is the
e3x radial × spherical-harmonic edge basis times a smooth cutoff (kept factorised, :class:`~efa_calc.nn.tensor.EdgeBasis`), and x_lr is x cut to the
EFA degree/parity.  The long-range block is any registered block
(:mod:`efa_calc.nn.long_range`: EFA, all-to-all attention); ``gate`` is the optional MARA edge
gate (:mod:`efa_calc.nn.mara`) multiplying each edge's message.  The atomic energy is E_i = w·scalars(x_i) + b[Z_i] and forces are the
exact negative gradient F = −∂E/∂R (:func:`energy_and_forces`).

The input is one :class:`~efa_calc.nn.batch.Batch` (flat, jraph-style): padding atoms
(``node_mask`` False) and padding edges (``edge_mask`` False) contribute nothing, and
padding graphs (``graph_mask`` False) get zero energy.  Units: Å in, eV and eV/Å out.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import e3x
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from efa_calc.nn.batch import Batch
from efa_calc.nn.config import ModelConfig
from efa_calc.nn.dense import Dense
from efa_calc.nn.long_range import block
from efa_calc.nn.mara import MARAGate
from efa_calc.nn.precision import Precision
from efa_calc.nn.radial import radial_function
from efa_calc.nn.tensor import EdgeBasis, MessagePass, edge_basis

__all__ = ["Batch", "EnergyModel", "atomic_energies", "energy_and_forces", "energy_forces_stress", "energy_forces_stresses",
           "init_params"]


def _mlp(x, features: int, name: str, zero_output: bool = True):
    x = Dense(features, dtype=x.dtype, name=f"{name}_0")(x)
    x = e3x.nn.silu(x)
    init = {"kernel_init": nn.initializers.zeros} if zero_output else {}  # else e3x's default
    return Dense(features, dtype=x.dtype, name=f"{name}_1", **init)(x)


class EnergyModel(nn.Module):
    """EFA + MPNN atomic-energy model.

    Attributes:
      config: hyperparameters (evaluation variants: :meth:`ModelConfig.for_evaluation`).

    Parameter names: ``embed``; per iteration t ``mara_gate_t`` (with the MARA gate),
    ``message_pass_t``, ``local_mlp_t_{0,1}``, ``long_range_t`` (the block's own layers,
    e.g. ``query``, ``key``, ``value``), ``long_range_projection_t``,
    ``long_range_mlp_t_{0,1}``, ``switch_t``; then ``readout`` and ``element_bias``.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        batch: Batch,
        axis_name: Optional[str] = None,
        halo_exchange: Optional[Callable] = None,
    ) -> Float[Array, "N"]:
        """Atomic energies E_i in eV, shape (N,); zero for padding atoms.

        Sharded evaluation (:mod:`efa_calc.backends.sharded`, inside ``shard_map``) passes the mesh
        ``axis_name`` — graph centroids and the long-range block's global sums are then
        all-reduced over it, and ``node_mask`` marks the atoms this device *owns* — and
        ``halo_exchange``, a ↦ [a; ghost rows of a received from their owners]: the arrays
        then hold this device's owned atoms, neighbours (``src_idx``) index the extended
        arrays (positions, and the features before every iteration) and centres
        (``dst_idx``) the owned rows, so node-wise work is done for owned atoms only.  Both
        default to single-device evaluation (the identity).
        """
        cfg = self.config
        dtype = batch.positions.dtype
        extend = halo_exchange if halo_exchange is not None else (lambda a: a)
        neighbour_positions = extend(batch.positions)
        basis = _edge_basis(cfg, batch, neighbour_positions)
        x = e3x.nn.Embed(num_embeddings=cfg.zmax, features=cfg.num_features, dtype=dtype, name="embed")(
            batch.atomic_numbers)
        centred = None if cfg.long_range is None else _centred_positions(batch, axis_name)
        energy_block = cfg.long_range is not None and block(cfg.long_range.kind).energy
        e_lr = 0.0
        for t in range(cfg.num_iterations):
            last = t == cfg.num_iterations - 1
            y = _local_branch(cfg, t, last, extend(x), basis, batch, neighbour_positions)
            if last:
                x = e3x.nn.change_max_degree_or_type(x, max_degree=0, include_pseudotensors=False)
            # e3x's Clebsch–Gordan tables are float64 when x64 is on: keep the compute dtype.
            y = _mlp(e3x.nn.add(x, y.astype(dtype)), cfg.num_features, f"local_mlp_{t}", cfg.output_is_zero_at_init)
            y_nl = None
            if cfg.long_range is not None and t in cfg.long_range.iterations:
                if energy_block:  # atomic energies (eV), added to E_i below
                    e_lr = e_lr + _long_range_block(cfg, t, last, x, batch.positions, batch, axis_name)
                else:
                    y_nl = _long_range_branch(cfg, t, last, x, centred, batch, axis_name)
            x = self._mix(t, x, y, y_nl)

        x = e3x.nn.change_max_degree_or_type(x, max_degree=0, include_pseudotensors=False)
        readout_init = nn.initializers.zeros if cfg.output_is_zero_at_init else nn.initializers.lecun_normal()
        e = nn.Dense(1, use_bias=False, dtype=dtype, kernel_init=readout_init, name="readout")(x)
        bias = self.param("element_bias", nn.initializers.zeros, (cfg.zmax + 1,)).astype(dtype)
        e = jnp.squeeze(e, axis=(-1, -2, -3)) + bias[batch.atomic_numbers] + e_lr
        return e * batch.node_mask.astype(e.dtype)

    def _mix(self, t: int, x, y, y_nl):
        """x + silu(c_t)·y + silu(1 − c_t)·y_nl (plain sum without the learned switch)."""
        if not self.config.use_switch:
            return e3x.nn.add(*([x, y] + ([y_nl] if y_nl is not None else [])))
        c = self.param(f"switch_{t}", nn.initializers.constant(0.5), (1,)).astype(x.dtype)
        terms = [x, jax.nn.silu(c) * y]
        if y_nl is not None:
            terms.append(jax.nn.silu(1.0 - c) * y_nl)
        return e3x.nn.add(*terms)


def _edge_basis(cfg: ModelConfig, batch: Batch, neighbour_positions) -> EdgeBasis:
    """The factorised edge basis of every pair; padding pairs are moved beyond the cutoff,
    where the basis is exactly 0 (and their radial part is masked to 0)."""
    dtype = batch.positions.dtype
    disp = neighbour_positions[batch.src_idx] - batch.positions[batch.dst_idx]
    if batch.cells is not None:  # periodic images: r_j + n·cell − r_i
        disp = disp + jnp.einsum("ed,edk->ek", batch.cell_shifts, batch.cells[batch.batch_segments[batch.dst_idx]])
    if batch.pair_offsets is not None:  # zero; its gradient is ∂E/∂r_e (per-pair virials)
        disp = disp + batch.pair_offsets
    far = jnp.asarray([2.0 * cfg.cutoff + 1.0, 0.0, 0.0], dtype)
    disp = jnp.where(batch.edge_mask[:, None], disp, far)
    basis = edge_basis(
        disp, max_degree=cfg.mp_max_degree, num=cfg.num_basis_functions,
        radial_fn=radial_function(cfg.radial_basis, cfg.cutoff),
        cutoff_fn=functools.partial(getattr(e3x.nn, cfg.cutoff_fn), cutoff=cfg.cutoff),
    )
    return basis._replace(radial=basis.radial * batch.edge_mask[:, None].astype(dtype))


def _centred_positions(batch: Batch, axis_name: Optional[str]):
    """Positions relative to their graph's centroid: exact in real arithmetic (the long-range
    blocks depend on r_j − r_i only), and it keeps ERoPE phases small in float32."""
    mask = batch.node_mask.astype(batch.positions.dtype)[:, None]
    total = jax.ops.segment_sum(batch.positions * mask, batch.batch_segments, batch.num_graphs)
    count = jax.ops.segment_sum(mask, batch.batch_segments, batch.num_graphs)
    if axis_name is not None:
        total, count = jax.lax.psum((total, count), axis_name)
    return batch.positions - (total / jnp.maximum(count, 1.0))[batch.batch_segments]


def _local_branch(cfg: ModelConfig, t: int, last: bool, x_src, basis: EdgeBasis, batch: Batch, neighbour_positions):
    """Message pass t (scalar output in the last iteration), with the MARA gate if configured."""
    gate = None
    if cfg.mara_gate is not None:
        gate = MARAGate(cfg.mara_gate, cfg.cutoff, name=f"mara_gate_{t}")(
            x_src[:, 0, 0, :], neighbour_positions, batch.dst_idx, batch.src_idx, batch.edge_mask
        )
    degree = {"max_degree": 0, "include_pseudotensors": False} if last else {}
    mp = MessagePass(dtype=batch.positions.dtype, edge_chunk=cfg.edge_chunk, message_passing=cfg.message_passing,
                     name=f"message_pass_{t}", **degree)
    return mp(x_src, basis, batch.dst_idx, batch.src_idx, batch.positions.shape[0], gate)


def _long_range_branch(cfg: ModelConfig, t: int, last: bool, x, centred, batch: Batch, axis_name: Optional[str]):
    """MLP(add(Dense(block_t(x_lr, r)), x)) with x_lr = x cut to the block's degree/parity."""
    dtype = batch.positions.dtype
    y_nl = _long_range_block(cfg, t, last, x, centred, batch, axis_name)
    y_nl = Dense(cfg.num_features, dtype=dtype, name=f"long_range_projection_{t}")(y_nl.astype(dtype))
    return _mlp(e3x.nn.add(y_nl, x), cfg.num_features, f"long_range_mlp_{t}", cfg.output_is_zero_at_init)


def _long_range_block(cfg: ModelConfig, t: int, last: bool, x, positions, batch: Batch, axis_name: Optional[str]):
    """block_t(x_lr, r [, cells, reciprocal_grid]) with x_lr = x cut to the block's degree/parity."""
    lr = cfg.long_range
    if last or x.shape[-2] == 1:
        x_lr = e3x.nn.change_max_degree_or_type(x, max_degree=0, include_pseudotensors=False)
    else:
        x_lr = e3x.nn.change_max_degree_or_type(x, max_degree=lr.max_degree,
                                                include_pseudotensors=lr.include_pseudotensors)
    extra = {} if axis_name is None else {"axis_name": axis_name}
    if batch.cells is not None:
        if not lr.periodic:
            raise ValueError(f"the {lr.kind!r} long-range block of this model is not defined in periodic cells")
        extra["cells"] = batch.cells
        if batch.reciprocal_grid is not None:  # only for blocks that ask (LongRangeConfig.reciprocal_grid)
            extra["reciprocal_grid"] = batch.reciprocal_grid
        if batch.reciprocal_indices is not None:  # periodic EFA's G sets (host-built, static shapes)
            extra.update(reciprocal_indices=batch.reciprocal_indices, reciprocal_mask=batch.reciprocal_mask)
    return block(lr.kind).module(lr, name=f"long_range_{t}")(
        x_lr, positions, batch.batch_segments, batch.node_mask, batch.num_graphs, batch.nodes_per_graph, **extra
    )


def init_params(config: ModelConfig, rng: jax.Array, batch: Batch) -> dict:
    """Fresh float32 parameters ``{'params': {...}}`` for ``config`` (shapes from ``batch``)."""
    return EnergyModel(config).init(rng, batch.replace(positions=batch.positions.astype(jnp.float32)))


def atomic_energies(params: dict, config: ModelConfig, batch: Batch) -> Float[Array, "N"]:
    """Atomic energies (eV) in the dtype of ``batch.positions`` (params are cast to it)."""
    precision = Precision(str(batch.positions.dtype))
    with precision.matmul_scope():
        return EnergyModel(config).apply(precision.cast(params), batch)


def energy_and_forces(
    params: dict, config: ModelConfig, batch: Batch
) -> tuple[Float[Array, "G"], Float[Array, "N 3"], Float[Array, "N"]]:
    """Graph energies E_g (eV), forces F = −∂E/∂R (eV/Å) and atomic energies (eV).

    Padding graphs get E_g = 0; padding atoms get zero force and energy.
    """

    def total(positions):
        e_i = atomic_energies(params, config, batch.replace(positions=positions))
        return jnp.sum(e_i), e_i

    (_, e_i), grad = jax.value_and_grad(total, has_aux=True)(batch.positions)
    e_g = jax.ops.segment_sum(e_i, batch.batch_segments, batch.num_graphs)
    e_g = jnp.where(batch.graph_mask, e_g, 0.0)
    return e_g, -grad, e_i


def energy_forces_stress(
    params: dict, config: ModelConfig, batch: Batch
) -> tuple[Float[Array, "G"], Float[Array, "N 3"], Float[Array, "N"], Float[Array, "G 3 3"]]:
    """:func:`energy_and_forces` plus the stress of every periodic graph (eV/Å³).

    The stress is the derivative of the energy with respect to a symmetric strain ε of the
    cell and the positions together, r ↦ r(1 + ε), cell ↦ cell(1 + ε), divided by the cell
    volume: σ_g = (1/V_g) ∂E_g/∂ε (ASE's sign: positive under tension).  Autodiff of the
    same energy as the forces, no hand-written virial.  Needs ``batch.cells``.
    """
    if batch.cells is None:
        raise ValueError("energy_forces_stress needs a periodic batch (batch.cells)")
    seg = batch.batch_segments
    dtype = batch.positions.dtype

    def total(positions, strain):
        sym = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        deformed = batch.replace(positions=positions + jnp.einsum("nd,nde->ne", positions, sym[seg]),
                                 cells=batch.cells + jnp.einsum("gad,gde->gae", batch.cells, sym))
        e_i = atomic_energies(params, config, deformed)
        return jnp.sum(e_i), e_i

    zero = jnp.zeros((batch.num_graphs, 3, 3), dtype)
    (_, e_i), (grad, dedstrain) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(batch.positions, zero)
    e_g = jnp.where(batch.graph_mask, jax.ops.segment_sum(e_i, seg, batch.num_graphs), 0.0)
    volume = jnp.abs(jnp.linalg.det(batch.cells))
    stress = dedstrain / jnp.where(batch.graph_mask, volume, 1.0)[:, None, None]
    return e_g, -grad, e_i, jnp.where(batch.graph_mask[:, None, None], stress, 0.0)


def energy_forces_stresses(
    params: dict, config: ModelConfig, batch: Batch
) -> tuple[Float[Array, "G"], Float[Array, "N 3"], Float[Array, "N"], Float[Array, "G 3 3"], Float[Array, "N 3 3"]]:
    """:func:`energy_forces_stress` plus per-atom stresses σ_i (eV/Å³) of a local model.

    A local model depends on the positions only through the pair displacements r_e, so
    its strain derivative is the pair virial Σ_e r_e ⊗ ∂E/∂r_e.  Each pair's share is split
    half and half between its two atoms (ASE's and LAMMPS's convention for per-atom
    virials):  σ_i = (1/2V) Σ_{e ∋ i} sym(r_e ⊗ ∂E/∂r_e),  and Σ_i σ_i = σ_g exactly.
    ∂E/∂r_e comes from the same backward pass, through a zero ``pair_offsets`` input.

    Raises:
      ValueError: for a model with a long-range block (its energy depends on positions
        beyond the pairs, so no per-pair split exists) or a non-periodic batch.
    """
    if batch.cells is None:
        raise ValueError("energy_forces_stresses needs a periodic batch (batch.cells)")
    if config.long_range is not None:
        raise ValueError(f"per-atom stresses need a local model; this one has a {config.long_range.kind!r} block")
    seg, dtype = batch.batch_segments, batch.positions.dtype

    def total(positions, strain, offsets):
        sym = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
        deformed = batch.replace(positions=positions + jnp.einsum("nd,nde->ne", positions, sym[seg]),
                                 cells=batch.cells + jnp.einsum("gad,gde->gae", batch.cells, sym),
                                 pair_offsets=offsets)
        e_i = atomic_energies(params, config, deformed)
        return jnp.sum(e_i), e_i

    zero_strain = jnp.zeros((batch.num_graphs, 3, 3), dtype)
    zero_offsets = jnp.zeros((batch.dst_idx.shape[0], 3), dtype)
    (_, e_i), (grad, dedstrain, dedr) = jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True)(
        batch.positions, zero_strain, zero_offsets)
    disp = batch.positions[batch.src_idx] - batch.positions[batch.dst_idx] + jnp.einsum(
        "ed,edk->ek", batch.cell_shifts, batch.cells[seg[batch.dst_idx]])
    w = jnp.einsum("ea,eb->eab", disp, dedr) * batch.edge_mask[:, None, None].astype(dtype)
    w = 0.5 * (w + jnp.swapaxes(w, 1, 2))
    n = batch.positions.shape[0]
    w_i = 0.5 * (jax.ops.segment_sum(w, batch.dst_idx, n) + jax.ops.segment_sum(w, batch.src_idx, n))
    e_g = jnp.where(batch.graph_mask, jax.ops.segment_sum(e_i, seg, batch.num_graphs), 0.0)
    volume = jnp.where(batch.graph_mask, jnp.abs(jnp.linalg.det(batch.cells)), 1.0)
    stress = jnp.where(batch.graph_mask[:, None, None], dedstrain / volume[:, None, None], 0.0)
    stresses = w_i / volume[seg][:, None, None] * batch.node_mask[:, None, None].astype(dtype)
    return e_g, -grad, e_i, stress, stresses
