"""The ASE engine: ASE's own integrators, one model call per step from Python.

Integrators: ``VelocityVerlet`` (NVE), ``Langevin`` (default NVT, with the centre of mass
fixed by ``FixCom``), ``Bussi`` (stochastic velocity rescaling) and
``NoseHooverChainNVT``.  Outputs, resume and guard: :mod:`md_protocols.dynamics`.

State files: ``state.npz`` (``positions`` Å, ``momenta`` amu·Å/ase_time, ``numbers``) and
``state.json`` (``step``, numpy ``rng`` state, ``thermostat`` state, ``units``).
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
from ase import Atoms, units
from tqdm.auto import tqdm

from efa_calc.errors import InputError
from md_protocols.common import RunContext, write_json

NAME = "ase"
THERMOSTATS = ("langevin", "bussi", "nose-hoover")


def available() -> str | None:
    return None


def initial_velocities(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann velocities at ``temperature_K`` with zero total and angular momentum."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng, force_temp=True)
    Stationary(atoms)
    ZeroRotation(atoms)


def make_integrator(atoms: Atoms, ensemble: str, thermostat: str, timestep_fs: float, temperature_K: float,
                    rng: np.random.Generator, friction_per_fs: float = 0.01, tau_fs: float = 100.0):
    """The ASE integrator for ``ensemble`` ('nve' or 'nvt') and ``thermostat``."""
    dt = timestep_fs * units.fs
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
    raise ValueError(f"unknown thermostat {thermostat!r}; choose from {THERMOSTATS}")


class ThermostatState:
    """Save and restore the hidden state of an ASE integrator (JSON-able dict).

    ASE has no public API for it, so this is the one place that knows where ASE keeps it:
    the Nosé–Hoover chain's positions and momenta (``_thermostat._eta``/``_p_eta``) and
    Bussi's ``transferred_energy``.  The RNG and the Langevin thermostat need nothing
    beyond the numpy generator.  An ASE release that moves these fails here with a clear
    error rather than resuming a run with a reset thermostat.
    """

    def __init__(self, dyn):
        self.dyn = dyn

    def _chain(self):
        chain = getattr(self.dyn, "_thermostat", None)
        if chain is not None and not (hasattr(chain, "_eta") and hasattr(chain, "_p_eta")):
            raise RuntimeError("this ASE version keeps the Nosé–Hoover chain state elsewhere; efa-md cannot "
                               "save or resume it (see md_protocols.engines.ase_engine.ThermostatState)")
        return chain

    def get(self) -> dict:
        state = {}
        chain = self._chain()
        if chain is not None:
            state["eta"] = np.asarray(chain._eta).tolist()
            state["p_eta"] = np.asarray(chain._p_eta).tolist()
        if hasattr(self.dyn, "transferred_energy"):  # Bussi
            state["transferred_energy"] = float(self.dyn.transferred_energy)
        return state

    def set(self, state: dict) -> None:
        if "eta" in state:
            chain = self._chain()
            chain._eta = np.asarray(state["eta"])
            chain._p_eta = np.asarray(state["p_eta"])
        if "transferred_energy" in state:
            self.dyn.transferred_energy = state["transferred_energy"]

    def conserved_energy(self) -> float | None:
        """The integrator's conserved energy (eV), if it defines one."""
        if hasattr(self.dyn, "get_conserved_energy"):
            return float(self.dyn.get_conserved_energy())
        return None


def _write_state(ctx: RunContext, step: int, positions, momenta, numbers, rng_state: dict, thermo: dict) -> None:
    tmp = ctx.path("state.npz.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, positions=positions, momenta=momenta, numbers=numbers)
    os.replace(tmp, ctx.path("state.npz"))
    write_json(ctx.path("state.json"), {"step": step, "engine": NAME, "rng": rng_state, "thermostat": thermo,
                                        "units": {"positions": "Angstrom", "momenta": "ASE (amu*Angstrom/ase_time)"}})


def run(ctx: RunContext, atoms: Atoms, calc, ensemble: str, *, write_every: int = 1, log_every: int = 1,
        checkpoint_every: int = 50, temperature_limit_factor: float = 5.0, force_limit_eV_A: float = 50.0,
        initial_velocities_fn=None) -> dict:
    """The ASE engine's :func:`~md_protocols.dynamics.run_dynamics` (same arguments)."""
    from md_protocols.dynamics import LOG_COLUMNS, append_frames, finish, truncate_outputs, write_log

    steps, dt_fs, temp = int(ctx["steps"]), float(ctx["timestep_fs"]), float(ctx["temperature_K"])
    thermostat = ctx.settings.get("thermostat", "langevin")
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(int(ctx["seed"]))
    traj_path, log_path = ctx.path("trajectory.extxyz"), ctx.path("log.csv")
    start = 0
    state_file = ctx.path("state.json")
    resuming = ctx.resume and state_file.exists()
    if resuming:
        state = json.loads(state_file.read_text())
        with np.load(ctx.path("state.npz")) as z:
            if not np.array_equal(z["numbers"], atoms.numbers):
                raise ValueError("the saved state belongs to a different system")
            atoms.set_positions(z["positions"])
            atoms.set_momenta(z["momenta"])
        rng.bit_generator.state = state["rng"]
        start = int(state["step"])
        truncate_outputs(ctx.out, start)
    else:
        for p in (traj_path, log_path):
            p.unlink(missing_ok=True)
        (initial_velocities_fn or (lambda a, r: initial_velocities(a, temp, r)))(atoms, rng)
    dyn = make_integrator(atoms, ensemble, thermostat, dt_fs, temp, rng)
    thermo = ThermostatState(dyn)
    if resuming:
        thermo.set(json.loads(state_file.read_text())["thermostat"])
    columns = LOG_COLUMNS + (["econs_eV"] if hasattr(dyn, "get_conserved_energy") else [])
    if not log_path.exists():
        write_log(log_path, [], columns)

    def record(step: int) -> None:
        time_fs = step * dt_fs
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        if step % log_every == 0:
            row = {"step": step, "time_fs": f"{time_fs:.4f}", "epot_eV": f"{epot:.8f}", "ekin_eV": f"{ekin:.8f}",
                   "etot_eV": f"{epot + ekin:.8f}", "temperature_K": f"{atoms.get_temperature():.4f}"}
            if "econs_eV" in columns:
                row["econs_eV"] = f"{thermo.conserved_energy():.8f}"
            with open(log_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerow(row)
        if step % write_every == 0:
            append_frames(traj_path, atoms.get_chemical_symbols(), atoms.positions[None], atoms.get_momenta()[None],
                          atoms.get_forces()[None], [epot], [step], [time_fs])

    def save(step: int) -> None:
        _write_state(ctx, step, atoms.get_positions(), atoms.get_momenta(), atoms.numbers,
                     rng.bit_generator.state, thermo.get())

    stop_on_envelope = ctx.settings.get("extrapolation", "stop") == "stop"

    def outside() -> str | None:
        ext = (atoms.calc.results or {}).get("extrapolation") or {}
        if stop_on_envelope and ext.get("status") == "outside":
            return "; ".join(ext["reasons"])
        return None

    stop_reason = None
    last_good = None
    if start == 0:  # a bad starting structure is an error (the run fails and leaves nothing behind)
        atoms.get_potential_energy()
        why = outside()
        if why:
            raise InputError(f"the starting structure is outside the model's training envelope: {why} "
                             "(--set extrapolation=warn runs it anyway)")
        record(0)
        save(0)
    try:
        # the guard scales with the target and with the starting kinetic energy (collisions)
        t_limit = max(temperature_limit_factor * max(temp, atoms.get_temperature(), 1.0), 1000.0)
        bar = tqdm(total=steps, initial=start, desc=f"{ctx.protocol}", unit="step", disable=not ctx.progress)
        for step in range(start + 1, steps + 1):
            dyn.step()
            t_now, fmax = atoms.get_temperature(), float(np.abs(atoms.get_forces()).max())
            if not np.isfinite(t_now) or t_now > t_limit:
                stop_reason = f"temperature {t_now:.0f} K exceeded the guard of {t_limit:.0f} K at step {step}"
            elif fmax > force_limit_eV_A:
                stop_reason = f"a force of {fmax:.1f} eV/Å exceeded the guard of {force_limit_eV_A} eV/Å at step {step}"
            elif outside():
                stop_reason = (f"the structure left the model's training envelope at step {step}: {outside()} "
                               "(resume with --set extrapolation=warn to go on regardless)")
            if stop_reason:
                break
            record(step)
            if step % checkpoint_every == 0 or step == steps:
                save(step)
                last_good = None
            else:
                last_good = (step, atoms.get_positions(), atoms.get_momenta(), dict(rng.bit_generator.state),
                             thermo.get())
            bar.update(1)
        bar.close()
    except InputError as exc:  # e.g. atoms left the model's max_length, or came closer than 0.3 Å
        stop_reason = f"the structure left the model's valid range: {exc}"
    if stop_reason and last_good is not None:  # a resumable state at the last good step
        step_ok, pos, mom, rng_state, th = last_good
        _write_state(ctx, step_ok, pos, mom, atoms.numbers, rng_state, th)
    return finish(ctx, ensemble, [ctx.out], len(atoms), stop_reason)
