"""The equivariant MPNN energy model with optional long-range (EFA) branches, spec §6.

For iterations t = 0 … T−1 with features x (N, P, (L+1)², F):

    local:      y    = MLP(add(x, MessagePass_t(x, basis [· gate])))  (scalar output at t = T−1)
    long range: y_nl = MLP(add(Dense(EFA_t(x_lr, r)), x))          (only for t in config)
    update:     x    ← x + silu(c_t)·y + silu(1 − c_t)·y_nl        (c_t learned, init 0.5)

where MLP = Dense → gated silu → Dense (last layer zero-initialised), ``basis`` is the
e3x radial × spherical-harmonic edge basis times a smooth cutoff (kept factorised, :class:`~efa_calc.nn.tensor.EdgeBasis`), and x_lr is x cut to the
EFA degree/parity.  The long-range block is any registered block
(:mod:`efa_calc.nn.long_range`: EFA, all-to-all attention); ``gate`` is the optional MARA edge
gate (:mod:`efa_calc.nn.mara`) multiplying each edge's message.  The atomic energy is E_i = w·scalars(x_i) + b[Z_i] and forces are the
exact negative gradient F = −∂E/∂R (:func:`energy_and_forces`).

Batches are flat (jraph-style): N atoms of G graphs with ``batch_segments``; padding atoms
(``node_mask`` False) and padding edges (``edge_mask`` False) contribute nothing, and
padding graphs (``graph_mask`` False) get zero energy.  Units: Å in, eV and eV/Å out.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import e3x
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Integer

from efa_calc.config import ModelConfig
from efa_calc.nn.dense import Dense
from efa_calc.nn.long_range import block
from efa_calc.nn.mara import MARAGate
from efa_calc.nn.radial import radial_function
from efa_calc.nn.tensor import MessagePass, edge_basis

__all__ = ["Batch", "EnergyModel", "atomic_energies", "energy_and_forces", "init_params"]


class Batch(NamedTuple):
    """A padded, static-shape batch of molecules (all arrays; see module docstring).

    Attributes:
      atomic_numbers: (N,) int32, 0 for padding atoms.
      positions: (N, 3) in Å.
      dst_idx, src_idx: (E,) int32 edge lists; messages flow src → dst and the
        displacement is R[src] − R[dst]; both directions of every pair are present.
      edge_mask: (E,) bool, False for padding edges.
      batch_segments: (N,) int32 graph index of every atom.
      node_mask: (N,) bool, False for padding atoms.
      graph_mask: (G,) bool, False for padding graphs.
    """

    atomic_numbers: Integer[Array, "N"]
    positions: Float[Array, "N 3"]
    dst_idx: Integer[Array, "E"]
    src_idx: Integer[Array, "E"]
    edge_mask: Bool[Array, "E"]
    batch_segments: Integer[Array, "N"]
    node_mask: Bool[Array, "N"]
    graph_mask: Bool[Array, "G"]


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
        atomic_numbers: Integer[Array, "N"],
        positions: Float[Array, "N 3"],
        dst_idx: Integer[Array, "E"],
        src_idx: Integer[Array, "E"],
        edge_mask: Bool[Array, "E"],
        batch_segments: Integer[Array, "N"],
        node_mask: Bool[Array, "N"],
        num_graphs: int,
        nodes_per_graph: Optional[int] = None,
        axis_name: Optional[str] = None,
        halo_exchange: Optional[Callable] = None,
    ) -> Float[Array, "N"]:
        """Atomic energies E_i in eV, shape (N,); zero for padding atoms.

        Sharded evaluation (:mod:`efa_calc.sharding`, inside ``shard_map``) passes the mesh
        ``axis_name`` — graph centroids and the long-range block's global sums are then
        all-reduced over it, and ``node_mask`` marks the atoms this device *owns* — and
        ``halo_exchange``, a ↦ [a; ghost rows of a received from their owners]: the arrays
        then hold this device's owned atoms, neighbours (``src_idx``) index the extended
        arrays (positions, and the features before every iteration) and centres
        (``dst_idx``) the owned rows, so node-wise work is done for owned atoms only.  Both
        default to single-device evaluation (the identity).
        """
        cfg = self.config
        n = positions.shape[0]
        dtype = positions.dtype

        extend = halo_exchange if halo_exchange is not None else (lambda a: a)
        neighbour_positions = extend(positions)
        # Edge basis; padding edges are moved beyond the cutoff, where the basis is exactly 0.
        disp = neighbour_positions[src_idx] - positions[dst_idx]
        far = jnp.asarray([2.0 * cfg.cutoff + 1.0, 0.0, 0.0], dtype)
        disp = jnp.where(edge_mask[:, None], disp, far)
        basis = edge_basis(
            disp, max_degree=cfg.mp_max_degree, num=cfg.num_basis_functions,
            radial_fn=radial_function(cfg.radial_basis),
            cutoff_fn=functools.partial(getattr(e3x.nn, cfg.cutoff_fn), cutoff=cfg.cutoff),
        )
        basis = basis._replace(radial=basis.radial * edge_mask[:, None].astype(dtype))

        x = e3x.nn.Embed(num_embeddings=cfg.zmax, features=cfg.num_features, dtype=dtype, name="embed")(atomic_numbers)

        lr = cfg.long_range
        if lr is not None:
            # Centre every graph on its centroid: exact in real arithmetic (EFA depends on
            # r_j − r_i only), and it keeps ERoPE phases small in float32.
            mask = node_mask.astype(dtype)[:, None]
            total = jax.ops.segment_sum(positions * mask, batch_segments, num_graphs)
            count = jax.ops.segment_sum(mask, batch_segments, num_graphs)
            if axis_name is not None:
                total, count = jax.lax.psum((total, count), axis_name)
            centred = positions - (total / jnp.maximum(count, 1.0))[batch_segments]

        for t in range(cfg.num_iterations):
            last = t == cfg.num_iterations - 1
            x_src = extend(x)
            gate = None
            if cfg.mara_gate is not None:
                gate = MARAGate(cfg.mara_gate, cfg.cutoff, name=f"mara_gate_{t}")(
                    x_src[:, 0, 0, :], neighbour_positions, dst_idx, src_idx, edge_mask
                )
            if last:
                y = MessagePass(max_degree=0, include_pseudotensors=False, dtype=dtype, name=f"message_pass_{t}",
                                message_passing=cfg.message_passing)(x_src, basis, dst_idx, src_idx, n, gate)
                x = e3x.nn.change_max_degree_or_type(x, max_degree=0, include_pseudotensors=False)
            else:
                y = MessagePass(dtype=dtype, name=f"message_pass_{t}", message_passing=cfg.message_passing)(
                    x_src, basis, dst_idx, src_idx, n, gate)
            # e3x's Clebsch–Gordan tables are float64 when x64 is on: keep the compute dtype.
            y = _mlp(e3x.nn.add(x, y.astype(dtype)), cfg.num_features, f"local_mlp_{t}", cfg.output_is_zero_at_init)

            y_nl = None
            if lr is not None and t in lr.iterations:
                if last or x.shape[-2] == 1:
                    x_lr = e3x.nn.change_max_degree_or_type(x, max_degree=0, include_pseudotensors=False)
                else:
                    x_lr = e3x.nn.change_max_degree_or_type(
                        x, max_degree=lr.max_degree, include_pseudotensors=lr.include_pseudotensors
                    )
                sharded = {} if axis_name is None else {"axis_name": axis_name}
                y_nl = block(lr.kind).module(lr, name=f"long_range_{t}")(
                    x_lr, centred, batch_segments, node_mask, num_graphs, nodes_per_graph, **sharded
                )
                y_nl = Dense(cfg.num_features, dtype=dtype, name=f"long_range_projection_{t}")(y_nl.astype(dtype))
                y_nl = _mlp(e3x.nn.add(y_nl, x), cfg.num_features, f"long_range_mlp_{t}", cfg.output_is_zero_at_init)

            if cfg.use_switch:
                c = self.param(f"switch_{t}", nn.initializers.constant(0.5), (1,)).astype(dtype)
                terms = [x, jax.nn.silu(c) * y]
                if y_nl is not None:
                    terms.append(jax.nn.silu(1.0 - c) * y_nl)
            else:
                terms = [x, y] + ([y_nl] if y_nl is not None else [])
            x = e3x.nn.add(*terms)

        x = e3x.nn.change_max_degree_or_type(x, max_degree=0, include_pseudotensors=False)
        readout_init = nn.initializers.zeros if cfg.output_is_zero_at_init else nn.initializers.lecun_normal()
        e = nn.Dense(1, use_bias=False, dtype=dtype, kernel_init=readout_init, name="readout")(x)
        bias = self.param("element_bias", nn.initializers.zeros, (cfg.zmax + 1,)).astype(dtype)
        e = jnp.squeeze(e, axis=(-1, -2, -3)) + bias[atomic_numbers]
        return e * node_mask.astype(e.dtype)


def init_params(config: ModelConfig, rng: jax.Array, batch: Batch) -> dict:
    """Fresh float32 parameters ``{'params': {...}}`` for ``config`` (shapes from ``batch``)."""
    model = EnergyModel(config)
    return model.init(
        rng, batch.atomic_numbers, batch.positions.astype(jnp.float32), batch.dst_idx, batch.src_idx,
        batch.edge_mask, batch.batch_segments, batch.node_mask, int(batch.graph_mask.shape[0]),
    )


def atomic_energies(
    params: dict,
    config: ModelConfig,
    batch: Batch,
    nodes_per_graph: Optional[int] = None,
    lebedev_num: Optional[int] = None,
) -> Float[Array, "N"]:
    """Atomic energies (eV) in the dtype of ``batch.positions`` (params are cast to it).

    ``lebedev_num`` evaluates EFA on another grid (:meth:`ModelConfig.for_evaluation`)."""
    dtype = batch.positions.dtype
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    config = config.for_evaluation(lebedev_num=lebedev_num)
    with jax.default_matmul_precision("highest"):  # no TF32 shortcuts on GPUs
        return EnergyModel(config).apply(
            params, batch.atomic_numbers, batch.positions, batch.dst_idx, batch.src_idx, batch.edge_mask,
            batch.batch_segments, batch.node_mask, int(batch.graph_mask.shape[0]), nodes_per_graph,
        )


def energy_and_forces(
    params: dict,
    config: ModelConfig,
    batch: Batch,
    nodes_per_graph: Optional[int] = None,
    lebedev_num: Optional[int] = None,
) -> tuple[Float[Array, "G"], Float[Array, "N 3"], Float[Array, "N"]]:
    """Graph energies E_g (eV), forces F = −∂E/∂R (eV/Å) and atomic energies (eV).

    Padding graphs get E_g = 0; padding atoms get zero force and energy.
    """
    num_graphs = int(batch.graph_mask.shape[0])

    def total(positions):
        e_i = atomic_energies(params, config, batch._replace(positions=positions), nodes_per_graph, lebedev_num)
        return jnp.sum(e_i), e_i

    (_, e_i), grad = jax.value_and_grad(total, has_aux=True)(batch.positions)
    e_g = jax.ops.segment_sum(e_i, batch.batch_segments, num_graphs)
    e_g = jnp.where(batch.graph_mask, e_g, 0.0)
    return e_g, -grad, e_i
