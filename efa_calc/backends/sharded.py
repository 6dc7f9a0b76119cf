"""One structure's energy and forces spread over several jax devices (and hosts).

Spatial domain decomposition with a one-cutoff halo, expressed with JAX's own machinery
(``jax.sharding.Mesh``, ``jax.shard_map``, collectives; ``jax.distributed`` for several
hosts).  For D devices on the mesh axis :data:`AXIS`:

* **Ownership.**  Every atom is owned by exactly one domain d ∈ {0 … D−1}
  (:func:`partition`: recursive coordinate bisection balanced by atom count, or uniform
  slabs).  Device d holds its owned atoms (N_d ≤ C_own slots) and the pairs (i, j) whose
  centre i it owns (≤ C_edge slots).

* **Halo (ghost atoms).**  The neighbours j of owned atoms that another domain e owns are
  *ghosts* on d: rows C_own + e·S … C_own + e·S + S − 1 of the neighbour arrays (S =
  C_ghost, the largest number of atoms any domain e lends to any domain d).  Before every
  message-passing iteration (and once for the positions) each owner sends its atoms'
  current rows to the domains that need them, with one ``all_to_all`` of a (D, S, …) buffer:

      ghost rows on d  ←  x_e[send_idx[e, d, :]]    for every e ≠ d

  so every owned atom sees exactly the neighbourhood it sees on one device, at every
  iteration.  Ghosts only feed messages: every node-wise operation (MLPs, EFA, readout)
  runs on the C_own owned rows.  Bytes per exchange and device: D·S·P·(L+1)²·F·b
  (b bytes per number).

* **EFA.**  The grid sums of every EFA layer are summed over owned atoms only and
  all-reduced:  KV_m = Σ_d Σ_{j owned by d} k̃_jm ⊗ v_j  — one ``psum`` of
  M·D_qk·D_v numbers per layer, independent of N
  (:func:`efa_calc.nn.long_range.efa.linear_attention`).  All-to-all attention instead
  all-gathers keys, values and positions of every atom (O(N) per layer).

* **Energy and forces.**  E = psum_d Σ_{i owned by d} E_i (eV).  Forces
  F = −∂E/∂R (eV/Å) are the gradient of E with respect to each device's *owned*
  positions: ghost positions are themselves received through the ``all_to_all``, whose
  transpose (again an ``all_to_all``) returns every ghost's gradient to its owner, and the
  transpose of each ``psum`` of grid sums is a ``psum`` of their cotangents.  No force
  array of size N exists on any device.

Shapes are static (jit-friendly): C_own, C_ghost and C_edge are rounded up
(:meth:`Capacities.bucket`) and only ever grow; a structure that leaves them is first
re-partitioned, and capacities grow (one new compile) only if that does not suffice —
atoms and pairs are never dropped.  Units: positions in Å, energies in eV, forces in eV/Å.

Several hosts: call ``jax.distributed.initialize(...)`` in every process before creating
the :class:`ShardedPotential` (or ``EFACalculator(..., devices=...)``) and pass the global
device list (``jax.devices()``); every process builds the same plan from the same
structure and feeds its addressable shards (``jax.make_array_from_callback``).  See
``docs/scaling.md``.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from efa_calc.backends.base import Backend, Prediction
from efa_calc.backends.partition import (
    METHODS, Capacities, ShardInputs, build_shards, partition, resolve_devices, shard_sizes,
)
from efa_calc.nn.batch import Batch
from efa_calc.nn.config import ModelConfig
from efa_calc.nn.energy_model import EnergyModel
from efa_calc.nn.precision import Precision

__all__ = ["AXIS", "ShardedPotential", "sharded_energy_and_forces"]

log = logging.getLogger("efa_calc")

#: Name of the device-mesh axis the atoms are spread over.
AXIS = "domains"


# --------------------------------------------------------------------------- device program
def _halo_exchange(own: jax.Array, send_idx: jax.Array, send_mask: jax.Array, axis_name: str) -> jax.Array:
    """Ghost rows (D·S, …) received from their owners: one ``all_to_all`` of (D, S, …)."""
    rows = own[send_idx]  # (D, S, ...): block e goes to device e
    mask = send_mask.reshape(send_mask.shape + (1,) * (own.ndim - 1))
    rows = jnp.where(mask, rows, jnp.zeros((), rows.dtype))
    recv = jax.lax.all_to_all(rows, axis_name, 0, 0, tiled=True)  # block e came from device e
    return recv.reshape((-1,) + own.shape[1:])


def sharded_energy_and_forces(params: dict, config: ModelConfig, shards: dict, axis_name: str = AXIS):
    """The per-device program (call inside ``shard_map`` over ``axis_name``).

    Args:
      params: model parameters (replicated), cast to the positions' dtype here.
      config: the model (evaluation variant).
      shards: this device's :class:`ShardInputs` fields (without the host-only
        ``global_index`` and ``ghost_numbers``), leading device axis of length 1.

    Returns:
      (E, E_own, F_own): total energy in eV (replicated scalar), owned atomic energies
      (1, C_own) in eV, owned forces (1, C_own, 3) in eV/Å.
    """
    sh = {k: v[0] for k, v in shards.items()}
    precision = Precision(str(sh["positions"].dtype))
    params = precision.cast(params)
    c_own = sh["positions"].shape[0]
    exchange = functools.partial(_halo_exchange, send_idx=sh["send_idx"], send_mask=sh["send_mask"],
                                 axis_name=axis_name)
    z = sh["numbers"]
    # device-varying zeros (derived from a sharded input): the centroid is then broadcast
    # after its psum's transpose, which stays a (1, 3) all-reduce instead of (C_own, 3)
    segments = z * 0

    def halo(a):  # owned rows, then the ghost rows (C_own + D·C_ghost)
        return jnp.concatenate([a, exchange(a)])

    def total(pos_own):
        batch = Batch(z, pos_own, sh["dst_idx"], sh["src_idx"], sh["edge_mask"], segments, sh["owned_mask"],
                      jnp.ones(1, bool), nodes_per_graph=c_own)
        with precision.matmul_scope():
            e_i = EnergyModel(config).apply(params, batch, axis_name=axis_name, halo_exchange=halo)
        return jax.lax.psum(jnp.sum(e_i), axis_name), e_i

    (energy, e_own), grad = jax.value_and_grad(total, has_aux=True)(sh["positions"])
    return energy, e_own[None], -grad[None]


_FIELDS = [f for f in ShardInputs._fields if f not in ("global_index", "ghost_numbers")]  # sent to devices


@functools.lru_cache(maxsize=None)
def compiled_sharded(config: ModelConfig, devices: tuple):
    """The jitted ``(params, shards: dict) -> (E, E_own (D, C_own), F_own (D, C_own, 3))``
    over a 1-D mesh of ``devices`` (one per configuration and device tuple)."""
    mesh = Mesh(np.asarray(devices, dtype=object), (AXIS,))
    fn = jax.shard_map(
        lambda params, shards: sharded_energy_and_forces(params, config, shards, AXIS),
        mesh=mesh,
        in_specs=(P(), {k: P(AXIS) for k in _FIELDS}),
        out_specs=(P(), P(AXIS), P(AXIS)),
    )
    return jax.jit(lambda params, shards: fn(params, shards)), mesh


def _put(mesh: Mesh, spec, value: np.ndarray) -> jax.Array:
    """A global array from host data every process holds (multi-process safe)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec), lambda idx: value[idx])


def _fetch(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x)
    if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# --------------------------------------------------------------------------- user-facing
class ShardedPotential(Backend):
    """Evaluate one structure at a time over several devices.

    Args:
      checkpoint: the model (its evaluation variant: ``config``, e.g. ``Potential.config``).
      devices: int or list of jax devices (:func:`resolve_devices`).
      dtype: ``"float32"`` or ``"float64"``.
      method: partition method (:func:`partition`).
      config: evaluation variant of ``checkpoint.config`` (default: the checkpoint's own).

    The partition is kept between calls (MD) while it fits the slot capacities; a
    structure that leaves them is re-partitioned (``num_repartitions``), and capacities
    grow to the need plus 25 % (a new compile, ``num_capacity_changes``) only when
    re-partitioning does not suffice.  The first plan has 5 % headroom.  Nothing is ever truncated.
    """

    def __init__(self, checkpoint, devices, dtype: str = "float32", method: str = "bisect",
                 config: Optional[ModelConfig] = None):
        if method not in METHODS:
            raise ValueError(f"partition method {method!r}; allowed: {METHODS}")
        self.checkpoint = checkpoint
        self.config = checkpoint.config if config is None else config
        self.precision = Precision(dtype)
        self.devices = resolve_devices(devices)
        self.num_domains = len(self.devices)
        self.method = method
        self.fn, self.mesh = compiled_sharded(self.config, tuple(self.devices))
        with self.precision.scope():
            host = self.precision.cast(checkpoint.params)
            self.params = jax.tree_util.tree_map(lambda a: _put(self.mesh, P(), a), host)
        self.owner: Optional[np.ndarray] = None
        self.capacities: Optional[Capacities] = None
        self.num_repartitions = 0
        self.num_capacity_changes = 0
        self.last_inputs: Optional[ShardInputs] = None

    def plan(self, numbers, positions, dst, src, owner: Optional[np.ndarray] = None) -> ShardInputs:
        """Per-device arrays for this structure (keeps, re-partitions or grows; see class)."""
        n, d = len(numbers), self.num_domains
        if owner is not None:
            owner = np.asarray(owner, np.int32)
            if owner.shape != (n,) or (n and (owner.min() < 0 or owner.max() >= d)):
                raise ValueError(f"owner must be ({n},) domain indices in [0, {d})")
        elif self.owner is None or len(self.owner) != n:
            owner = partition(positions, d, self.method)
        else:
            owner = self.owner
            if self.capacities is not None and not self.capacities.fits(shard_sizes(dst, src, owner, d)):
                owner = partition(positions, d, self.method)
                self.num_repartitions += 1
                log.info("ShardedPotential: a domain left its slot capacities %s; re-partitioned", self.capacities)
        need = shard_sizes(dst, src, owner, d)
        if self.capacities is None:
            self.capacities = Capacities.bucket(need)
        elif not self.capacities.fits(need):
            new = self.capacities.union(Capacities.bucket(need, headroom=1.25))
            log.info("ShardedPotential: slots %s exceed capacities %s; moving to %s (one new compile)",
                     need, self.capacities, new)
            self.capacities = new
            self.num_capacity_changes += 1
        self.owner = owner
        return build_shards(numbers, positions, dst, src, owner, d, self.capacities, self.np_dtype)

    def __call__(self, numbers, positions, dst, src, owner: Optional[np.ndarray] = None):
        """Model energy (eV, no shift), forces (N, 3) eV/Å and atomic energies (N,) eV of one
        structure; ``dst, src`` its pairs (model convention), ``owner`` an optional partition."""
        numbers = np.asarray(numbers)
        n = len(numbers)
        inputs = self.plan(numbers, np.asarray(positions, np.float64), np.asarray(dst), np.asarray(src), owner)
        self.last_inputs = inputs
        with self.precision.scope():
            energy, e_own, f_own = self.fn(self.params, self._shards(inputs))
            energy, e_own, f_own = _fetch(energy), _fetch(e_own), _fetch(f_own)
        mask = inputs.owned_mask
        idx = inputs.global_index[mask]
        forces = np.zeros((n, 3), f_own.dtype)
        e_i = np.zeros(n, e_own.dtype)
        forces[idx] = f_own[mask]
        e_i[idx] = e_own[mask]
        return float(energy), forces, e_i

    def predict(self, graphs, slots=None) -> list[Prediction]:
        """One structure at a time, each spread over the devices (``slots`` is not used)."""
        out = []
        for g in graphs:
            _, forces, e_i = self(g.numbers, g.positions, g.dst, g.src)
            self.check_finite(e_i, forces)
            out.append(self.physical(g.numbers, e_i, forces))
        return out

    def _shards(self, inputs: ShardInputs) -> dict:
        return {k: _put(self.mesh, P(AXIS), getattr(inputs, k)) for k in _FIELDS}

    def lower(self, graphs, slots=None):
        """The device program for the first graph (plans it, as :meth:`predict` would)."""
        g = graphs[0]
        inputs = self.plan(np.asarray(g.numbers), np.asarray(g.positions, np.float64), np.asarray(g.dst),
                           np.asarray(g.src))
        return self.lower_inputs(inputs)

    def lower_inputs(self, inputs: ShardInputs):
        """``jax.jit(...).lower`` of the device program for planned inputs (HLO, memory)."""
        with self.precision.scope():
            return self.fn.lower(self.params, self._shards(inputs))
