"""Molecular dynamics inside XLA on jax-md's integrators: many steps and many replicas per call.

A :class:`JaxMD` holds one molecule (fixed atomic numbers), a model and an integrator, and
advances R independent replicas of it by a chunk of steps in **one** jitted call
(``lax.scan`` over steps, ``vmap`` over replicas)::

    md = JaxMD(checkpoint, numbers, masses, ensemble="nve", timestep_fs=0.5, dtype="float64")
    state = md.init(positions, momenta)             # (R, N, 3) Å and amu·Å/ase_time
    out = md.run_chunk(state, 100)                  # 100 steps, one XLA call
    if out.overflow: md.grow(); redo from ``state`` # never keeps a truncated pair list

The potential is a pure function of positions: the model's pair list is built on the
device at every force call by a dense masked search (all N² distances, the pairs within
the cutoff compacted into ``capacity`` slots).  For the small molecules this engine is for
(C9H4: 13 atoms, 80 pairs) the N² search is ~10³ flops against ~3·10⁷ for the model, so it
is rebuilt at every step and needs no skin: a skin would only add pair slots, and every
pair slot costs the model a full tensor product.  (Measured as standalone jitted calls on
this 2-core CPU, the dense build and jax-md's ``partition.neighbor_list(...).update`` both
take 50–70 µs, all of it dispatch: inside the chunk either is < 1 % of a step.)  Under
``vmap`` the force function evaluates all replicas as one flat batch of R graphs, the
model's native layout (a custom batching rule, :meth:`JaxMD.force_and_energy`).  A step whose pair count exceeds the capacity
sets the overflow flag; the chunk must then be discarded and redone from its starting
state with a larger capacity (:meth:`JaxMD.grow`, one new compilation).

Units (ASE's throughout, so states convert 1:1 to ``ase.Atoms``): positions Å, energies
eV, forces eV/Å, masses amu, momenta amu·Å/ase_time, time in ASE time units (the
timestep is given in fs and converted with ``ase.units.fs``), kT in eV, temperatures K.
Energies returned include the checkpoint's energy shift, exactly as
:class:`~efa_calc.EFACalculator` reports them.

Integrators: ``simulate.nve`` (velocity Verlet), ``simulate.nvt_langevin`` (BAOAB) and
``simulate.nvt_nose_hoover`` (Nosé–Hoover chain, length 3 as ASE's default) of jax-md.
jax-md casts the timestep to float32 (``util.f32``), a relative change of the timestep of
at most 6e-8 in float64 runs.

Every step is also checked on the device, per replica (:data:`FLAGS`): temperature and
force guards, the model's ``max_length``, atoms closer than 0.3 Å and, given an
:class:`~efa_calc.envelope.Envelope`, the training envelope (pair distances, neighbour
counts, energy per atom).  A step raising a *stopping* flag is not kept: the chunk freezes
every replica at the last good step and reports the offending step (``ChunkResult.stop``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from efa_calc.batching import edge_bucket
from efa_calc.checkpoint import Checkpoint
from efa_calc.envelope import DISTANCE_MARGIN, PHYSICAL_MIN_DISTANCE_A
from efa_calc.nn.energy_model import Batch, atomic_energies

__all__ = ["JaxMD", "ChunkResult", "FLAGS", "THERMOSTATS", "dense_pairs", "flag_names", "clear_compiled"]

#: Thermostats of the jax engine (jax-md's ``temp_csvr`` Bussi thermostat is not offered:
#: it draws its two noise terms from the same PRNG key).
THERMOSTATS = ("langevin", "nose-hoover")

#: Per-replica check bits raised by a step.
FLAGS = {
    "temperature": 1,      # T not finite or above the temperature guard
    "force": 2,            # a force component above the force guard
    "max_length": 4,       # largest interatomic distance above the model's max_length
    "too_close": 8,        # two atoms closer than PHYSICAL_MIN_DISTANCE_A
    "envelope": 16,        # a pair distance / neighbour count outside the training envelope
    "envelope_energy": 32, # energy per atom outside the training envelope
}


def flag_names(bits: int) -> list[str]:
    """The names of the :data:`FLAGS` set in ``bits``."""
    return [k for k, v in FLAGS.items() if int(bits) & v]


def dense_pairs(positions, cutoff: float, capacity: int):
    """All ordered pairs (i, j), i ≠ j, with |r_j − r_i| < ``cutoff`` (Å) in ``capacity`` slots.

    Returns ``(dst, src, edge_mask, count)``: slot k holds pair (dst[k], src[k]) when
    ``edge_mask[k]``; ``count`` is the true number of pairs (``count > capacity`` means
    the list is truncated and must not be used).  Same order as
    :func:`efa_calc.neighbors.neighbor_pairs` (row-major).
    """
    n = positions.shape[0]
    d = positions[None, :, :] - positions[:, None, :]
    d2 = jnp.sum(d * d, axis=-1)
    mask = (d2 < cutoff * cutoff) & ~jnp.eye(n, dtype=bool)
    count = jnp.sum(mask)
    dst, src = jnp.nonzero(mask, size=capacity, fill_value=0)
    edge_mask = jnp.arange(capacity) < count
    return dst.astype(jnp.int32), src.astype(jnp.int32), edge_mask, count


class ChunkResult(NamedTuple):
    """What one chunk returns (numpy arrays, host side).

    Attributes:
      state: the jax-md state after ``steps_done`` steps (on the device).
      steps_done: steps kept (< requested when a stopping check fired).
      overflow: the pair list overflowed at some step: discard the whole chunk.
      records: per record (every ``interval`` steps) ``positions`` (K, R, N, 3) Å,
        ``momenta`` (K, R, N, 3) amu·Å/ase_time, ``forces`` (K, R, N, 3) eV/Å,
        ``epot`` / ``ekin`` / ``econs`` (K, R) eV (``epot`` and ``econs`` with the
        checkpoint's energy shift); only the first ``steps_done // interval`` are valid.
      seen: (R,) OR of the check bits of every kept step (non-stopping ones included).
      stop: ``None``, or a dict of the rejected step: ``step`` (1-based within the chunk),
        ``flags`` (R,), ``temperature_K`` (R,), ``fmax_eV_A`` (R,), ``extent_A`` (R,),
        ``min_distance_A`` (R,), ``positions`` (R, N, 3) Å, ``epot_eV`` (R,).
      epot: (R,) potential energies (eV, with shift) of ``state``.
    """

    state: Any
    steps_done: int
    overflow: bool
    records: dict
    seen: np.ndarray
    stop: dict | None
    epot: np.ndarray


#: static key of a JaxMD -> {("chunk"|"force", ...): jitted function}
_COMPILED: dict = {}


def clear_compiled() -> None:
    """Forget every compiled chunk and force function (frees their executables)."""
    _COMPILED.clear()


@dataclasses.dataclass
class _Static:
    """Per-molecule arrays used by the on-device checks."""

    pair_threshold: np.ndarray  # (N, N) Å: a pair closer than this (within the cutoff) leaves the envelope
    neighbor_bound: np.ndarray  # (N,) largest allowed neighbour count
    energy_bounds: tuple  # (lo, hi) eV/atom of the model energy (without shift)


class JaxMD:
    """R replicas of one molecule integrated by jax-md inside XLA (see the module docstring).

    Args:
      checkpoint: the model (its energy shift is added to reported energies).
      numbers: atomic numbers (N,).
      masses: masses (N,) in amu.
      ensemble: ``"nve"`` or ``"nvt"``.
      thermostat: for NVT, ``"langevin"`` or ``"nose-hoover"``.
      timestep_fs: timestep in fs.
      temperature_K: NVT target temperature in K.
      friction_per_fs: Langevin friction in 1/fs (ASE engine default 0.01).
      tau_fs: Nosé–Hoover time constant in fs (ASE engine default 100).
      dtype: ``"float32"`` or ``"float64"``.
      capacity: pair slots (default: the pairs of the first :meth:`init` structure, rounded
        up to the calculator's pair bucket with 25 % headroom).
      interval: steps between records (frames/log rows); chunk lengths are multiples of it.
      envelope: training envelope checked on the device (``None``: not checked).
      max_length: the model's max_length in Å (``inf``: not checked).
      chunk_name: name of the jitted chunk function (shows in compile logs).
      message_passing: ``"native"``, ``"cuequivariance"`` or ``None`` (the default device's
        default; :func:`efa_calc.nn.tensor.resolve_message_passing`).
    """

    def __init__(self, checkpoint: Checkpoint, numbers, masses, ensemble: str = "nve", thermostat: str = "langevin",
                 timestep_fs: float = 0.5, temperature_K: float = 300.0, friction_per_fs: float = 0.01,
                 tau_fs: float = 100.0, dtype: str = "float32", capacity: int | None = None, interval: int = 1,
                 envelope=None, max_length: float = math.inf, message_passing: str | None = None):
        if ensemble not in ("nve", "nvt"):
            raise ValueError(f"ensemble={ensemble!r}; allowed: 'nve' or 'nvt'")
        if ensemble == "nvt" and thermostat not in THERMOSTATS:
            raise ValueError(f"the jax engine offers the thermostats {', '.join(THERMOSTATS)}, not {thermostat!r} "
                             "(use --engine ase for it)")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype={dtype!r}; allowed: 'float32' or 'float64'")
        self.checkpoint = checkpoint
        from efa_calc.nn.tensor import resolve_message_passing  # (issue 24)

        mp = resolve_message_passing(message_passing, jax.default_backend())
        self.config = checkpoint.config.for_evaluation(message_passing=mp)
        self.numbers = np.asarray(numbers, np.int32)
        self.masses = np.asarray(masses, np.float64)
        self.n = len(self.numbers)
        self.ensemble, self.thermostat = ensemble, thermostat
        self.dt = float(timestep_fs) * units.fs  # ASE time units
        self.timestep_fs = float(timestep_fs)
        self.kT = units.kB * float(temperature_K)  # eV
        self.gamma = float(friction_per_fs) / units.fs  # 1/ASE time
        self.tau = float(tau_fs) * units.fs
        self.dtype = dtype
        self.x64 = dtype == "float64"
        self.np_dtype = np.float64 if self.x64 else np.float32
        self.cutoff = float(self.config.cutoff)
        self.capacity = capacity
        self.interval = int(interval)
        self.max_length = float(max_length)
        self.shift = float(np.sum(checkpoint.energy_shift.atomic(self.numbers)))  # eV
        self.static = self._static(envelope)
        self.check_envelope = envelope is not None
        self.growths = 0
        with jax.enable_x64(self.x64):
            self.params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, self.np_dtype), checkpoint.params)
        # compiled functions are shared process-wide by every JaxMD of the same molecule,
        # model architecture and integrator (parameters are arguments, not constants)
        self._chunk_fns = _COMPILED.setdefault(self._static_key(), {})

    def _static_key(self) -> tuple:
        st = self.static
        return (self.config, self.numbers.tobytes(), self.masses.tobytes(), self.ensemble, self.thermostat, self.dt,
                self.kT, self.gamma, self.tau, self.dtype, self.max_length, self.check_envelope,
                st.pair_threshold.tobytes(), st.neighbor_bound.tobytes(), st.energy_bounds)

    # ------------------------------------------------------------------ model
    def _static(self, envelope) -> _Static:
        n, z = self.n, self.numbers
        big = 1e6
        thr = np.zeros((n, n))
        bound = np.full(n, big)
        lo, hi = -big, big
        if envelope is not None:
            from efa_calc.envelope import _pair_name, _symbol

            for i in range(n):
                for j in range(n):
                    if i == j:
                        continue
                    ref = envelope.min_distance.get(_pair_name(z[i], z[j]))
                    # a pair never seen within the cutoff is flagged at any distance within it
                    thr[i, j] = DISTANCE_MARGIN * ref if ref is not None else big
            for i in range(n):
                s = _symbol(z[i])
                if s in envelope.max_neighbors:
                    bound[i] = envelope.neighbor_bound(s)
            lo, hi = envelope.energy_bounds()
        return _Static(thr, bound, (float(lo), float(hi)))

    def model_energy(self, params, positions, capacity: int):
        """Model energy (eV, without the shift) of one structure (N, 3) Å; pairs built on the device."""
        return self.model_energies(params, positions[None], capacity)[0]

    def model_energies(self, params, positions, capacity: int):
        """Model energies (R,) in eV (without the shift) of R structures (R, N, 3) Å, evaluated
        as one flat batch of R graphs (the model's native layout; each graph has its own
        ``capacity`` pair slots built on the device)."""
        r, n = positions.shape[0], self.n
        dst, src, edge_mask, _ = jax.vmap(lambda x: dense_pairs(x, self.cutoff, capacity))(positions)
        offset = (jnp.arange(r, dtype=jnp.int32) * n)[:, None]
        batch = Batch(jnp.tile(jnp.asarray(self.numbers), r), positions.reshape(r * n, 3),
                      (dst + offset).reshape(-1), (src + offset).reshape(-1), edge_mask.reshape(-1),
                      jnp.repeat(jnp.arange(r, dtype=jnp.int32), n), jnp.ones(r * n, bool), jnp.ones(r, bool))
        e_i = atomic_energies(params, self.config, batch, n)
        return jnp.sum(e_i.reshape(r, n), axis=1)

    def force_and_energy(self, capacity: int):
        """The jitted ``(params, positions (N, 3) Å) -> (forces eV/Å, model energy eV)`` at
        ``capacity`` pair slots (one trace per capacity, reused by every chunk).

        Under ``vmap`` (replicas) it does not batch the model op by op: its batching rule
        evaluates all replicas as one flat batch of graphs (:meth:`model_energies`), which
        measured 10–20 % faster than the vmapped model on CPU."""
        key = ("force", capacity)
        if key not in self._chunk_fns:
            from jax.custom_batching import custom_vmap

            def batched(params, positions):  # (R, N, 3) -> (R, N, 3) forces, (R,) energies
                def total(x):
                    e = self.model_energies(params, x, capacity)
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
                    raise NotImplementedError("force_and_energy: parameters cannot be batched")
                if not in_batched[1]:
                    positions = jnp.broadcast_to(positions, (axis_size,) + positions.shape)
                return batched(params, positions), (True, True)

            self._chunk_fns[key] = jax.jit(md_force)
        return self._chunk_fns[key]

    def _simulator(self, params, capacity: int, tap: dict):
        """jax-md's ``apply`` (one step of one replica).  Its force function leaves the energy
        of its last call in ``tap["energy"]`` (read it in the same trace, right after
        ``apply``): the step's potential energy comes with its forces, not from a second
        forward pass."""
        from jax_md import simulate, space

        _, shift_fn = space.free()
        fe = self.force_and_energy(capacity)

        def force_fn(positions, **unused):
            f, e = fe(params, positions)
            tap["energy"] = e
            return f  # jax-md's canonicalize_force sees an (N, 3) output: a force

        if self.ensemble == "nve":
            _, apply = simulate.nve(force_fn, shift_fn, self.dt)
        elif self.thermostat == "langevin":
            _, apply = simulate.nvt_langevin(force_fn, shift_fn, self.dt, self.kT, gamma=self.gamma)
        else:
            _, apply = simulate.nvt_nose_hoover(force_fn, shift_fn, self.dt, self.kT, chain_length=3, tau=self.tau)
        return getattr(apply, "__wrapped__", apply)  # jax-md jits it: trace it inline, so the tap is ours

    @property
    def masses_j(self):
        return jnp.asarray(self.masses, self.np_dtype)

    # ------------------------------------------------------------------ state
    def pair_count(self, positions) -> int:
        """Largest number of pairs within the cutoff over replicas (host, numpy)."""
        pos = np.asarray(positions, np.float64).reshape(-1, self.n, 3)
        d2 = np.sum((pos[:, :, None] - pos[:, None]) ** 2, axis=-1)
        return int(max(np.sum(d2 < self.cutoff ** 2, axis=(1, 2)) - self.n)) if len(pos) else 0

    def init(self, positions, momenta, seeds=None, thermostat_state: dict | None = None):
        """The jax-md state of R replicas.

        Args:
          positions: (R, N, 3) Å.
          momenta: (R, N, 3) amu·Å/ase_time.
          seeds: (R,) ints for the Langevin noise (default 0…R−1), or (R, 2) uint32 PRNG keys.
          thermostat_state: saved arrays from :meth:`thermostat_arrays` (resume).
        """
        # copies: jax may alias host memory on the CPU, and callers (ASE) move atoms in place
        positions = np.array(positions, np.float64, copy=True)
        momenta = np.array(momenta, np.float64, copy=True)
        r = positions.shape[0]
        count = self.pair_count(positions)
        if self.capacity is None:
            self.capacity = edge_bucket(count, headroom=1.25)
        if self.capacity < count:  # the starting forces are never computed with a truncated list
            self.capacity = edge_bucket(count, headroom=1.25)
        seeds = np.arange(r) if seeds is None else np.asarray(seeds)
        from jax_md import simulate

        with jax.enable_x64(self.x64):
            dt = self.np_dtype
            pos = jnp.asarray(positions, dt)
            mom = jnp.asarray(momenta, dt)
            force = jnp.zeros_like(pos)  # computed at the start of every chunk
            mass = jnp.broadcast_to(jnp.asarray(self.masses, dt)[:, None], (r, self.n, 1))
            if self.ensemble == "nve":
                state = simulate.NVEState(pos, mom, force, mass)
            elif self.thermostat == "langevin":
                if seeds.ndim == 2:
                    keys = jnp.asarray(seeds, jnp.uint32)
                else:
                    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
                state = simulate.NVTLangevinState(pos, mom, force, mass, keys)
            else:
                chain = simulate.nose_hoover_chain(self.dt, 3, 2, 3, self.tau)
                ke = jnp.sum(mom ** 2 / (2 * mass), axis=(1, 2))
                chains = jax.vmap(lambda k: chain.initialize(3 * self.n, k, self.kT))(ke)
                state = simulate.NVTNoseHooverState(pos, mom, force, mass, chains)
            if thermostat_state:
                state = self._restore(state, thermostat_state)
        return state

    def thermostat_arrays(self, state) -> dict:
        """Thermostat state to save (numpy): Langevin ``rng`` (R, 2) uint32, Nosé–Hoover
        ``chain_position``/``chain_momentum``/``chain_mass``/``chain_kinetic_energy``
        (R, 3) / (R,) in ASE units."""
        if self.ensemble == "nve":
            return {}
        if self.thermostat == "langevin":
            return {"rng": np.asarray(state.rng)}
        c = state.chain
        return {"chain_position": np.asarray(c.position), "chain_momentum": np.asarray(c.momentum),
                "chain_mass": np.asarray(c.mass), "chain_kinetic_energy": np.asarray(c.kinetic_energy)}

    def _restore(self, state, saved: dict):
        if self.ensemble == "nvt" and self.thermostat == "langevin":
            return state.set(rng=jnp.asarray(saved["rng"], jnp.uint32))
        if self.ensemble == "nvt":
            c = state.chain.set(position=jnp.asarray(saved["chain_position"], self.np_dtype),
                                momentum=jnp.asarray(saved["chain_momentum"], self.np_dtype),
                                mass=jnp.asarray(saved["chain_mass"], self.np_dtype),
                                kinetic_energy=jnp.asarray(saved["chain_kinetic_energy"], self.np_dtype))
            return state.set(chain=c)
        return state

    def grow(self) -> int:
        """Enlarge the pair capacity after an overflow (one more compilation); returns it."""
        self.capacity = edge_bucket(self.capacity + 1, headroom=1.25)
        self.growths += 1
        return self.capacity

    # ------------------------------------------------------------------ chunks
    def chunk_fn(self, length: int, interval: int | None = None):
        """The jitted chunk of ``length`` steps (a multiple of ``interval``, default
        ``self.interval``) at the current capacity."""
        interval = self.interval if interval is None else int(interval)
        if length % interval:
            raise ValueError(f"chunk length {length} is not a multiple of the record interval {interval}")
        key = ("chunk", length, interval, self.capacity)
        if key not in self._chunk_fns:
            self._chunk_fns[key] = jax.jit(self._make_chunk(length, self.capacity, interval))
        return self._chunk_fns[key]

    def _make_chunk(self, length: int, capacity: int, interval: int):
        n, cutoff = self.n, self.cutoff
        records = length // interval
        static = self.static
        ensemble, thermostat, kT = self.ensemble, self.thermostat, self.kT
        check_env = self.check_envelope
        max_length = self.max_length

        def observe(params, state, limits, epot):
            """Per-replica observables and check bits of a state (one replica)."""
            from jax_md import quantity, simulate

            pos = state.position
            dtype = pos.dtype
            ekin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
            temp = 2.0 * ekin / (3 * n * units.kB)
            if ensemble == "nvt" and thermostat == "nose-hoover":
                econs = simulate.nvt_nose_hoover_invariant(lambda R, **kw: epot, state, kT)
            else:
                econs = epot + ekin
            d = pos[None, :, :] - pos[:, None, :]
            dist = jnp.sqrt(jnp.sum(d * d, axis=-1) + jnp.eye(n, dtype=dtype))  # 1 on the diagonal
            off = ~jnp.eye(n, dtype=bool)
            count = jnp.sum((dist < cutoff) & off)
            extent = jnp.max(jnp.where(off, dist, 0.0))
            dmin = jnp.min(jnp.where(off, dist, jnp.inf))
            fmax = jnp.max(jnp.abs(state.force))
            t_limit, f_limit = limits[0], limits[1]
            bits = jnp.where(~jnp.isfinite(temp) | (temp > t_limit), FLAGS["temperature"], 0)
            bits |= jnp.where(~(fmax <= f_limit), FLAGS["force"], 0)
            bits |= jnp.where(extent > max_length, FLAGS["max_length"], 0)
            bits |= jnp.where(dmin < PHYSICAL_MIN_DISTANCE_A, FLAGS["too_close"], 0)
            if check_env:
                within = (dist <= cutoff) & off
                close = jnp.any(within & (dist < jnp.asarray(static.pair_threshold, dtype)))
                crowded = jnp.any(jnp.sum(within, axis=1) > jnp.asarray(static.neighbor_bound))
                bits |= jnp.where(close | crowded, FLAGS["envelope"], 0)
                e_atom = epot / n
                lo, hi = static.energy_bounds
                bits |= jnp.where(~((e_atom >= lo) & (e_atom <= hi)), FLAGS["envelope_energy"], 0)
            obs = {"epot": epot, "ekin": ekin, "econs": econs, "temperature_K": temp, "fmax_eV_A": fmax,
                   "extent_A": extent, "min_distance_A": dmin}
            return obs, bits.astype(jnp.int32), count

        def md_chunk(params, state, n_steps, limits, stop_mask):
            tap: dict = {}
            apply = self._simulator(params, capacity, tap)
            r = state.position.shape[0]
            # forces (and energies) of the starting state: states carry none between chunks
            force, epot0 = jax.vmap(self.force_and_energy(capacity), in_axes=(None, 0))(params, state.position)
            state = state.set(force=force)

            def replica(state):
                new = apply(state)
                return new, tap.pop("energy")

            def one(state):  # one step of every replica
                new, epot = jax.vmap(replica)(state)
                obs, bits, count = jax.vmap(observe, in_axes=(None, 0, None, 0))(params, new, limits, epot)
                return new, obs, bits, count

            def step(carry, _):
                state, epot, k, stopped, overflow, seen, stop = carry
                active = (k < n_steps) & ~stopped & ~overflow

                def do(args):
                    state, epot, k, stopped, overflow, seen, stop = args
                    new, obs, bits, count = one(state)
                    over = jnp.any(count > capacity)
                    bad = jnp.any((bits & stop_mask) != 0)
                    keep = ~bad & ~over
                    state = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, state)
                    epot = jnp.where(keep, obs["epot"], epot)
                    seen = jnp.where(keep, seen | bits, seen)
                    info = {"step": k + 1, "flags": bits, "temperature_K": obs["temperature_K"],
                            "fmax_eV_A": obs["fmax_eV_A"], "extent_A": obs["extent_A"],
                            "min_distance_A": obs["min_distance_A"], "positions": new.position, "epot_eV": obs["epot"]}
                    stop = jax.tree_util.tree_map(lambda a, b: jnp.where(bad & ~over, a, b), info, stop)
                    return state, epot, k + keep.astype(k.dtype), bad & ~over, over, seen, stop

                return jax.lax.cond(active, do, lambda a: a, carry), None

            def record(carry, _):
                carry, _ = jax.lax.scan(step, carry, None, length=interval)
                state, epot = carry[0], carry[1]
                from jax_md import quantity, simulate

                ekin = jax.vmap(lambda p, m: quantity.kinetic_energy(momentum=p, mass=m))(state.momentum, state.mass)
                if ensemble == "nvt" and thermostat == "nose-hoover":
                    econs = jax.vmap(lambda s, e: simulate.nvt_nose_hoover_invariant(lambda R, **kw: e, s, kT))(
                        state, epot)
                else:
                    econs = epot + ekin
                out = {"positions": state.position, "momenta": state.momentum, "forces": state.force,
                       "epot": epot, "ekin": ekin, "econs": econs}
                return carry, out

            dtype = state.position.dtype
            stop0 = {"step": jnp.int32(0), "flags": jnp.zeros(r, jnp.int32), "temperature_K": jnp.zeros(r, dtype),
                     "fmax_eV_A": jnp.zeros(r, dtype), "extent_A": jnp.zeros(r, dtype),
                     "min_distance_A": jnp.zeros(r, dtype), "positions": jnp.zeros_like(state.position),
                     "epot_eV": jnp.zeros(r, dtype)}
            carry = (state, epot0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False), jnp.zeros(r, jnp.int32), stop0)
            carry, recs = jax.lax.scan(record, carry, None, length=records)
            state, epot, k, stopped, overflow, seen, stop = carry
            return state, epot, k, stopped, overflow, seen, stop, recs

        md_chunk.__name__ = f"md_chunk_{self.ensemble}"
        return md_chunk

    def energies(self, state) -> np.ndarray:
        """Potential energies (R,) in eV (with the shift) of a state (a separate XLA call)."""
        with jax.enable_x64(self.x64):
            fe = jax.vmap(self.force_and_energy(self.capacity), in_axes=(None, 0))
            _, e = fe(self.params, state.position)
        return np.asarray(e, np.float64) + self.shift

    def conserved_energies(self, state, epot) -> np.ndarray:
        """(R,) conserved energy in eV of a state whose potential energies (eV, with shift)
        are ``epot``: E_pot + E_kin, plus the chain's energy for Nosé–Hoover."""
        from jax_md import quantity, simulate

        with jax.enable_x64(self.x64):
            e = jnp.asarray(np.asarray(epot) - self.shift, self.np_dtype)
            if self.ensemble == "nvt" and self.thermostat == "nose-hoover":
                kT = self.kT
                out = jax.vmap(lambda s, x: simulate.nvt_nose_hoover_invariant(lambda R, **kw: x, s, kT))(state, e)
            else:
                out = e + jax.vmap(lambda p, m: quantity.kinetic_energy(momentum=p, mass=m))(state.momentum,
                                                                                            state.mass)
        return np.asarray(out, np.float64) + self.shift

    def run_chunk(self, state, length: int, n_steps: int | None = None, t_limit: float = math.inf,
                  f_limit: float = math.inf, stop_flags: int | None = None,
                  interval: int | None = None) -> ChunkResult:
        """Advance ``state`` by up to ``n_steps`` (default ``length``) steps in one XLA call of
        the ``length``-step chunk (shorter runs reuse the same compiled chunk).

        Args:
          t_limit: temperature guard in K; f_limit: force guard in eV/Å.
          stop_flags: the :data:`FLAGS` bits that stop the run (default: all).
          interval: steps per record (default ``self.interval``).
        """
        n_steps = length if n_steps is None else int(n_steps)
        stop_flags = sum(FLAGS.values()) if stop_flags is None else int(stop_flags)
        with jax.enable_x64(self.x64):
            fn = self.chunk_fn(length, interval)
            limits = jnp.asarray([t_limit, f_limit], self.np_dtype)
            with warnings.catch_warnings():  # jax-md asks for float64 sums, which float32 runs cannot have
                warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
                state2, epot2, k, stopped, overflow, seen, stop, recs = fn(self.params, state, jnp.int32(n_steps),
                                                                           limits, jnp.int32(stop_flags))
            k, stopped, overflow = int(k), bool(stopped), bool(overflow)
            recs = {key: np.asarray(v) for key, v in recs.items()}
            for key in ("epot", "econs"):
                recs[key] = recs[key].astype(np.float64) + self.shift
            stop_info = None
            if stopped:
                stop_info = {key: np.asarray(v) for key, v in stop.items()}
                stop_info["step"] = int(stop_info["step"])
                stop_info["epot_eV"] = stop_info["epot_eV"].astype(np.float64) + self.shift
        epot2 = np.asarray(epot2, np.float64) + self.shift
        return ChunkResult(state2, k, overflow, recs, np.asarray(seen), stop_info, epot2)

    def cost_analysis(self, state, length: int) -> dict:
        """XLA's cost analysis (``flops``, ``bytes accessed``) of the compiled chunk.

        XLA counts a loop body once: the numbers are those of one step of every replica
        (plus the chunk's one starting force call)."""
        with jax.enable_x64(self.x64):
            lowered = self.chunk_fn(length).lower(self.params, state, jnp.int32(length),
                                                  jnp.asarray([1e9, 1e9], self.np_dtype), jnp.int32(0))
            cost = lowered.compile().cost_analysis()
        if isinstance(cost, list):
            cost = cost[0]
        return {k: float(v) for k, v in cost.items() if k in ("flops", "bytes accessed", "transcendentals")}
