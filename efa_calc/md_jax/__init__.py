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

Integrators: ``simulate.nve`` (velocity Verlet), ``simulate.nvt_langevin`` (BAOAB),
``simulate.nvt_nose_hoover`` (Nosé–Hoover chain, length 3 as ASE's default) and
``simulate.npt_nose_hoover`` (isotropic MTK barostat: :mod:`~efa_calc.md_jax.npt`) of
jax-md.

Periodic cells (``periodic=True``; cells (R, 3, 3) Å with the lattice vectors as rows,
ASE's convention): real, unwrapped positions, jax-md's ``space.periodic_general(...,
fractional_coordinates=False, wrapped=False)`` (its ``box`` is the cell transposed), and
the minimum-image pair list of :mod:`~efa_calc.md_jax.periodic` with the calculator's
integer cell shifts, so the model sees exactly the calculator's Batch.  Every cell height
must exceed twice the cutoff (checked on the host in :meth:`JaxMD.init`, and at every NPT
step on the device: the ``cell_height`` guard).  Periodic records add ``cell`` (K, R, 3, 3)
Å and ``stress`` (K, R, 6) Voigt eV/Å³ (ASE's sign), from the force call's strain
derivative (no second pass).
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
from efa_calc.md_jax.periodic import check_cell_heights, periodic_pair_count
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
    density_bounds: tuple = (0.0, math.inf)  # (lo, hi) g/cm³ of a periodic envelope (with its margin)
    height_min: float = 0.0  # Å: a shorter cell height leaves a periodic envelope


def _envelope_arrays(envelope, numbers) -> _Static:
    n, z = len(numbers), numbers
    big = 1e6
    thr = np.zeros((n, n))
    bound = np.full(n, big)
    lo, hi = -big, big
    dens, height = (0.0, math.inf), 0.0
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
        if getattr(envelope, "density_g_cm3", None) is not None:
            from efa_calc.envelope import DENSITY_MARGIN

            d_lo, d_hi = envelope.density_g_cm3
            dens = (d_lo / (1 + DENSITY_MARGIN), d_hi * (1 + DENSITY_MARGIN))
        if getattr(envelope, "cell_height_A", None) is not None:
            from efa_calc.envelope import HEIGHT_MARGIN

            height = HEIGHT_MARGIN * envelope.cell_height_A[0]
    return _Static(thr, bound, (float(lo), float(hi)), tuple(map(float, dens)), float(height))


class JaxMD:
    """R replicas of one molecule integrated by jax-md inside XLA (see the module docstring).

    Args:
      checkpoint: the model (its energy shift is added to reported energies).
      numbers: atomic numbers (N,).
      masses: masses (N,) in amu.
      ensemble: ``"nve"``, ``"nvt"`` or ``"npt"`` (periodic only; isotropic).
      thermostat: for NVT, ``"langevin"`` or ``"nose-hoover"``.
      timestep_fs: timestep in fs.
      temperature_K: NVT target temperature in K.
      friction_per_fs: Langevin friction in 1/fs (ASE engine default 0.01).
      tau_fs: Nosé–Hoover time constant in fs (ASE engine default 100; NPT: ``tdamp_fs``).
      periodic: R periodic cells (given to :meth:`init`; fixed unless NPT).
      pressure_bar: NPT target pressure in bar.
      pdamp_fs: NPT barostat time constant τ_P in fs (box mass 3(N+1) k_B T τ_P²;
        :mod:`~efa_calc.md_jax.npt`).
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
                 envelope=None, max_length: float = math.inf, guards=(), message_passing: str | None = None,
                 periodic: bool = False, pressure_bar: float = 1.01325, pdamp_fs: float = 1000.0):
        if ensemble not in ("nve", "nvt", "npt"):
            raise ValueError(f"ensemble={ensemble!r}; allowed: 'nve', 'nvt' or 'npt'")
        if ensemble == "npt" and not periodic:
            raise ValueError("ensemble='npt' needs periodic=True (a cell periodic in all three directions)")
        if not (float(timestep_fs) > 0 and float(tau_fs) > 0 and float(pdamp_fs) > 0):
            raise ValueError(f"timestep_fs={timestep_fs!r}, tau_fs={tau_fs!r}, pdamp_fs={pdamp_fs!r}: "
                             "allowed: numbers > 0 fs")
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
        self.periodic = bool(periodic)
        self.pressure = float(pressure_bar) * units.bar  # eV/Å³
        self.tau_p = float(pdamp_fs) * units.fs
        self.cells = None  # (R, 3, 3) of a fixed-cell periodic run, set by init
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
                st.pair_threshold.tobytes(), st.neighbor_bound.tobytes(), st.energy_bounds, st.density_bounds,
                st.height_min, self.periodic, self.pressure, self.tau_p)

    # ------------------------------------------------------------------ model
    def force_and_energy(self, capacity: int):
        """The jitted ``(params, positions (N, 3) Å) -> (forces eV/Å, model energy eV)`` at
        ``capacity`` pair slots — periodic: ``(params, positions, cell (3, 3) Å) -> (forces,
        energy, W (3, 3) eV)`` (:func:`~efa_calc.md_jax.model.make_force_fn`; one trace per
        capacity, reused by every chunk)."""
        key = ("force", capacity)
        if key not in self._chunk_fns:
            self._chunk_fns[key] = make_force_fn(self.config, self.numbers, self.cutoff, capacity, self.periodic)
        return self._chunk_fns[key]

    def cells_of(self, state, cells):
        """(R, 3, 3) cells (Å) of ``state``: the NPT box, else the fixed ``cells`` (``None``
        for molecules)."""
        if self.ensemble == "npt":
            from efa_calc.md_jax.npt import npt_cells

            return npt_cells(state)
        return cells

    def simulator(self, params, capacity: int):
        """``replica(state, cur, cell) -> (state, new cur)``: one jax-md step of one replica.
        ``cur`` = {``epot``: model energy eV[, ``virial``: W (3, 3) eV]} of ``state``;
        ``cell`` (3, 3) Å is the fixed cell of a periodic NVE/NVT run (``None`` otherwise,
        NPT's is in the state).  The force function leaves its energy (and W) in a tap read
        right after ``apply`` in the same trace: they come with the forces, not from a
        second forward pass."""
        from jax_md import simulate, space

        fe = self.force_and_energy(capacity)
        if self.ensemble == "npt":
            from efa_calc.md_jax.npt import npt_simulator

            one = npt_simulator(self, fe, params)
            return lambda state, cur, cell: one(state, cur)
        tap: dict = {}
        if self.periodic:  # real unwrapped coordinates: shift_fn is R + dR for any box
            _, shift_fn = space.periodic_general(jnp.eye(3), fractional_coordinates=False, wrapped=False)
        else:
            _, shift_fn = space.free()

        def force_fn(positions, cell=None, **unused):
            if cell is None:
                f, tap["epot"] = fe(params, positions)
            else:
                f, tap["epot"], tap["virial"] = fe(params, positions, cell)
            return f  # jax-md's canonicalize_force sees an (N, 3) output: a force

        if self.ensemble == "nve":
            _, apply = simulate.nve(force_fn, shift_fn, self.dt)
        elif self.thermostat == "langevin":
            _, apply = simulate.nvt_langevin(force_fn, shift_fn, self.dt, self.kT, gamma=self.gamma)
        else:
            _, apply = simulate.nvt_nose_hoover(force_fn, shift_fn, self.dt, self.kT, chain_length=3, tau=self.tau)
        apply = getattr(apply, "__wrapped__", apply)  # jax-md jits it: trace it inline, so the tap is ours

        def replica(state, cur, cell):
            new = apply(state) if cell is None else apply(state, cell=cell)  # jax-md passes kwargs to force_fn
            return new, {k: tap.pop(k) for k in list(cur)}

        return replica

    # ------------------------------------------------------------------ state
    def pair_count(self, positions, cells=None) -> int:
        """Largest number of pairs within the cutoff over replicas (host: numpy, or vesin in
        ``cells`` (R, 3, 3) Å)."""
        if self.periodic:
            return periodic_pair_count(np.reshape(positions, (-1, self.n, 3)), cells, self.cutoff)
        return pair_count(positions, self.n, self.cutoff)

    def init(self, positions, momenta, seeds=None, thermostat_state: dict | None = None, cells=None):
        """The jax-md state of R replicas (:func:`~efa_calc.md_jax.state.init_state`: positions
        (R, N, 3) Å, momenta (R, N, 3) amu·Å/ase_time, Langevin ``seeds`` (R,) or keys (R, 2),
        saved ``thermostat_state``; periodic: ``cells`` (R, 3, 3) or (3, 3) Å, rows a, b, c,
        the cells of the structures given); sets the pair capacity from the structures if
        unset or too small.

        Raises:
          InputError: a periodic cell with a height not above twice the cutoff (the minimum
            image would miss pairs; the ASE engine runs such cells).
        """
        # copies: jax may alias host memory on the CPU, and callers (ASE) move atoms in place
        positions = np.array(positions, np.float64, copy=True)
        momenta = np.array(momenta, np.float64, copy=True)
        if self.periodic:
            if cells is None:
                raise ValueError("periodic=True: init needs the cells (R, 3, 3) Å")
            cells = np.broadcast_to(np.asarray(cells, np.float64), (positions.shape[0], 3, 3)).copy()
            check_cell_heights(cells, self.cutoff)
        count = self.pair_count(positions, cells)
        if self.capacity is None or self.capacity < count:  # starting forces never use a truncated list
            self.capacity = edge_bucket(count, headroom=1.25)
        if self.periodic and self.ensemble != "npt":
            with jax.enable_x64(self.x64):
                self.cells = jnp.asarray(cells, self.np_dtype)
        return init_state(self, positions, momenta, seeds, thermostat_state, cells)

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
                  interval: int | None = None, volume_range: tuple = (0.0, math.inf)) -> ChunkResult:
        """Advance ``state`` by up to ``n_steps`` (default ``length``) steps in one XLA call of
        the ``length``-step chunk (shorter runs reuse the same compiled chunk).

        Args:
          t_limit: temperature guard in K; f_limit: force guard in eV/Å.
          stop_flags: the :data:`FLAGS` bits that stop the run (default: all).
          interval: steps per record (default ``self.interval``).
          volume_range: (V_min, V_max) Å³ of the ``box`` guard (NPT).
        """
        n_steps = length if n_steps is None else int(n_steps)
        stop_flags = sum(FLAGS.values()) if stop_flags is None else int(stop_flags)
        with jax.enable_x64(self.x64):
            fn = self.chunk_fn(length, interval)
            limits = jnp.asarray([t_limit, f_limit, *volume_range], self.np_dtype)
            with warnings.catch_warnings():  # jax-md asks for float64 sums, which float32 runs cannot have
                warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
                state2, cur, k, stopped, overflow, seen, stop, recs = fn(self.params, state, jnp.int32(n_steps),
                                                                         limits, jnp.int32(stop_flags), self.cells)
            k, stopped, overflow = int(k), bool(stopped), bool(overflow)
            recs = {key: np.asarray(v) for key, v in recs.items()}
            for key in ("epot", "econs"):
                recs[key] = recs[key].astype(np.float64) + self.shift
            stop_info = None
            if stopped:
                stop_info = {key: np.asarray(v) for key, v in stop.items()}
                stop_info["step"] = int(stop_info["step"])
                stop_info["epot_eV"] = stop_info["epot_eV"].astype(np.float64) + self.shift
        epot2 = np.asarray(cur["epot"], np.float64) + self.shift
        return ChunkResult(state2, k, overflow, recs, np.asarray(seen), stop_info, epot2)

    def cost_analysis(self, state, length: int) -> dict:
        """XLA's cost analysis (``flops``, ``bytes accessed``) of the compiled chunk.

        XLA counts a loop body once: the numbers are those of one step of every replica
        (plus the chunk's one starting force call)."""
        with jax.enable_x64(self.x64):
            lowered = self.chunk_fn(length).lower(self.params, state, jnp.int32(length),
                                                  jnp.asarray([1e9, 1e9, 0.0, 1e9], self.np_dtype), jnp.int32(0),
                                                  self.cells)
            cost = lowered.compile().cost_analysis()
        if isinstance(cost, list):
            cost = cost[0]
        return {k: float(v) for k, v in cost.items() if k in ("flops", "bytes accessed", "transcendentals")}
