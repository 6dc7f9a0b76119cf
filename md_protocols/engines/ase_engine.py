"""The ASE engine: ASE's own integrators, one model call per step from Python.

Integrators: ``VelocityVerlet`` (NVE), ``Langevin`` (default NVT, friction 0.01 fs⁻¹, with
the centre of mass fixed by ``FixCom``), ``Bussi`` (stochastic velocity rescaling) and
``NoseHooverChainNVT`` (τ = 100 fs); NPT: ASE's Martyna–Tobias–Klein integrators
(Nosé–Hoover chains on the particles and on the cell), ``IsotropicMTKNPT`` (``barostat
isotropic``, the cell scaled uniformly) or ``MTKNPT`` (``anisotropic``, all nine cell
components), at ``pressure_bar`` (bar) with the thermostat and barostat time constants
``tdamp_fs`` and ``pdamp_fs`` (fs).  Outputs, resume and guards:
:mod:`md_protocols.engines.base`.  A block runs to the next multiple of
``checkpoint_every`` steps; the calculator's ``InputError`` (beyond ``max_length``, atoms
closer than 0.3 Å) stops the run at that step.

State files: ``state.npz`` (``positions`` Å, ``momenta`` amu·Å/ase_time, ``numbers``, a
periodic run's ``cell`` Å) and ``state.json`` (``step``, ``engine``, numpy ``rng`` state,
``thermostat`` state with the NPT barostat's, ``units``).
"""

from __future__ import annotations

import numpy as np
from ase import units

from efa_calc.errors import InputError
from md_protocols.engines.ase_thermostat import ThermostatState
from md_protocols.engines.base import Block, Engine
from md_protocols.engines.guards import GUARDS


def make_integrator(atoms, ensemble: str, thermostat: str, timestep_fs: float, temperature_K: float,
                    rng: np.random.Generator, friction_per_fs: float = 0.01, tau_fs: float = 100.0, npt=None):
    """The ASE integrator for ``ensemble`` ('nve', 'nvt' or 'npt') and ``thermostat``;
    ``npt`` = {``pressure_bar`` (bar), ``tdamp_fs``, ``pdamp_fs`` (fs), ``barostat``
    ('isotropic' or 'anisotropic')}."""
    dt = timestep_fs * units.fs
    if ensemble == "npt":
        from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT

        cls = {"isotropic": IsotropicMTKNPT, "anisotropic": MTKNPT}[npt["barostat"]]
        return cls(atoms, dt, temperature_K=temperature_K, pressure_au=npt["pressure_bar"] * units.bar,
                   tdamp=npt["tdamp_fs"] * units.fs, pdamp=npt["pdamp_fs"] * units.fs)
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt)
    if thermostat == "langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        # ASE ≥ 3.28: fix the centre of mass with a constraint rather than fixcm=True,
        # which samples a slightly wrong distribution for small molecules.
        atoms.set_constraint(FixCom())
        return Langevin(atoms, dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, rng=rng,
                        fixcm=False)
    if thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, dt, temperature_K=temperature_K, taut=tau_fs * units.fs, rng=rng)
    if thermostat == "nose-hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature_K, tdamp=tau_fs * units.fs)
    raise ValueError(f"unknown thermostat {thermostat!r}; allowed: langevin, bussi, nose-hoover")


class AseEngine(Engine):
    NAME = "ase"

    def options(self, npt=None) -> None:
        """``npt``: the barostat settings of :func:`make_integrator` (NPT runs)."""
        self.npt = npt

    def begin(self, positions, momenta, saved) -> None:
        atoms = self.atoms
        if saved is not None:
            if self.periodic:
                atoms.set_cell(saved[1]["cell"], scale_atoms=False)
            atoms.set_positions(positions[0])
            self.rng.bit_generator.state = saved[0]["rng"]
        atoms.set_momenta(momenta[0])
        self.dyn = make_integrator(atoms, self.ensemble, self.thermostat, self.dt_fs, self.temp, self.rng,
                                   npt=self.npt)
        self.thermo = ThermostatState(self.dyn)
        if saved is not None:
            self.thermo.set(saved[0]["thermostat"])
        self.kept = self._snapshot()

    @property
    def conserved(self) -> bool:
        return hasattr(self.dyn, "get_conserved_energy")

    def _snapshot(self) -> tuple:
        a = self.atoms
        return (a.get_positions(), a.get_momenta(), dict(self.rng.bit_generator.state), self.thermo.get(),
                a.cell.array.copy())

    def _records(self) -> dict:
        a = self.atoms
        rec = {"positions": a.positions.copy(), "momenta": a.get_momenta(), "forces": a.get_forces(),
               "epot": a.get_potential_energy(), "ekin": a.get_kinetic_energy(), "temperature": a.get_temperature()}
        if self.conserved:
            rec["econs"] = self.thermo.conserved_energy()
        if self.periodic:
            rec["cell"], rec["stress"] = a.cell.array.copy(), a.get_stress(voigt=True)
        return rec

    def initial_records(self) -> dict:
        return {k: np.asarray(v)[None, None] for k, v in self._records().items()}

    def start_temperature(self) -> float:
        return self.atoms.get_temperature()

    def _observe(self) -> dict:
        a = self.atoms
        ext = (a.calc.results or {}).get("extrapolation") or {}
        obs = {"temperature_K": np.float64(a.get_temperature()), "fmax_eV_A": np.float64(np.abs(a.get_forces()).max()),
               "structure_outside_envelope": ext.get("status") == "outside",
               "detail": "; ".join(ext.get("reasons", []))}
        if self.periodic:
            obs["volume_A3"] = np.float64(a.get_volume())
        return obs

    def advance(self, step: int, todo: int) -> Block:
        every = self.checkpoint_every
        end = min(step + todo, (step // every + 1) * every)
        recs, stop = [], None
        for s in range(step + 1, end + 1):
            try:
                self.dyn.step()
                obs = self._observe()
            except InputError as exc:  # beyond max_length, or atoms closer than 0.3 Å
                stop = {0: ("too_close", {"detail": str(exc)})}
                break
            fired = [g.name for g in GUARDS if g.name in self.stop_names and g.fires(obs, self.limits, np)]
            if fired:
                stop = {0: (fired[0], obs)}
                break
            recs.append(self._records())
            self.kept = self._snapshot()
        done = len(recs)
        records = {k: np.asarray([r[k] for r in recs])[:, None] for k in (recs[0] if recs else {})}
        return Block(np.arange(step + 1, step + done + 1), records, step + done, stop)

    def state(self):
        pos, mom, rng_state, thermo, cell = self.kept
        arrays = {"positions": pos, "momenta": mom, **({"cell": cell} if self.periodic else {})}
        return arrays, {"rng": rng_state, "thermostat": thermo}, {}


ENGINE = AseEngine
