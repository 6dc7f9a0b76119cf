"""The jax engine: jax-md's integrators inside XLA, many steps and replicas per call.

``--engine jax [--replicas R]``: R independent trajectories (replica r: its own
Maxwell–Boltzmann velocities, drawn one replica after the other, so replica 0 starts as
the ASE engine does; Langevin noise key ``fold_in(PRNGKey(seed), r)``) advanced by one
vmapped XLA call of ``chunk_steps`` steps (:class:`efa_calc.md_jax.JaxMD`); with R > 1 the
outputs are in ``replica_XXX/``.  Thermostats: ``langevin`` (BAOAB, friction 0.01 fs⁻¹;
the centre of mass is not fixed, so temperatures count 3N degrees of freedom) and
``nose-hoover`` (chain of 3, τ = 100 fs; ``econs_eV``).  A chunk whose on-device pair list
overflowed is redone from its start with a larger capacity (one more compilation); the
guards run on the device at every step.  Options: ``chunk_steps`` (default
:data:`CHUNK_STEPS`; the state is saved after every chunk, ``checkpoint_every`` is not
used) and ``capacity`` (initial pair slots).  ``state.npz``: ``positions``/``momenta``
(N, 3) for one replica, (R, N, 3) for several, and ``thermostat_*`` arrays (Langevin keys
(R, 2) uint32 or Nosé–Hoover chain arrays, ASE units); ``state.json`` adds ``replicas``
and ``pair_capacity``.

Periodic structures (any ``pbc``; every cell height above twice the model's cutoff, else
refused before any work, naming ``--engine ase``): NVE/NVT in the fixed cell and ``npt``
with jax-md's ``npt_nose_hoover`` (:mod:`efa_calc.md_jax.npt`; ``--barostat isotropic``
only): ``--tdamp`` τ_T (fs) is the particle thermostat's chain time constant and
``--pdamp`` τ_P (fs) sets the barostat's box mass W_b = 3(N+1) k_B T τ_P² and its chain's
time constant (the period of the volume oscillation, ~1000 steps; the role of
``IsotropicMTKNPT``'s ``pdamp`` on the ASE engine), ``--pressure`` in bar.  The log has
the MTK invariant ``econs_eV`` (eV, with P V), ``volume_A3``, ``density_g_cm3`` and
``pressure_bar``; frames carry the cell.  ``state.npz`` adds ``cell`` ((3, 3) or (R, 3, 3)
Å) and for NPT the ``thermostat_box_*`` and ``thermostat_barostat_chain_*`` arrays (the
whole barostat state: resume is exact).  The ``cell_height`` guard stops a run whose box
shrinks to twice the cutoff (resume it with ``--engine ase``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from ase import units

from md_protocols.engines.base import Block, Engine
from md_protocols.engines.guards import GUARDS, detail
from md_protocols.settings import SettingError

#: Steps per XLA call (also how often frames, log rows and the state are written).
CHUNK_STEPS = 100

log = logging.getLogger("efa_calc")


class JaxEngine(Engine):
    NAME = "jax"

    def options(self, chunk_steps: int | None = None, capacity: int | None = None, npt=None) -> None:
        self.npt = npt or {}
        if self.calc.is_committee:
            raise SettingError("the jax engine runs one model, not a committee; use --engine ase for committees")
        self.interval = math.gcd(self.write_every, self.log_every)
        chunk = int(chunk_steps or CHUNK_STEPS)
        self.chunk = self.interval * max(1, round(chunk / self.interval))
        self.capacity = capacity

    def prepare(self, atoms):
        atoms.set_constraint()
        return atoms

    @property
    def conserved(self) -> bool:
        return self.ensemble == "npt" or (self.ensemble == "nvt" and self.thermostat == "nose-hoover")

    def begin(self, positions, momenta, saved) -> None:
        import jax

        from efa_calc.md_jax import FLAGS, JaxMD

        ckpt = self.calc.checkpoints[0]
        npt = {"tau_fs": float(self.npt["tdamp_fs"]), "pressure_bar": float(self.npt["pressure_bar"]),
               "pdamp_fs": float(self.npt["pdamp_fs"])} if self.ensemble == "npt" else {}
        if self.periodic:
            self.stop_names = self.stop_names + ("cell_height",)
        self.md = md = JaxMD(ckpt, self.numbers, self.atoms.get_masses(), self.ensemble, self.thermostat,
                             timestep_fs=self.dt_fs, temperature_K=self.temp, dtype=self.calc.dtype,
                             periodic=self.periodic, **npt,
                             capacity=self.capacity, interval=self.interval,
                             envelope=ckpt.envelope if self.guard != "off" else None,
                             max_length=self.calc.max_length, guards=[g for g in GUARDS if g.name in FLAGS],
                             message_passing=self.calc.potentials[0].config.message_passing)
        with jax.enable_x64(md.x64):
            keys = np.stack([np.asarray(jax.random.fold_in(jax.random.PRNGKey(self.seed), r), np.uint32)
                             for r in range(self.replicas)])
        thermo = None
        cells = self.atoms.cell.array if self.periodic else None
        if saved is not None:
            fields, arrays = saved
            md.capacity = max(int(fields.get("pair_capacity", 0)), 0) or None
            thermo = {k[len("thermostat_"):]: v for k, v in arrays.items() if k.startswith("thermostat_")}
            if self.periodic:
                cells = arrays["cell"].reshape(self.replicas, 3, 3)
        if self.capacity is not None and md.capacity is None:
            md.capacity = self.capacity
        self.positions0, self.momenta0 = positions, momenta
        self.jstate = md.init(positions, momenta, seeds=keys, thermostat_state=thermo, cells=cells)
        self.stop_mask = sum(FLAGS[name] for name in self.stop_names)

    def _temperature(self, ekin):
        return 2 * np.asarray(ekin, np.float64) / (3 * self.n * units.kB)

    def initial_records(self) -> dict:
        """Step 0: the calculator's energy and forces of the (common) starting structure."""
        r, res = self.replicas, self.calc.results
        positions, momenta = self.positions0, self.momenta0
        epot0 = np.full(r, res["energy"])
        ekin0 = np.sum(momenta ** 2 / (2 * self.atoms.get_masses()[None, :, None]), axis=(1, 2))
        econs0 = epot0 + ekin0  # a Nosé–Hoover chain (and the barostat) starts at rest
        recs = {"positions": positions[None], "momenta": momenta[None],
                "forces": np.broadcast_to(res["forces"], positions.shape)[None], "epot": epot0[None],
                "ekin": ekin0[None], "temperature": self._temperature(ekin0)[None]}
        if self.periodic:
            cell = self.atoms.cell.array
            recs["cell"] = np.broadcast_to(cell, (1, r, 3, 3))
            recs["stress"] = np.broadcast_to(self.atoms.get_stress(voigt=True), (1, r, 6))
            if self.ensemble == "npt":
                econs0 = econs0 + self.md.pressure * abs(np.linalg.det(cell))
        recs["econs"] = econs0[None]
        return recs

    def start_temperature(self) -> float:
        s = self.jstate
        ekin0 = np.sum(np.asarray(s.momentum, np.float64) ** 2 / (2 * np.asarray(s.mass, np.float64)), axis=(1, 2))
        return float(np.max(self._temperature(ekin0)))

    def _chunk(self, step: int, todo: int):
        """One chunk (redone with a larger pair list while it overflows) and its interval."""
        md = self.md
        # realign records to multiples of the interval (only after resuming a run that ended between them)
        k_int = self.interval if step % self.interval == 0 else 1
        length = self.chunk if k_int == self.interval else 1
        todo = min(length, todo)
        while True:
            out = md.run_chunk(self.jstate, length, todo, self.limits["temperature_K"], self.f_limit,
                               self.stop_mask, interval=k_int,
                               volume_range=(self.limits.get("volume_min_A3", 0.0),
                                             self.limits.get("volume_max_A3", math.inf)))
            if not out.overflow:
                return out, k_int
            old = md.capacity
            md.grow()
            log.info("jax MD: the pair list outgrew its %d slots within steps %d-%d; chunk redone with %d "
                     "(one new compilation)", old, step + 1, step + todo, md.capacity)

    def advance(self, step: int, todo: int) -> Block:
        from efa_calc.md_jax import FLAGS

        if self.periodic:
            self.limits.setdefault("cell_height_min_A", 2.0 * self.md.cutoff)
        out, k_int = self._chunk(step, todo)
        self.jstate = out.state
        valid = out.steps_done // k_int
        recs = {k: v[:valid] for k, v in out.records.items()}
        recs["temperature"] = self._temperature(recs["ekin"])
        stop = None
        if out.stop is not None:
            stop = {}
            for r in np.flatnonzero(out.stop["flags"] & self.stop_mask):
                bits = int(out.stop["flags"][r])
                name = next(g.name for g in GUARDS if bits & FLAGS.get(g.name, 0) & self.stop_mask)
                stop[int(r)] = (name, self._stop_obs(out.stop, int(r), name))
        seen = tuple(name for name in ("envelope", "envelope_energy", "max_length")
                     if np.any(out.seen & FLAGS[name]) and name not in self.stop_names)
        return Block(step + k_int * (np.arange(valid) + 1), recs, step + out.steps_done, stop, seen)

    def _stop_obs(self, stop: dict, r: int, name: str) -> dict:
        """The rejected step's observables of replica ``r``, with the message's ``detail``."""
        keys = ("temperature_K", "fmax_eV_A", "extent_A", "min_distance_A", "epot_eV")
        obs = {k: stop[k][r] for k in keys + (("volume_A3", "cell_height_A") if self.periodic else ())}
        cell = stop["cell"][r] if self.periodic else None
        obs["detail"] = detail(name, self.calc, self.numbers, stop["positions"][r],
                               (obs["epot_eV"] - self.md.shift) / self.n, obs, cell, self.pbc)
        return obs

    def state(self):
        pos = np.asarray(self.jstate.position, np.float64)
        mom = np.asarray(self.jstate.momentum, np.float64)
        cell = None
        if self.periodic:
            import jax

            with jax.enable_x64(self.md.x64):
                cell = np.asarray(self.md.cells_of(self.jstate, self.md.cells), np.float64)
        if self.replicas == 1:
            pos, mom = pos[0], mom[0]
            cell = None if cell is None else cell[0]
        arrays = {"positions": pos, "momenta": mom, **({"cell": cell} if self.periodic else {})}
        arrays.update({f"thermostat_{k}": v for k, v in self.md.thermostat_arrays(self.jstate).items()})
        fields = {"replicas": self.replicas, "pair_capacity": int(self.md.capacity)}
        return arrays, fields, {"thermostat_chain": "ASE units (eV, amu*Angstrom^2/ase_time^2)"}

    def summary_extra(self) -> dict:
        return {"engine": self.NAME, "pair_capacity": int(self.md.capacity), "pair_capacity_growths": self.md.growths,
                "chunk_steps": self.chunk}


ENGINE = JaxEngine
