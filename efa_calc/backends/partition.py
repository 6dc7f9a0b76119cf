"""Domain decomposition of one structure for sharded evaluation (host side, numpy).

:func:`partition` assigns every atom an owner domain, :func:`build_shards` lays out the
per-device arrays (owned atoms, ghost slots, owned-centre pairs, the halo send lists) in
static :class:`Capacities`; :func:`resolve_devices` validates a device list.  The device
program that consumes them is :mod:`efa_calc.backends.sharded`, whose docstring gives the
scheme.  Units: positions in Å.
"""


from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jaxtyping import Float, Int

__all__ = ["Capacities", "METHODS", "ShardInputs", "build_shards", "partition", "resolve_devices", "shard_sizes"]

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
        :mod:`efa_calc.graphs.padding`: a domain's counts drift little, and padded slots cost as
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
