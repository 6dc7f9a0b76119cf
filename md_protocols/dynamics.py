"""NVE/NVT molecular dynamics with resumable output and guards, on either engine.

:func:`run_dynamics` hands the run to the engine chosen by the ``engine`` setting
(:mod:`md_protocols.engines`):

* ``ase`` (default) — ASE's integrators: ``VelocityVerlet`` (NVE), ``Langevin`` (default
  NVT), ``Bussi`` (stochastic velocity rescaling) and ``NoseHooverChainNVT``;
* ``jax`` — jax-md's integrators inside XLA (``simulate.nve``, ``nvt_langevin``,
  ``nvt_nose_hoover``), many steps per call and ``replicas`` independent trajectories per
  call; needs the ``efa-calc[md]`` extra.

Outputs in the run folder (one trajectory and log per replica, in ``replica_000/`` …
when ``replicas`` > 1; :mod:`md_protocols.engines.outputs`):

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
lost or duplicated.  The shared run loop is :class:`md_protocols.engines.base.Engine`.
"""

from __future__ import annotations

import json

from md_protocols.common import RunContext
from md_protocols.engines.base import initial_velocities
from md_protocols.engines.outputs import LOG_COLUMNS, append_frames, truncate_outputs, write_log
from md_protocols.engines.results import nve_drift
from md_protocols.settings import SettingError, check_engine

__all__ = ["run_dynamics", "check_npt", "initial_velocities", "nve_drift", "ENGINE_DEFAULTS", "append_frames",
           "truncate_outputs", "write_log", "check_engine", "LOG_COLUMNS"]

#: The engine settings every dynamics protocol takes (``--engine``, ``--replicas``,
#: ``--message-passing``).
ENGINE_DEFAULTS = {"engine": "ase", "replicas": 1, "message_passing": "auto"}


def check_npt(atoms, npt) -> None:
    """Raise :class:`SettingError` for NPT of ``atoms`` without a cell periodic in all three
    directions, or ``npt`` settings missing or out of range (damping times > 0 fs)."""
    if not atoms.pbc.all() or atoms.cell.volume <= 0:
        raise SettingError(f"NPT needs a cell periodic in all three directions with a positive volume "
                           f"(pbc={atoms.pbc.tolist()}, volume {atoms.cell.volume:g} Å³)")
    need = {"pressure_bar", "tdamp_fs", "pdamp_fs", "barostat"}
    if not isinstance(npt, dict) or not need <= set(npt):
        raise SettingError(f"NPT needs npt={{{', '.join(sorted(need))}}}; got {npt!r}")
    for key in ("tdamp_fs", "pdamp_fs"):
        if not float(npt[key]) > 0:
            raise SettingError(f"{key} = {npt[key]!r}: allowed: a number > 0 fs")
    if npt["barostat"] not in ("isotropic", "anisotropic"):
        raise SettingError(f"barostat = {npt['barostat']!r}; allowed: isotropic, anisotropic")


def run_dynamics(ctx: RunContext, atoms, calc, ensemble: str, *, write_every: int = 1, log_every: int = 1,
                 checkpoint_every: int = 50, temperature_limit_factor: float = 5.0, force_limit_eV_A: float = 50.0,
                 initial_velocities_fn=None, **engine_options) -> dict:
    """Run (or resume) MD of ``atoms`` for ``ctx['steps']`` steps in total.

    Settings used from ``ctx``: ``steps``, ``timestep_fs`` (fs), ``temperature_K`` (K),
    ``write_every``/``log_every`` (when the protocol has them; else the arguments),
    ``thermostat`` (NVT), ``seed``, ``guard`` (default ``"error"``), ``engine`` (default
    ``"ase"``) and ``replicas`` (default 1, jax engine only).  The guards
    (:mod:`md_protocols.engines.guards`) stop the run — keeping everything written so far,
    with ``state.npz``/``state.json`` at the last good step so that ``--resume`` continues
    from there — when the temperature exceeds ``temperature_limit_factor`` × max(target,
    starting temperature) (at least 1000 K), any force exceeds ``force_limit_eV_A``
    (eV/Å), the structure leaves the model's ``max_length``, two atoms come closer than
    0.3 Å, or (``guard="error"``) it leaves the model's training envelope.

    ``initial_velocities_fn(atoms, rng)`` replaces the default Maxwell–Boltzmann start
    (e.g. a collision velocity); it is not called when resuming.  ``engine_options`` go
    to the engine (jax: ``chunk_steps``, ``capacity``; ASE NPT: ``npt`` =
    {``pressure_bar`` bar, ``tdamp_fs`` fs, ``pdamp_fs`` fs, ``barostat``}).  ``ensemble``:
    ``"nve"``, ``"nvt"`` or ``"npt"`` (a cell periodic in all three directions).

    Returns results for summary.json (final energies and temperature, NVE drift).

    Raises:
      SettingError: an engine that is not installed, a thermostat it does not offer,
        replicas with the ASE engine, NPT of a structure without a full periodic cell or
        with bad barostat settings, or resuming a run made by another engine or with
        another number of replicas.
    """
    from md_protocols.engines import get_engine

    name = ctx.settings.get("engine", "ase")
    # protocols that expose them (nvt, nve, npt) let the user thin the outputs
    write_every = int(ctx.settings.get("write_every", write_every))
    log_every = int(ctx.settings.get("log_every", log_every))
    replicas = int(ctx.settings.get("replicas", 1))
    cutoff = getattr(calc, "cutoff", None)
    check_engine(name, ensemble, ctx.settings.get("thermostat", "langevin"), replicas, bool(atoms.pbc.any()),
                 atoms.cell.array, cutoff, (engine_options.get("npt") or {}).get("barostat"), atoms.pbc)
    if not float(ctx["timestep_fs"]) > 0:
        raise SettingError(f"--timestep = {ctx['timestep_fs']!r}: allowed: a number > 0 fs")
    if ensemble == "npt":
        check_npt(atoms, engine_options.get("npt"))
    state_file = ctx.path("state.json")
    if ctx.resume and state_file.exists():
        saved = json.loads(state_file.read_text())
        if saved.get("engine", "ase") != name or int(saved.get("replicas", 1)) != replicas:
            raise SettingError(f"{ctx.out} holds a run of the {saved.get('engine', 'ase')} engine with "
                               f"{saved.get('replicas', 1)} replica(s); resume it with --engine "
                               f"{saved.get('engine', 'ase')} --replicas {saved.get('replicas', 1)}")
    engine = get_engine(name)(ctx, atoms, calc, ensemble, write_every=write_every, log_every=log_every,
                              checkpoint_every=checkpoint_every, temperature_limit_factor=temperature_limit_factor,
                              force_limit_eV_A=force_limit_eV_A, initial_velocities_fn=initial_velocities_fn,
                              **engine_options)
    return engine.run()
