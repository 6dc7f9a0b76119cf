"""NVE/NVT molecular dynamics on ASE's integrators, with resumable output and a blow-up guard.

Integrators (all ASE's own): ``VelocityVerlet`` (NVE), ``Langevin`` (default NVT), ``Bussi``
(stochastic velocity rescaling) and ``NoseHooverChainNVT``.

Outputs in the run folder:

* ``trajectory.extxyz`` — every ``write_every`` steps: positions (Å), momenta, energy
  (eV), forces (eV/Å), ``step`` and ``time_fs`` in the frame info;
* ``log.csv`` — ``step, time_fs, epot_eV, ekin_eV, etot_eV, temperature_K`` (+ the
  Nosé–Hoover conserved energy ``econs_eV``) every ``log_every`` steps;
* ``state.npz`` + ``state.json`` — positions, momenta, step, RNG and thermostat state,
  rewritten atomically every ``checkpoint_every`` steps and at the end.

Resume: the state is loaded, the trajectory and log are cut back to its step (frames
written after the last state are recomputed, identically, since the RNG state is
restored), and the run continues to the requested total number of steps — no frame is
lost or duplicated.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read, write
from tqdm.auto import tqdm

from efa_calc.errors import InputError
from md_protocols.common import RunContext, write_json

__all__ = ["run_dynamics", "initial_velocities", "make_integrator", "nve_drift"]

LOG_COLUMNS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
THERMOSTATS = ("langevin", "bussi", "nose-hoover")


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
        from ase.md.langevin import Langevin

        from ase.constraints import FixCom

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


def _thermostat_state(dyn) -> dict:
    state = {}
    if hasattr(dyn, "_thermostat"):  # Nosé–Hoover chain
        state["eta"] = np.asarray(dyn._thermostat._eta).tolist()
        state["p_eta"] = np.asarray(dyn._thermostat._p_eta).tolist()
    if hasattr(dyn, "transferred_energy"):  # Bussi
        state["transferred_energy"] = float(dyn.transferred_energy)
    return state


def _restore_thermostat(dyn, state: dict) -> None:
    if "eta" in state:
        dyn._thermostat._eta = np.asarray(state["eta"])
        dyn._thermostat._p_eta = np.asarray(state["p_eta"])
    if "transferred_energy" in state:
        dyn.transferred_energy = state["transferred_energy"]


def _conserved(dyn, atoms) -> float | None:
    if hasattr(dyn, "get_conserved_energy"):
        return float(dyn.get_conserved_energy())
    return None


def _save_state(ctx: RunContext, atoms: Atoms, step: int, rng: np.random.Generator, dyn) -> None:
    tmp = ctx.path("state.npz.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, positions=atoms.get_positions(), momenta=atoms.get_momenta(), numbers=atoms.numbers)
    os.replace(tmp, ctx.path("state.npz"))
    write_json(ctx.path("state.json"), {"step": step, "rng": rng.bit_generator.state, "thermostat": _thermostat_state(dyn),
                                        "units": {"positions": "Angstrom", "momenta": "ASE (amu*Angstrom/ase_time)"}})


def _truncate(ctx: RunContext, step: int) -> None:
    traj, log = ctx.path("trajectory.extxyz"), ctx.path("log.csv")
    if traj.exists():
        frames = [a for a in read(traj, index=":") if a.info.get("step", 0) <= step]
        tmp = traj.with_name(traj.name + ".tmp")
        write(tmp, frames, format="extxyz") if frames else tmp.write_text("")
        os.replace(tmp, traj)
    if log.exists():
        with open(log) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        _write_log(log, rows, rows[0].keys() if rows else LOG_COLUMNS)


def _write_log(path: Path, rows, columns) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _append_frame(path: Path, atoms: Atoms, step: int, time_fs: float) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator

    a = atoms.copy()
    a.calc = SinglePointCalculator(a, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    a.info = {"step": step, "time_fs": time_fs}
    with open(path, "a") as f:
        write(f, a, format="extxyz")


def nve_drift(log_rows: list[dict], num_atoms: int) -> dict:
    """Linear drift (eV/atom/ps) and max deviation (meV/atom) of the total energy."""
    t = np.array([float(r["time_fs"]) for r in log_rows]) / 1000.0
    e = np.array([float(r["etot_eV"]) for r in log_rows])
    slope = np.polyfit(t, e, 1)[0] if len(t) > 2 else 0.0
    return {"drift_eV_per_atom_per_ps": float(slope / num_atoms),
            "max_energy_deviation_meV_per_atom": float(1e3 * np.max(np.abs(e - e[0])) / num_atoms)}


def run_dynamics(ctx: RunContext, atoms: Atoms, calc, ensemble: str, *, write_every: int = 1, log_every: int = 1,
                 checkpoint_every: int = 50, temperature_limit_factor: float = 5.0, force_limit_eV_A: float = 50.0,
                 initial_velocities_fn=None) -> dict:
    """Run (or resume) MD of ``atoms`` for ``ctx['steps']`` steps in total.

    Settings used from ``ctx``: ``steps``, ``timestep_fs``, ``temperature_K``, ``thermostat``
    (NVT), ``seed``, ``extrapolation`` (default ``"stop"``).  The guard stops the run —
    keeping everything written so far, with ``state.npz``/``state.json`` at the last good
    step so that ``--resume`` continues from there — when the temperature exceeds
    ``temperature_limit_factor`` × max(target, starting temperature) (at least 1000 K), any
    force exceeds ``force_limit_eV_A``, the structure leaves the model's ``max_length``, or
    (``extrapolation="stop"``) it leaves the model's training envelope.

    ``initial_velocities_fn(atoms, rng)`` replaces the default Maxwell–Boltzmann start
    (e.g. a collision velocity); it is not called when resuming.

    Returns results for summary.json (final energies and temperature, NVE drift).
    """
    steps, dt_fs, temp = int(ctx["steps"]), float(ctx["timestep_fs"]), float(ctx["temperature_K"])
    thermostat = ctx.settings.get("thermostat", "langevin")
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(int(ctx["seed"]))
    traj_path, log_path = ctx.path("trajectory.extxyz"), ctx.path("log.csv")
    start = 0
    state_file = ctx.path("state.json")
    if ctx.resume and state_file.exists():
        state = json.loads(state_file.read_text())
        with np.load(ctx.path("state.npz")) as z:
            if not np.array_equal(z["numbers"], atoms.numbers):
                raise ValueError("the saved state belongs to a different system")
            atoms.set_positions(z["positions"])
            atoms.set_momenta(z["momenta"])
        rng.bit_generator.state = state["rng"]
        start = int(state["step"])
        _truncate(ctx, start)
    else:
        for p in (traj_path, log_path):
            p.unlink(missing_ok=True)
        (initial_velocities_fn or (lambda a, r: initial_velocities(a, temp, r)))(atoms, rng)
    dyn = make_integrator(atoms, ensemble, thermostat, dt_fs, temp, rng)
    if ctx.resume and state_file.exists():
        _restore_thermostat(dyn, json.loads(state_file.read_text())["thermostat"])
    columns = LOG_COLUMNS + (["econs_eV"] if hasattr(dyn, "get_conserved_energy") else [])
    if not log_path.exists():
        _write_log(log_path, [], columns)

    def record(step: int) -> None:
        time_fs = step * dt_fs
        if step % log_every == 0:
            epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
            row = {"step": step, "time_fs": f"{time_fs:.4f}", "epot_eV": f"{epot:.8f}", "ekin_eV": f"{ekin:.8f}",
                   "etot_eV": f"{epot + ekin:.8f}", "temperature_K": f"{atoms.get_temperature():.4f}"}
            if "econs_eV" in columns:
                row["econs_eV"] = f"{_conserved(dyn, atoms):.8f}"
            with open(log_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerow(row)
        if step % write_every == 0:
            _append_frame(traj_path, atoms, step, time_fs)

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
        _save_state(ctx, atoms, 0, rng, dyn)
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
                _save_state(ctx, atoms, step, rng, dyn)
                last_good = None
            else:
                last_good = (step, atoms.get_positions(), atoms.get_momenta(), dict(rng.bit_generator.state),
                             _thermostat_state(dyn))
            bar.update(1)
        bar.close()
    except InputError as exc:  # e.g. atoms left the model's max_length, or came closer than 0.3 Å
        stop_reason = f"the structure left the model's valid range: {exc}"
    if stop_reason and last_good is not None:  # a resumable state at the last good step
        step_ok, pos, mom, rng_state, thermo = last_good
        tmp = ctx.path("state.npz.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, positions=pos, momenta=mom, numbers=atoms.numbers)
        os.replace(tmp, ctx.path("state.npz"))
        write_json(ctx.path("state.json"), {"step": step_ok, "rng": rng_state, "thermostat": thermo,
                                            "units": {"positions": "Angstrom", "momenta": "ASE (amu*Angstrom/ase_time)"}})
    if stop_reason:
        ctx.status = f"stopped: {stop_reason}"
        print(f"efa-md: {ctx.protocol} stopped — {stop_reason}; every frame up to then is kept", flush=True)
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    ctx.files.update({"trajectory": traj_path.name, "log": log_path.name})
    plot_dynamics(ctx, rows)
    last = rows[-1]
    results = {"steps_done": int(last["step"]), "final_epot_eV": float(last["epot_eV"]),
               "mean_temperature_K": float(np.mean([float(r["temperature_K"]) for r in rows[1:]] or [0.0])),
               "num_atoms": len(atoms)}
    if ensemble == "nve":
        results.update(nve_drift(rows, len(atoms)))
    return results


def plot_dynamics(ctx: RunContext, rows: list[dict]) -> None:
    import matplotlib.pyplot as plt

    t = np.array([float(r["time_fs"]) for r in rows])
    fig, ax = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in (("epot_eV", "potential"), ("ekin_eV", "kinetic"), ("etot_eV", "total")):
        y = np.array([float(r[key]) for r in rows])
        ax[0].plot(t, y - y[0], label=label)
    if rows and "econs_eV" in rows[0]:
        y = np.array([float(r["econs_eV"]) for r in rows])
        ax[0].plot(t, y - y[0], "--", label="conserved (NHC)")
    ax[0].set(ylabel="energy − initial value (eV)", title=f"{ctx.protocol}: energies")
    ax[0].legend()
    ax[1].plot(t, [float(r["temperature_K"]) for r in rows], color="C3")
    if "temperature_K" in ctx.settings:
        label = "target" if "thermostat" in ctx.settings else "initial (Maxwell–Boltzmann)"
        ax[1].axhline(float(ctx["temperature_K"]), color="k", lw=0.8, ls=":", label=label)
        ax[1].legend()
    ax[1].set(xlabel="time (fs)", ylabel="temperature (K)")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    ctx.savefig(fig, "dynamics.png")
