"""NVE/NVT molecular dynamics with resumable output and a blow-up guard, on either engine.

:func:`run_dynamics` hands the run to the engine chosen by the ``engine`` setting
(:mod:`md_protocols.engines`):

* ``ase`` (default) — ASE's integrators: ``VelocityVerlet`` (NVE), ``Langevin`` (default
  NVT), ``Bussi`` (stochastic velocity rescaling) and ``NoseHooverChainNVT``;
* ``jax`` — jax-md's integrators inside XLA (``simulate.nve``, ``nvt_langevin``,
  ``nvt_nose_hoover``), many steps per call and ``replicas`` independent trajectories per
  call; needs the ``efa-calc[md]`` extra.

Outputs in the run folder (one trajectory and log per replica, in ``replica_000/`` …
when ``replicas`` > 1):

* ``trajectory.extxyz`` — every ``write_every`` steps: positions (Å), momenta
  (amu·Å/ase_time), energy (eV), forces (eV/Å), ``step`` and ``time_fs`` in the frame info;
* ``log.csv`` — ``step, time_fs, epot_eV, ekin_eV, etot_eV, temperature_K`` (+ the
  Nosé–Hoover conserved energy ``econs_eV``) every ``log_every`` steps;
* ``state.npz`` + ``state.json`` — positions (Å), momenta, step, RNG and thermostat
  state, rewritten atomically (every ``checkpoint_every`` steps with ASE, after every
  chunk with jax) and at the end.

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
from ase.io import read

from md_protocols.common import RunContext, SettingError

__all__ = ["run_dynamics", "initial_velocities", "make_integrator", "nve_drift", "ENGINE_DEFAULTS",
           "append_frames", "truncate_outputs", "write_log"]

LOG_COLUMNS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
#: The engine settings every dynamics protocol takes (``--engine``, ``--replicas``,
#: ``--message-passing``).
ENGINE_DEFAULTS = {"engine": "ase", "replicas": 1, "message_passing": "auto"}


def initial_velocities(atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann velocities at ``temperature_K`` with zero total and angular momentum."""
    from md_protocols.engines.ase_engine import initial_velocities as f

    f(atoms, temperature_K, rng)


def make_integrator(*args, **kwargs):
    """The ASE integrator (:func:`md_protocols.engines.ase_engine.make_integrator`)."""
    from md_protocols.engines.ase_engine import make_integrator as f

    return f(*args, **kwargs)


# ---------------------------------------------------------------------- output files
def write_log(path: Path, rows, columns) -> None:
    """Write ``log.csv`` (header + ``rows``) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def truncate_outputs(folder: Path, step: int) -> None:
    """Cut ``trajectory.extxyz`` and ``log.csv`` in ``folder`` back to frames/rows ≤ ``step``."""
    traj, log = folder / "trajectory.extxyz", folder / "log.csv"
    if traj.exists():
        from ase.io import write

        frames = [a for a in read(traj, index=":") if a.info.get("step", 0) <= step]
        tmp = traj.with_name(traj.name + ".tmp")
        write(tmp, frames, format="extxyz") if frames else tmp.write_text("")
        os.replace(tmp, traj)
    if log.exists():
        with open(log) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        write_log(log, rows, rows[0].keys() if rows else LOG_COLUMNS)


_FRAME_HEADER = 'Properties=species:S:1:pos:R:3:momenta:R:3:forces:R:3 step={} time_fs={!r} energy={!r} pbc="F F F"\n'


def frames_text(symbols, positions, momenta, forces, energies, steps, times_fs) -> str:
    """extxyz text of K frames, byte-identical to ``ase.io.write(..., format="extxyz")`` of
    Atoms with momenta and a SinglePointCalculator (energy, forces) and info
    ``{"step", "time_fs"}``.  Arrays (K, N, 3): Å, amu·Å/ase_time, eV/Å; energies (K,) eV."""
    n = len(symbols)
    sym = [f"{s:<2s}" for s in symbols]
    out = []
    for k in range(len(steps)):
        block = np.concatenate([positions[k], momenta[k], forces[k]], axis=1).astype(np.float64)
        out.append(f"{n}\n")
        out.append(_FRAME_HEADER.format(int(steps[k]), float(times_fs[k]), float(energies[k])))
        out.extend(s + "".join(f" {v:16.8f}" for v in row) + "\n" for s, row in zip(sym, block))
    return "".join(out)


def append_frames(path: Path, symbols, positions, momenta, forces, energies, steps, times_fs) -> None:
    """Append K frames to ``path`` in one write (see :func:`frames_text`)."""
    text = frames_text(symbols, positions, momenta, forces, energies, steps, times_fs)
    with open(path, "a") as f:
        f.write(text)


def nve_drift(log_rows: list[dict], num_atoms: int) -> dict:
    """Linear drift (eV/atom/ps) and max deviation (meV/atom) of the total energy."""
    t = np.array([float(r["time_fs"]) for r in log_rows]) / 1000.0
    e = np.array([float(r["etot_eV"]) for r in log_rows])
    slope = np.polyfit(t, e, 1)[0] if len(t) > 2 else 0.0
    return {"drift_eV_per_atom_per_ps": float(slope / num_atoms),
            "max_energy_deviation_meV_per_atom": float(1e3 * np.max(np.abs(e - e[0])) / num_atoms)}


def _results(rows: list[dict], ensemble: str, num_atoms: int) -> dict:
    last = rows[-1]
    res = {"steps_done": int(last["step"]), "final_epot_eV": float(last["epot_eV"]),
           "mean_temperature_K": float(np.mean([float(r["temperature_K"]) for r in rows[1:]] or [0.0])),
           "num_atoms": num_atoms}
    if ensemble == "nve":
        res.update(nve_drift(rows, num_atoms))
    return res


def finish(ctx: RunContext, ensemble: str, folders: list[Path], num_atoms: int, stop_reason: str | None,
           extra: dict | None = None) -> dict:
    """Common end of a run: status, plot of the first replica, results for summary.json
    (those of the first replica; with several replicas also ``replicas`` and
    ``per_replica``)."""
    if stop_reason:
        ctx.status = f"stopped: {stop_reason}"
        print(f"efa-md: {ctx.protocol} stopped — {stop_reason}; every frame up to then is kept", flush=True)
    per = []
    for folder in folders:
        with open(folder / "log.csv") as f:
            per.append(list(csv.DictReader(f)))
    rel = [str((folder / "x").relative_to(ctx.out).parent) for folder in folders]
    if len(folders) == 1:
        ctx.files.update({"trajectory": "trajectory.extxyz", "log": "log.csv"})
    else:
        ctx.files.update({"trajectory": [f"{r}/trajectory.extxyz" for r in rel], "log": [f"{r}/log.csv" for r in rel]})
    plot_dynamics(ctx, per[0])
    results = _results(per[0], ensemble, num_atoms)
    if len(folders) > 1:
        results["replicas"] = len(folders)
        results["per_replica"] = [_results(rows, ensemble, num_atoms) for rows in per]
    results.update(extra or {})
    return results


def run_dynamics(ctx: RunContext, atoms, calc, ensemble: str, *, write_every: int = 1, log_every: int = 1,
                 checkpoint_every: int = 50, temperature_limit_factor: float = 5.0, force_limit_eV_A: float = 50.0,
                 initial_velocities_fn=None, **engine_options) -> dict:
    """Run (or resume) MD of ``atoms`` for ``ctx['steps']`` steps in total.

    Settings used from ``ctx``: ``steps``, ``timestep_fs`` (fs), ``temperature_K`` (K),
    ``thermostat`` (NVT), ``seed``, ``extrapolation`` (default ``"stop"``), ``engine``
    (default ``"ase"``) and ``replicas`` (default 1, jax engine only).  The guard stops
    the run — keeping everything written so far, with ``state.npz``/``state.json`` at the
    last good step so that ``--resume`` continues from there — when the temperature
    exceeds ``temperature_limit_factor`` × max(target, starting temperature) (at least
    1000 K), any force exceeds ``force_limit_eV_A`` (eV/Å), the structure leaves the
    model's ``max_length``, or (``extrapolation="stop"``) it leaves the model's training
    envelope.

    ``initial_velocities_fn(atoms, rng)`` replaces the default Maxwell–Boltzmann start
    (e.g. a collision velocity); it is not called when resuming.  ``engine_options`` go
    to the engine (jax: ``chunk_steps``, ``capacity``).

    Returns results for summary.json (final energies and temperature, NVE drift).

    Raises:
      SettingError: an engine that is not installed, a thermostat it does not offer,
        replicas with the ASE engine, or resuming a run made by another engine or with
        another number of replicas.
    """
    from md_protocols.engines import get_engine

    name = ctx.settings.get("engine", "ase")
    replicas = int(ctx.settings.get("replicas", 1))
    check_engine(name, ensemble, ctx.settings.get("thermostat", "langevin"), replicas)
    state_file = ctx.path("state.json")
    if ctx.resume and state_file.exists():
        saved = json.loads(state_file.read_text())
        if saved.get("engine", "ase") != name or int(saved.get("replicas", 1)) != replicas:
            raise SettingError(f"{ctx.out} holds a run of the {saved.get('engine', 'ase')} engine with "
                               f"{saved.get('replicas', 1)} replica(s); resume it with --engine "
                               f"{saved.get('engine', 'ase')} --replicas {saved.get('replicas', 1)}")
    engine = get_engine(name)
    return engine.run(ctx, atoms, calc, ensemble, write_every=write_every, log_every=log_every,
                      checkpoint_every=checkpoint_every, temperature_limit_factor=temperature_limit_factor,
                      force_limit_eV_A=force_limit_eV_A, initial_velocities_fn=initial_velocities_fn,
                      **engine_options)


def check_engine(name: str, ensemble: str, thermostat: str, replicas: int) -> None:
    """Raise :class:`SettingError` for an engine/thermostat/replicas combination that cannot run."""
    from md_protocols.engines import ENGINES, get_engine

    if name not in ENGINES:
        raise SettingError(f"--engine = {name!r}; allowed: {', '.join(ENGINES)}")
    engine = get_engine(name)
    why = engine.available()
    if why:
        raise SettingError(f"--engine = {name!r}: {why}")
    if ensemble == "nvt" and thermostat not in engine.THERMOSTATS:
        raise SettingError(f"--thermostat = {thermostat!r} is not offered by the {name} engine; it offers "
                           f"{', '.join(engine.THERMOSTATS)}")
    if replicas > 1 and not getattr(engine, "REPLICAS", False):
        raise SettingError(f"--replicas = {replicas}: the {name} engine runs one trajectory; use --engine jax")


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
