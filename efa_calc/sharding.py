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
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Float, Int

from efa_calc.config import ModelConfig
from efa_calc.nn.energy_model import EnergyModel

__all__ = [
    "AXIS", "Capacities", "ShardInputs", "ShardedPotential", "build_shards", "partition", "resolve_devices",
    "shard_sizes", "sharded_energy_and_forces",
]

log = logging.getLogger("efa_calc")

#: Name of the device-mesh axis the atoms are spread over.
AXIS = "domains"

METHODS = ("bisect", "slabs")


def resolve_devices(devices) -> list[jax.Device]:
    """A validated list of distinct jax devices of one platform.

    Args:
      devices: an int D (the first D of ``jax.devices()``, global over processes after
        ``jax.distributed.initialize``) or a sequence of ``jax.Device``.

    Raises:
      ValueError: D < 1, more devices than exist, duplicates, non-devices, or devices of
        different platforms (e.g. CPU and GPU).
    """
    if isinstance(devices, (bool, np.bool_)):
        raise ValueError(f"devices={devices!r}; allowed: a number of devices or a list of jax devices")
    if isinstance(devices, (int, np.integer)):
        n = int(devices)
        available = jax.devices()
        if n < 1:
            raise ValueError(f"devices={n}; the number of devices must be at least 1")
        if n > len(available):
            raise ValueError(
                f"devices={n} requested, but only {len(available)} {available[0].platform} device(s) exist "
                "(for several CPU devices set XLA_FLAGS=--xla_force_host_platform_device_count=N before jax starts)"
            )
        return list(available[:n])
    devs = list(devices)
    if not devs:
        raise ValueError("devices=[]; give at least one jax device")
    bad = [d for d in devs if not hasattr(d, "platform")]
    if bad:
        raise ValueError(f"devices must be jax.Device objects (jax.devices()), got {type(bad[0]).__name__}: {bad[0]!r}")
    platforms = sorted({str(d.platform) for d in devs})
    if len(platforms) > 1:
        raise ValueError(
            f"devices of different platforms {platforms} cannot share one structure; "
            "give devices of one platform (e.g. jax.devices('gpu'))"
        )
    bad = [d for d in devs if not isinstance(d, jax.Device)]
    if bad:
        raise ValueError(f"devices must be jax.Device objects (jax.devices()), got {type(bad[0]).__name__}: {bad[0]!r}")
    if len(set(devs)) != len(devs):
        raise ValueError(f"devices lists the same device twice: {devs}")
    return devs


# --------------------------------------------------------------------------- partition
def partition(positions: Float[np.ndarray, "N 3"], num_domains: int, method: str = "bisect") -> Int[np.ndarray, "N"]:
    """Owner domain (N,) int32 of every atom.

    ``"bisect"``: recursive coordinate bisection — split the atoms along the longest
    extent of their bounding box at the atom-count quantile ⌊D/2⌋/D, recurse into both
    halves with ⌊D/2⌋ and ⌈D/2⌉ domains.  Domain sizes differ by at most one atom per
    split; domains are compact boxes (small halos).
    ``"slabs"``: D slabs of equal width (Å) along the longest extent; clustered structures
    may leave slabs empty.
    """
    pos = np.asarray(positions, np.float64)
    n = len(pos)
    if method not in METHODS:
        raise ValueError(f"partition method {method!r}; allowed: {METHODS}")
    owner = np.zeros(n, np.int32)
    if n == 0 or num_domains == 1:
        return owner
    if method == "slabs":
        axis = int(np.argmax(np.ptp(pos, axis=0)))
        lo, width = pos[:, axis].min(), np.ptp(pos[:, axis]) / num_domains
        if width == 0:
            return owner
        return np.minimum(((pos[:, axis] - lo) / width).astype(np.int64), num_domains - 1).astype(np.int32)

    def split(idx: np.ndarray, first: int, count: int) -> None:
        if count == 1 or len(idx) == 0:
            owner[idx] = first
            return
        axis = int(np.argmax(np.ptp(pos[idx], axis=0)))
        order = idx[np.argsort(pos[idx, axis], kind="stable")]
        left = count // 2
        cut = int(round(len(idx) * left / count))
        split(order[:cut], first, left)
        split(order[cut:], first + left, count - left)

    split(np.arange(n), 0, num_domains)
    return owner


# --------------------------------------------------------------------------- plan
class Capacities(NamedTuple):
    """Static per-device slot counts: owned atoms, ghosts lent by one domain to another,
    owned-centre pairs."""

    own: int
    ghost: int
    edges: int

    def fits(self, need: "Capacities") -> bool:
        return need.own <= self.own and need.ghost <= self.ghost and need.edges <= self.edges

    @staticmethod
    def bucket(need: "Capacities", headroom: float = 1.05) -> "Capacities":
        """``need`` times ``headroom``, rounded up to multiples of 64 owned slots, 16 ghost
        slots and 1024 pair slots (finer than the single-device ladders of
        :mod:`efa_calc.batching`: a domain's counts drift little, and padded slots cost as
        much as real ones)."""
        def up(k: int, step: int) -> int:
            return step * max(1, int(np.ceil(k * headroom / step)))

        return Capacities(up(need.own, 64), up(need.ghost, 16), up(need.edges, 1024))

    def union(self, other: "Capacities") -> "Capacities":
        return Capacities(*(max(a, b) for a, b in zip(self, other)))


class ShardInputs(NamedTuple):
    """Per-device arrays, stacked along a leading axis of length D (numpy, host side).

    Attributes:
      numbers: (D, C_own) int32 atomic numbers of owned atoms (0: padding).
      ghost_numbers: (D, D·C_ghost) int32 atomic numbers of ghost slots (host side only:
        the devices receive the ghosts' embeddings).
      positions: (D, C_own, 3) owned positions in Å.
      owned_mask: (D, C_own) bool.
      send_idx: (D, D, C_ghost) int32: row [e, d] lists the owned slots of e that are
        ghosts on d.
      send_mask: (D, D, C_ghost) bool.
      dst_idx, src_idx: (D, C_edge) int32 local pair indices (centre owned; neighbour
        owned or ghost: slot C_own + e·C_ghost + k).
      edge_mask: (D, C_edge) bool.
      global_index: (D, C_own) int64 global atom index of every owned slot (−1: padding).
    """

    numbers: np.ndarray
    ghost_numbers: np.ndarray
    positions: np.ndarray
    owned_mask: np.ndarray
    send_idx: np.ndarray
    send_mask: np.ndarray
    dst_idx: np.ndarray
    src_idx: np.ndarray
    edge_mask: np.ndarray
    global_index: np.ndarray


class _Layout(NamedTuple):
    slot: np.ndarray  # (N,) slot of every atom in its owner
    counts: np.ndarray  # (D,) owned atoms per domain
    edge_dom: np.ndarray  # (E,) domain of every pair (owner of the centre)
    ghost_key: np.ndarray  # unique (d, j) ghost keys d·N + j, sorted
    ghost_rank: np.ndarray  # rank of each ghost within its (d, e) group
    ghost_counts: np.ndarray  # (D, D) ghosts of d lent by e


def _layout(dst: np.ndarray, src: np.ndarray, owner: np.ndarray, d: int) -> _Layout:
    n = len(owner)
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=d)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(n, np.int64)
    slot[order] = np.arange(n) - np.repeat(starts, counts)
    edge_dom = owner[dst] if len(dst) else np.zeros(0, np.int32)
    cross = owner[src] != edge_dom
    key = np.unique(edge_dom[cross].astype(np.int64) * n + src[cross])  # sorted by (d, j)
    gd, gj = key // max(n, 1), key % max(n, 1)
    ge = owner[gj]
    # group (d, e): sort by (d, e, j) and rank within the group
    grp = gd * d + ge
    o = np.lexsort((gj, grp))
    key, grp = key[o], grp[o]
    gcounts = np.bincount(grp, minlength=d * d)
    gstarts = np.concatenate([[0], np.cumsum(gcounts)[:-1]])
    rank = np.arange(len(key)) - np.repeat(gstarts, gcounts)
    # restore sorted-by-key order for searchsorted lookups
    o2 = np.argsort(key, kind="stable")
    return _Layout(slot, counts, edge_dom, key[o2], rank[o2], gcounts.reshape(d, d))


def shard_sizes(dst: np.ndarray, src: np.ndarray, owner: np.ndarray, num_domains: int) -> Capacities:
    """The exact slot counts (not buckets) a partition needs."""
    lay = _layout(np.asarray(dst), np.asarray(src), np.asarray(owner), num_domains)
    edges = np.bincount(lay.edge_dom, minlength=num_domains) if len(dst) else np.zeros(1, int)
    return Capacities(int(lay.counts.max()), int(lay.ghost_counts.max()), int(edges.max()))


def build_shards(
    numbers: Int[np.ndarray, "N"],
    positions: Float[np.ndarray, "N 3"],
    dst: Int[np.ndarray, "E"],
    src: Int[np.ndarray, "E"],
    owner: Int[np.ndarray, "N"],
    num_domains: int,
    capacities: Capacities,
    dtype=np.float64,
) -> ShardInputs:
    """Per-device arrays for ``owner`` (pairs in the model's convention: centre ``dst``,
    neighbour ``src``, both directions listed).

    Raises:
      ValueError: if the partition does not fit ``capacities`` (never truncates).
    """
    numbers, dst, src, owner = (np.asarray(a) for a in (numbers, dst, src, owner))
    positions = np.asarray(positions)
    n, d = len(numbers), num_domains
    lay = _layout(dst, src, owner, d)
    edges_per = np.bincount(lay.edge_dom, minlength=d) if len(dst) else np.zeros(d, int)
    need = Capacities(int(lay.counts.max()), int(lay.ghost_counts.max()), int(edges_per.max()))
    if not capacities.fits(need):
        raise ValueError(f"partition needs slots {need}, more than the capacities {capacities}")
    c_own, s, c_edge = capacities

    z = np.zeros((d, c_own), np.int32)
    r = np.zeros((d, c_own, 3), dtype)
    owned_mask = np.zeros((d, c_own), bool)
    gidx = np.full((d, c_own), -1, np.int64)
    z[owner, lay.slot] = numbers
    r[owner, lay.slot] = positions
    owned_mask[owner, lay.slot] = True
    gidx[owner, lay.slot] = np.arange(n)

    # ghosts: key = d·N + j, group (d, e = owner[j]), rank k → slot C_own + e·S + k on d
    gd, gj = lay.ghost_key // max(n, 1), lay.ghost_key % max(n, 1)
    ge = owner[gj]
    ghost_z = np.zeros((d, d * s), np.int32)
    ghost_z[gd, ge * s + lay.ghost_rank] = numbers[gj]
    send_idx = np.zeros((d, d, s), np.int32)
    send_mask = np.zeros((d, d, s), bool)
    send_idx[ge, gd, lay.ghost_rank] = lay.slot[gj]
    send_mask[ge, gd, lay.ghost_rank] = True

    # pairs: grouped by the centre's domain
    dst_l = np.zeros((d, c_edge), np.int32)
    src_l = np.zeros((d, c_edge), np.int32)
    emask = np.zeros((d, c_edge), bool)
    if len(dst):
        ed = lay.edge_dom
        o = np.argsort(ed, kind="stable")
        estarts = np.concatenate([[0], np.cumsum(edges_per)[:-1]])
        col = np.empty(len(dst), np.int64)
        col[o] = np.arange(len(dst)) - np.repeat(estarts, edges_per)
        local_src = lay.slot[src].copy()
        cross = owner[src] != ed
        k = np.searchsorted(lay.ghost_key, ed[cross].astype(np.int64) * n + src[cross])
        local_src[cross] = c_own + owner[src[cross]] * s + lay.ghost_rank[k]
        dst_l[ed, col] = lay.slot[dst]
        src_l[ed, col] = local_src
        emask[ed, col] = True
    return ShardInputs(z, ghost_z, r, owned_mask, send_idx, send_mask, dst_l, src_l, emask, gidx)


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
    dtype = sh["positions"].dtype
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
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
        with jax.default_matmul_precision("highest"):
            e_i = EnergyModel(config).apply(
                params, z, pos_own, sh["dst_idx"], sh["src_idx"], sh["edge_mask"], segments, sh["owned_mask"], 1,
                c_own, axis_name=axis_name, halo_exchange=halo,
            )
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
class ShardedPotential:
    """Evaluate one structure over several devices (model energies, no energy shift).

    Args:
      config: the model (evaluation variant, e.g. ``Potential.config``).
      params: its parameters (numpy or jax arrays).
      devices: int or list of jax devices (:func:`resolve_devices`).
      dtype: ``"float32"`` or ``"float64"``.
      method: partition method (:func:`partition`).

    The partition is kept between calls (MD) while it fits the slot capacities; a
    structure that leaves them is re-partitioned (``num_repartitions``), and capacities
    grow to the need plus 25 % (a new compile, ``num_capacity_changes``) only when
    re-partitioning does not suffice.  The first plan has 5 % headroom.  Nothing is ever truncated.
    """

    def __init__(self, config: ModelConfig, params: dict, devices, dtype: str = "float32", method: str = "bisect"):
        if method not in METHODS:
            raise ValueError(f"partition method {method!r}; allowed: {METHODS}")
        self.config = config
        self.devices = resolve_devices(devices)
        self.num_domains = len(self.devices)
        self.dtype = dtype
        self.np_dtype = {"float32": np.float32, "float64": np.float64}[dtype]
        self.x64 = dtype == "float64"
        self.method = method
        self._fn, self.mesh = compiled_sharded(config, tuple(self.devices))
        with jax.enable_x64(self.x64):
            host = jax.tree_util.tree_map(lambda a: np.asarray(a, self.np_dtype), params)
            self._params = jax.tree_util.tree_map(lambda a: _put(self.mesh, P(), a), host)
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
        """Total energy (eV), forces (N, 3) in eV/Å and atomic energies (N,) in eV of the
        model for one structure; ``dst, src`` its pairs (model convention)."""
        numbers = np.asarray(numbers)
        n = len(numbers)
        inputs = self.plan(numbers, np.asarray(positions, np.float64), np.asarray(dst), np.asarray(src), owner)
        self.last_inputs = inputs
        with jax.enable_x64(self.x64):
            shards = {k: _put(self.mesh, P(AXIS), getattr(inputs, k)) for k in _FIELDS}
            energy, e_own, f_own = self._fn(self._params, shards)
            energy, e_own, f_own = _fetch(energy), _fetch(e_own), _fetch(f_own)
        mask = inputs.owned_mask
        idx = inputs.global_index[mask]
        forces = np.zeros((n, 3), f_own.dtype)
        e_i = np.zeros(n, e_own.dtype)
        forces[idx] = f_own[mask]
        e_i[idx] = e_own[mask]
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            raise FloatingPointError("sharded model returned non-finite energies or forces")
        return float(energy), forces, e_i

    def lower(self, inputs: ShardInputs):
        """``jax.jit(...).lower`` of the device program for these inputs (HLO, memory)."""
        with jax.enable_x64(self.x64):
            shards = {k: _put(self.mesh, P(AXIS), getattr(inputs, k)) for k in _FIELDS}
            return self._fn.lower(self._params, shards)
