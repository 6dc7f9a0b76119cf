"""The engine base: everything of an MD run but the stepping, the same for every engine.

:meth:`Engine.run` does, for R replicas of one molecule (R = 1 but for the jax engine):

1. **start** — a fresh run removes old outputs, checks the starting structure with the
   calculator (outside the training envelope with ``guard="error"``: an
   :class:`~efa_calc.errors.InputError`, nothing is written) and draws Maxwell–Boltzmann
   velocities (zero total and angular momentum; or ``initial_velocities_fn(atoms, rng)``)
   for one replica after the other from ``numpy.random.default_rng(seed)``; a resumed run
   loads ``state.npz``/``state.json`` and cuts the trajectory and log back to its step
   (:mod:`~md_protocols.engines.outputs`);
2. **step** — the engine's :meth:`Engine.advance` runs a block of steps (ASE: up to the
   next checkpoint; jax: one XLA chunk) and returns its records, the step reached and, if
   a stopping guard fired (:mod:`~md_protocols.engines.guards`), the rejected step's
   observables; the base appends frames (every ``write_every`` steps) and log rows (every
   ``log_every``), saves the state after every block and, on a stop, ends with the
   guard's message — the state then holds the last good step, so ``--resume`` continues;
3. **finish** — status, plot and results (:func:`~md_protocols.engines.results.finish`).

Temperature guard: ``temperature_limit_factor`` × max(target, starting temperature, 1 K),
at least 1000 K; force guard ``force_limit_eV_A`` (eV/Å); NPT box guard: the volume outside
[0.5, 2] × the starting volume (:data:`VOLUME_RANGE`; box collapse or explosion).  Units:
Å, Å³, fs, eV, eV/Å, K, bar, g/cm³, amu·Å/ase_time.

A periodic run (any ``atoms.pbc``) also writes the cell in every frame, logs
``volume_A3``, ``density_g_cm3`` and ``pressure_bar`` (:mod:`~md_protocols.engines.cell`)
and keeps the cell in the state; its records carry ``cell`` and ``stress``.

An engine implements :meth:`begin`, :meth:`initial_records`, :meth:`start_temperature`,
:meth:`advance` and :meth:`state` (and may override :meth:`prepare`, :attr:`conserved`,
:meth:`summary_extra`).
"""

from __future__ import annotations

import abc
import dataclasses
import warnings

import numpy as np
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from tqdm.auto import tqdm

from efa_calc.envelope import PHYSICAL_MIN_DISTANCE_A
from efa_calc.errors import InputError
from md_protocols.engines.guards import GUARD_BY_NAME, stopping
from md_protocols.engines.cell import density_g_cm3, pressure_bar, volume_A3
from md_protocols.engines.outputs import (CELL_COLUMNS, LOG_COLUMNS, append_frames, append_rows, load_state, save_state,
                                          truncate_outputs, write_log)
from md_protocols.engines.results import finish
from md_protocols.settings import guard_mode

__all__ = ["Engine", "Block", "initial_velocities", "VOLUME_RANGE"]

#: the NPT box guard: the volume must stay within these multiples of the starting volume
VOLUME_RANGE = (0.5, 2.0)


def initial_velocities(atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann velocities at ``temperature_K`` (K) with zero total momentum and,
    for an isolated structure, zero angular momentum (a periodic cell does not conserve it)."""
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng, force_temp=True)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)


@dataclasses.dataclass
class Block:
    """What :meth:`Engine.advance` returns.

    Attributes:
      steps: (K,) step numbers of the records.
      records: (K, R, ...) arrays: ``positions`` Å, ``momenta`` amu·Å/ase_time, ``forces``
        eV/Å, ``epot``/``ekin`` (and ``econs`` if :attr:`Engine.conserved`) eV,
        ``temperature`` K; periodic runs also ``cell`` (K, R, 3, 3) Å and ``stress``
        (K, R, 6) Voigt eV/Å³ (ASE's sign).
      step: the last step kept.
      stop: ``None``, or {replica: (guard name, observables of the rejected step)}.
      seen: names of non-stopping guards that fired in the block (warned once).
    """

    steps: np.ndarray
    records: dict
    step: int
    stop: dict | None = None
    seen: tuple = ()


class Engine(abc.ABC):
    """One MD run (see the module docstring); ``options`` are the engine's own."""

    NAME = ""

    def __init__(self, ctx, atoms, calc, ensemble: str, *, write_every: int = 1, log_every: int = 1,
                 checkpoint_every: int = 50, temperature_limit_factor: float = 5.0, force_limit_eV_A: float = 50.0,
                 initial_velocities_fn=None, **options):
        self.ctx, self.calc, self.ensemble = ctx, calc, ensemble
        self.steps, self.dt_fs = int(ctx["steps"]), float(ctx["timestep_fs"])
        self.temp = float(ctx["temperature_K"])
        self.thermostat = ctx.settings.get("thermostat", "langevin")
        self.replicas, self.seed = int(ctx.settings.get("replicas", 1)), int(ctx["seed"])
        self.guard = guard_mode(ctx.settings)
        self.write_every, self.log_every, self.checkpoint_every = int(write_every), int(log_every), int(checkpoint_every)
        self.t_factor, self.f_limit = temperature_limit_factor, force_limit_eV_A
        self.initial_velocities_fn = initial_velocities_fn
        self.stop_names = stopping(self.guard, calc.parameters["strict"]) + (("box",) if ensemble == "npt" else ())
        self.options(**options)
        self.atoms = self.prepare(atoms.copy())
        self.atoms.calc = calc
        self.numbers, self.symbols, self.n = self.atoms.numbers.copy(), self.atoms.get_chemical_symbols(), len(atoms)
        self.pbc = self.atoms.pbc.copy()
        self.periodic = bool(self.pbc.any())
        self.total_mass = float(self.atoms.get_masses().sum())
        self.volume0 = float(self.atoms.get_volume()) if self.periodic else None
        self.folders = [ctx.out] if self.replicas == 1 else [ctx.out / f"replica_{r:03d}" for r in range(self.replicas)]
        self.rng = np.random.default_rng(self.seed)
        self.limits: dict = {}

    # ------------------------------------------------------------------ engine hooks
    def options(self) -> None:
        """Take the engine's own options (none by default)."""

    def prepare(self, atoms):
        """The engine's copy of the starting structure (default: as given)."""
        return atoms

    @property
    def conserved(self) -> bool:
        """Whether the log has an ``econs_eV`` column (a conserved energy, eV)."""
        return False

    def summary_extra(self) -> dict:
        return {}

    @abc.abstractmethod
    def begin(self, positions, momenta, saved: tuple | None) -> None:
        """Build the integrator at (R, N, 3) positions/momenta; ``saved`` = (state.json
        fields, state.npz arrays) when resuming."""

    @abc.abstractmethod
    def initial_records(self) -> dict:
        """The records (1, R, ...) of step 0 (see :class:`Block`)."""

    @abc.abstractmethod
    def start_temperature(self) -> float:
        """The highest temperature (K) of the starting (or resumed) state."""

    @abc.abstractmethod
    def advance(self, step: int, todo: int) -> Block:
        """Run up to ``todo`` steps after ``step``."""

    @abc.abstractmethod
    def state(self) -> tuple[dict, dict, dict]:
        """``(arrays, fields, units)`` of the last kept step for state.npz/state.json
        (``positions``/``momenta`` included)."""

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Run (or resume) to ``steps`` in total; returns the results for summary.json."""
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        if self.ctx.resume and self.ctx.path("state.json").exists():
            fields, arrays = load_state(self.ctx.out, self.numbers)
            start, saved = int(fields["step"]), (fields, arrays)
            if self.periodic:
                self.volume0 = float(fields["volume0_A3"])
            positions = arrays["positions"].reshape(self.replicas, self.n, 3)
            momenta = arrays["momenta"].reshape(self.replicas, self.n, 3)
            for folder in self.folders:
                truncate_outputs(folder, start)
        else:
            for folder in self.folders:
                for name in ("trajectory.extxyz", "log.csv"):
                    (folder / name).unlink(missing_ok=True)
            self.check_start()
            positions, momenta = self.starting_velocities()
            start, saved = 0, None
        self.begin(positions, momenta, saved)
        self.columns = LOG_COLUMNS + (["econs_eV"] if self.conserved else []) + (CELL_COLUMNS if self.periodic else [])
        for folder in self.folders:
            if not (folder / "log.csv").exists():
                write_log(folder / "log.csv", [], self.columns)
        if start == 0:
            self.write(np.array([0]), self.initial_records())
            self.save(0)
        self.limits = {"temperature_K": max(self.t_factor * max(self.temp, self.start_temperature(), 1.0), 1000.0),
                       "force_eV_A": self.f_limit, "max_length_A": self.calc.max_length,
                       "min_distance_A": PHYSICAL_MIN_DISTANCE_A}
        if self.periodic:
            self.limits.update(volume_min_A3=VOLUME_RANGE[0] * self.volume0, volume_max_A3=VOLUME_RANGE[1] * self.volume0,
                               volume0_A3=self.volume0)
        stop_reason = self.loop(start)
        return finish(self.ctx, self.ensemble, self.folders, self.n, stop_reason, self.summary_extra())

    def check_start(self) -> None:
        """A starting structure the calculator rejects, or (guard=error) outside the
        training envelope, fails the run before anything is written."""
        self.atoms.get_potential_energy()
        ext = (self.calc.results or {}).get("extrapolation") or {}
        if self.guard == "error" and ext.get("status") == "outside":
            raise InputError(f"the starting structure is outside the model's training envelope: "
                             f"{'; '.join(ext['reasons'])} (--set guard=warn runs it anyway)")

    def starting_velocities(self):
        """(R, N, 3) positions (Å) and momenta (amu·Å/ase_time), replica after replica."""
        fn = self.initial_velocities_fn or (lambda a, g: initial_velocities(a, self.temp, g))
        positions, momenta = [], []
        for _ in range(self.replicas):
            a = self.atoms.copy()
            fn(a, self.rng)
            positions.append(a.positions.copy())
            momenta.append(a.get_momenta())
        return np.stack(positions), np.stack(momenta)

    def loop(self, step: int) -> str | None:
        """Advance block by block to ``steps``; the stop message, or ``None``."""
        warned: set = set()
        bar = tqdm(total=self.steps, initial=step, desc=f"{self.ctx.protocol}", unit="step",
                   disable=not self.ctx.progress)
        try:
            while step < self.steps:
                block = self.advance(step, self.steps - step)
                self.write(block.steps, block.records)
                first, step = step + 1, block.step
                self.save(step)
                bar.update(step - first + 1)
                for name in sorted(set(block.seen) - warned, key=block.seen.index):
                    warned.add(name)
                    what = ("the model's max_length (strict=False)" if name == "max_length"
                            else "the model's training envelope")
                    warnings.warn(f"{self.NAME} MD: a structure left {what} within steps {first}-{step}; "
                                  "predictions there are extrapolated", RuntimeWarning, stacklevel=2)
                if block.stop:
                    return self.stop_message(block.stop, step + 1)
        finally:
            bar.close()
        return None

    def stop_message(self, stop: dict, step: int) -> str:
        """The guards' messages for the rejected ``step`` ("replica r: " before each with R > 1)."""
        who = (lambda r: f"replica {r}: ") if self.replicas > 1 else (lambda r: "")
        return "; ".join(who(r) + GUARD_BY_NAME[name].message(obs, self.limits, step)
                         for r, (name, obs) in sorted(stop.items()))

    def write(self, steps, recs: dict) -> None:
        """Append the frames (``write_every``) and log rows (``log_every``) of records at ``steps``."""
        times = steps * self.dt_fs
        if self.periodic and len(steps):
            vol = volume_A3(recs["cell"])
            cell_cols = {"volume_A3": vol, "density_g_cm3": density_g_cm3(self.total_mass, vol),
                         "pressure_bar": pressure_bar(recs["stress"], recs["ekin"], vol)}
        for r, folder in enumerate(self.folders):
            sel = np.flatnonzero(steps % self.write_every == 0)
            if len(sel):
                append_frames(folder / "trajectory.extxyz", self.symbols, recs["positions"][sel, r],
                              recs["momenta"][sel, r], recs["forces"][sel, r], recs["epot"][sel, r], steps[sel],
                              times[sel], recs["cell"][sel, r] if self.periodic else None, self.pbc)
            rows = []
            for k in np.flatnonzero(steps % self.log_every == 0):
                epot, ekin = float(recs["epot"][k, r]), float(recs["ekin"][k, r])
                row = {"step": int(steps[k]), "time_fs": f"{times[k]:.4f}", "epot_eV": f"{epot:.8f}",
                       "ekin_eV": f"{ekin:.8f}", "etot_eV": f"{epot + ekin:.8f}",
                       "temperature_K": f"{float(recs['temperature'][k, r]):.4f}"}
                if self.conserved:
                    row["econs_eV"] = f"{float(recs['econs'][k, r]):.8f}"
                if self.periodic:
                    row.update({key: f"{float(v[k, r]):.8g}" for key, v in cell_cols.items()})
                rows.append(row)
            append_rows(folder / "log.csv", rows, self.columns)

    def save(self, step: int) -> None:
        """state.npz/state.json of the last kept ``step`` (:func:`~md_protocols.engines.outputs.save_state`)."""
        arrays, fields, units = self.state()
        arrays = {"positions": arrays.pop("positions"), "momenta": arrays.pop("momenta"),
                  "numbers": np.asarray(self.numbers), **arrays}
        if self.periodic:
            fields = {**fields, "volume0_A3": self.volume0}
            units = {**units, "cell": "Angstrom (rows a, b, c)", "volume0_A3": "Angstrom^3"}
        save_state(self.ctx.out, arrays,
                   {"step": step, "engine": self.NAME, **fields}, units)
