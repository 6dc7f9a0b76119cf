"""Molecular dynamics inside XLA on jax-md's integrators: many steps and many replicas per call.

A :class:`JaxMD` holds one molecule (fixed atomic numbers), a model and an integrator, and
advances R independent replicas of it by a chunk of steps in **one** jitted call
(``lax.scan`` over steps, ``vmap`` over replicas)::

    md = JaxMD(checkpoint, numbers, masses, ensemble="nve", timestep_fs=0.5, dtype="float64")
    state = md.init(positions, momenta)             # (R, N, 3) Å and amu·Å/ase_time
    out = md.run_chunk(state, 100)                  # 100 steps, one XLA call
    if out.overflow: md.grow(); redo from ``state`` # never keeps a truncated pair list

Modules: :mod:`~efa_calc.md_jax.pairs` (the pair list, rebuilt on the device at every
force call), :mod:`~efa_calc.md_jax.model` (the model energies and the batched force
function), :mod:`~efa_calc.md_jax.chunk` (the chunk: steps, checks, records) and
:mod:`~efa_calc.md_jax.state` (jax-md states and the thermostat arrays of a resume).

Units (ASE's throughout, so states convert 1:1 to ``ase.Atoms``): positions Å, energies
eV, forces eV/Å, masses amu, momenta amu·Å/ase_time, time in ASE time units (the
timestep is given in fs and converted with ``ase.units.fs``), kT in eV, temperatures K.
Energies returned include the checkpoint's energy shift, exactly as
:class:`~efa_calc.EFACalculator` reports them.

Integrators: ``simulate.nve`` (velocity Verlet), ``simulate.nvt_langevin`` (BAOAB) and
``simulate.nvt_nose_hoover`` (Nosé–Hoover chain, length 3 as ASE's default) of jax-md.
jax-md casts the timestep to float32 (``util.f32``), a relative change of the timestep of
at most 6e-8 in float64 runs.

Checks: given ``guards`` (objects with a ``name`` in :data:`FLAGS`, the ``inputs`` they read
and a ``predicate(obs, limits, xp)``; the MD protocols' list is
:data:`md_protocols.engines.guards.GUARDS`), every step is checked on the device, per
replica; a step raising a *stopping* bit is not kept (``ChunkResult.stop``).  The training
envelope (pair distances, neighbour counts, energy per atom) is observed when an
:class:`~efa_calc.envelope.Envelope` is given.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from efa_calc.graphs.padding import edge_bucket
from efa_calc.checkpoint import Checkpoint
from efa_calc.envelope import DISTANCE_MARGIN
from efa_calc.nn.tensor import resolve_message_passing
from efa_calc.md_jax.chunk import FLAGS, ChunkResult, make_chunk
from efa_calc.md_jax.model import make_force_fn
from efa_calc.md_jax.pairs import dense_pairs, pair_count
from efa_calc.md_jax.state import init_state, restore_thermostat, thermostat_arrays

__all__ = ["JaxMD", "ChunkResult", "FLAGS", "THERMOSTATS", "dense_pairs", "clear_compiled"]

#: Thermostats of the jax engine (jax-md's ``temp_csvr`` Bussi thermostat is not offered:
#: it draws its two noise terms from the same PRNG key).
THERMOSTATS = ("langevin", "nose-hoover")

#: static key of a JaxMD -> {("chunk"|"force", ...): jitted function}
_COMPILED: dict = {}


def clear_compiled() -> None:
    """Forget every compiled chunk and force function (frees their executables)."""
    _COMPILED.clear()


@dataclasses.dataclass
class _Static:
    """Per-molecule arrays used by the on-device envelope checks."""

    pair_threshold: np.ndarray  # (N, N) Å: a pair closer than this (within the cutoff) leaves the envelope
    neighbor_bound: np.ndarray  # (N,) largest allowed neighbour count
    energy_bounds: tuple  # (lo, hi) eV/atom of the model energy (without shift)


def _envelope_arrays(envelope, numbers) -> _Static:
    n, z = len(numbers), numbers
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
      envelope: training envelope observed on the device (``None``: not observed).
      max_length: the model's max_length in Å (``inf``: not checked).
      guards: the checks evaluated at every step (see the module docstring; default none).
      message_passing: ``"native"``, ``"cuequivariance"`` or ``None`` (the default device's
        default; :func:`efa_calc.nn.tensor.resolve_message_passing`).
    """

    def __init__(self, checkpoint: Checkpoint, numbers, masses, ensemble: str = "nve", thermostat: str = "langevin",
                 timestep_fs: float = 0.5, temperature_K: float = 300.0, friction_per_fs: float = 0.01,
                 tau_fs: float = 100.0, dtype: str = "float32", capacity: int | None = None, interval: int = 1,
                 envelope=None, max_length: float = math.inf, guards=(), message_passing: str | None = None):
        if ensemble not in ("nve", "nvt"):
            raise ValueError(f"ensemble={ensemble!r}; allowed: 'nve' or 'nvt'")
        if ensemble == "nvt" and thermostat not in THERMOSTATS:
            raise ValueError(f"the jax engine offers the thermostats {', '.join(THERMOSTATS)}, not {thermostat!r} "
                             "(use --engine ase for it)")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype={dtype!r}; allowed: 'float32' or 'float64'")
        unknown = [g.name for g in guards if g.name not in FLAGS]
        if unknown:
            raise ValueError(f"guards={unknown}: unknown to the jax engine; allowed: {', '.join(FLAGS)}")
        self.checkpoint = checkpoint
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
        self.guards = tuple(guards)
        self.shift = float(np.sum(checkpoint.energy_shift.atomic(self.numbers)))  # eV
        self.static = _envelope_arrays(envelope, self.numbers)
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
                self.kT, self.gamma, self.tau, self.dtype, self.max_length, self.check_envelope, self.guards,
                st.pair_threshold.tobytes(), st.neighbor_bound.tobytes(), st.energy_bounds)

    # ------------------------------------------------------------------ model
    def force_and_energy(self, capacity: int):
        """The jitted ``(params, positions (N, 3) Å) -> (forces eV/Å, model energy eV)`` at
        ``capacity`` pair slots (:func:`~efa_calc.md_jax.model.make_force_fn`; one trace
        per capacity, reused by every chunk)."""
        key = ("force", capacity)
        if key not in self._chunk_fns:
            self._chunk_fns[key] = make_force_fn(self.config, self.numbers, self.cutoff, capacity)
        return self._chunk_fns[key]

    def simulator(self, params, capacity: int, tap: dict):
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

    # ------------------------------------------------------------------ state
    def pair_count(self, positions) -> int:
        """Largest number of pairs within the cutoff over replicas (host, numpy)."""
        return pair_count(positions, self.n, self.cutoff)

    def init(self, positions, momenta, seeds=None, thermostat_state: dict | None = None):
        """The jax-md state of R replicas (:func:`~efa_calc.md_jax.state.init_state`: positions
        (R, N, 3) Å, momenta (R, N, 3) amu·Å/ase_time, Langevin ``seeds`` (R,) or keys (R, 2),
        saved ``thermostat_state``); sets the pair capacity from the structures if unset
        or too small."""
        # copies: jax may alias host memory on the CPU, and callers (ASE) move atoms in place
        positions = np.array(positions, np.float64, copy=True)
        momenta = np.array(momenta, np.float64, copy=True)
        count = self.pair_count(positions)
        if self.capacity is None or self.capacity < count:  # starting forces never use a truncated list
            self.capacity = edge_bucket(count, headroom=1.25)
        return init_state(self, positions, momenta, seeds, thermostat_state)

    def thermostat_arrays(self, state) -> dict:
        """Thermostat state to save (:func:`~efa_calc.md_jax.state.thermostat_arrays`)."""
        return thermostat_arrays(self, state)

    def _restore(self, state, saved: dict):
        return restore_thermostat(self, state, saved)

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
            self._chunk_fns[key] = jax.jit(make_chunk(self, length, self.capacity, interval, self.guards))
        return self._chunk_fns[key]

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
