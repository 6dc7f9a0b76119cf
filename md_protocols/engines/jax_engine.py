"""The jax engine: jax-md's integrators inside XLA, many steps and replicas per call.

``efa-md run cumulene-nve --engine jax [--replicas R]`` runs R independent trajectories of
the molecule (replica r: its own Maxwell–Boltzmann velocities, drawn one replica after
the other from ``numpy.random.default_rng(seed)``, so replica 0 starts exactly as the ASE
engine does; its own Langevin noise key ``fold_in(PRNGKey(seed), r)``) in one vmapped
XLA call of ``chunk_steps`` steps (:class:`efa_calc.md_jax.JaxMD`).  Frames and log rows
are written between chunks, in the ASE engine's formats (:mod:`md_protocols.dynamics`);
with R > 1 each replica writes ``replica_XXX/trajectory.extxyz`` and ``replica_XXX/log.csv``.

Thermostats: ``langevin`` (jax-md's BAOAB ``nvt_langevin``, friction 0.01 fs⁻¹; unlike
the ASE engine the centre of mass is not fixed, so temperatures count 3N degrees of
freedom) and ``nose-hoover`` (``nvt_nose_hoover``, chain of 3, τ = 100 fs; conserved
energy in ``econs_eV``).  ``bussi`` is ASE-only.

Pair list: built on the device at every step (dense masked search, see
:mod:`efa_calc.md_jax`); after each chunk the overflow flag is read, and a chunk that
overflowed is discarded and redone from its starting state with a larger capacity (one
more compilation, logged).  No chunk computed with a truncated list is ever kept.

Guard: the same as the ASE engine's (temperature, force, max_length, atoms closer than
0.3 Å, training envelope), evaluated on the device at every step; a step that trips it is
not kept, every replica stops at the last good step, and ``state.npz``/``state.json`` hold
that step for ``--resume``.

State files: ``state.npz`` holds ``positions`` (Å) and ``momenta`` (amu·Å/ase_time),
shaped (N, 3) for one replica (as the ASE engine's) and (R, N, 3) for several, ``numbers``
and the thermostat arrays (``rng`` (R, 2) uint32 Langevin keys, or ``chain_*`` (R, 3)
Nosé–Hoover chain positions/momenta/masses in ASE units); ``state.json`` holds ``step``,
``engine``, ``replicas``, ``pair_capacity`` and ``units``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings

import numpy as np
from ase import Atoms, units
from tqdm.auto import tqdm

from efa_calc.errors import InputError
from md_protocols.common import RunContext, SettingError, write_json

NAME = "jax"
THERMOSTATS = ("langevin", "nose-hoover")
REPLICAS = True
#: Steps per XLA call (also how often frames, log rows and the state are written).
CHUNK_STEPS = 100

log = logging.getLogger("efa_calc")


def available() -> str | None:
    try:
        import jax_md  # noqa: F401
    except ImportError as exc:
        return f"jax-md is not installed ({exc}); install the md extra: pip install 'efa-calc[md]'"
    return None


def _folders(ctx: RunContext, replicas: int):
    if replicas == 1:
        return [ctx.out]
    return [ctx.out / f"replica_{r:03d}" for r in range(replicas)]


def _save_state(ctx: RunContext, md, state, step: int, numbers, replicas: int) -> None:
    pos, mom = np.asarray(state.position, np.float64), np.asarray(state.momentum, np.float64)
    if replicas == 1:
        pos, mom = pos[0], mom[0]
    arrays = {"positions": pos, "momenta": mom, "numbers": np.asarray(numbers)}
    arrays.update({f"thermostat_{k}": v for k, v in md.thermostat_arrays(state).items()})
    tmp = ctx.path("state.npz.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, ctx.path("state.npz"))
    write_json(ctx.path("state.json"), {
        "step": step, "engine": NAME, "replicas": replicas, "pair_capacity": int(md.capacity),
        "units": {"positions": "Angstrom", "momenta": "ASE (amu*Angstrom/ase_time)",
                  "thermostat_chain": "ASE units (eV, amu*Angstrom^2/ase_time^2)"}})


def _write(folders, symbols, dt_fs, recs, valid: int, start: int, interval: int, write_every: int,
           log_every: int, columns: list, temperature_dof: int) -> None:
    """Append the first ``valid`` records of a chunk (steps start + interval·(k+1))."""
    from md_protocols.dynamics import append_frames

    if valid <= 0:
        return
    steps = start + interval * (np.arange(valid) + 1)
    for r, folder in enumerate(folders):
        sel = np.flatnonzero(steps % write_every == 0)
        if len(sel):
            append_frames(folder / "trajectory.extxyz", symbols, recs["positions"][sel, r], recs["momenta"][sel, r],
                          recs["forces"][sel, r], recs["epot"][sel, r], steps[sel], steps[sel] * dt_fs)
        rows = []
        for k in np.flatnonzero(steps % log_every == 0):
            epot, ekin = float(recs["epot"][k, r]), float(recs["ekin"][k, r])
            row = {"step": int(steps[k]), "time_fs": f"{steps[k] * dt_fs:.4f}", "epot_eV": f"{epot:.8f}",
                   "ekin_eV": f"{ekin:.8f}", "etot_eV": f"{epot + ekin:.8f}",
                   "temperature_K": f"{2 * ekin / (temperature_dof * units.kB):.4f}"}
            if "econs_eV" in columns:
                row["econs_eV"] = f"{float(recs['econs'][k, r]):.8f}"
            rows.append(row)
        if rows:
            with open(folder / "log.csv", "a", newline="") as f:
                csv.DictWriter(f, fieldnames=columns).writerows(rows)


def _stop_message(stop: dict, start: int, md, calc, numbers, mode: str, t_limit: float, f_limit: float,
                  stop_flags: int, replicas: int) -> str:
    """Readable reason for the step the chunk rejected (same wording as the ASE engine)."""
    from efa_calc.envelope import check_physical_distances
    from efa_calc.md_jax import FLAGS
    from efa_calc.validation import check_structure

    step = start + stop["step"]
    msgs = []
    for r in np.flatnonzero(stop["flags"] & stop_flags):
        bits = int(stop["flags"][r])
        who = f"replica {r}: " if replicas > 1 else ""
        if bits & FLAGS["temperature"]:
            msg = f"temperature {stop['temperature_K'][r]:.0f} K exceeded the guard of {t_limit:.0f} K at step {step}"
        elif bits & FLAGS["force"]:
            msg = (f"a force of {stop['fmax_eV_A'][r]:.1f} eV/Å exceeded the guard of {f_limit} eV/Å "
                   f"at step {step}")
        elif bits & (FLAGS["max_length"] | FLAGS["too_close"]):
            pos = stop["positions"][r]
            try:
                check_physical_distances(pos)
                check_structure(numbers, pos, False, calc.species, calc.max_length, True)
                detail = f"largest distance {stop['extent_A'][r]:.2f} Å, smallest {stop['min_distance_A'][r]:.3f} Å"
            except InputError as exc:
                detail = str(exc)
            msg = f"the structure left the model's valid range at step {step}: {detail}"
        else:
            env = calc.checkpoints[0].envelope
            pos = stop["positions"][r]
            reasons = [t for _, t in env.check_structure(numbers, pos)] if env is not None else []
            reasons += [t for _, t in env.check_energy((stop["epot_eV"][r] - md.shift) / len(numbers))] if env else []
            msg = (f"the structure left the model's training envelope at step {step}: "
                   f"{'; '.join(reasons) or 'flagged on the device'} "
                   "(resume with --set extrapolation=warn to go on regardless)")
        msgs.append(who + msg)
    return "; ".join(msgs)


def run(ctx: RunContext, atoms: Atoms, calc, ensemble: str, *, write_every: int = 1, log_every: int = 1,
        checkpoint_every: int = 50, temperature_limit_factor: float = 5.0, force_limit_eV_A: float = 50.0,
        initial_velocities_fn=None, chunk_steps: int | None = None, capacity: int | None = None) -> dict:
    """The jax engine's :func:`~md_protocols.dynamics.run_dynamics` (same arguments).

    Extra options: ``chunk_steps`` (steps per XLA call, default :data:`CHUNK_STEPS`; the
    state is saved after every chunk, so ``checkpoint_every`` is not used) and
    ``capacity`` (initial pair slots; default from the starting structure with 25 %
    headroom; too small is fine: the list grows).
    """
    import jax

    from efa_calc.md_jax import FLAGS, JaxMD
    from md_protocols.dynamics import LOG_COLUMNS, finish, truncate_outputs, write_log
    from md_protocols.engines.ase_engine import initial_velocities

    if calc.is_committee:
        raise SettingError("the jax engine runs one model, not a committee; use --engine ase for committees")
    steps, dt_fs, temp = int(ctx["steps"]), float(ctx["timestep_fs"]), float(ctx["temperature_K"])
    thermostat = ctx.settings.get("thermostat", "langevin")
    replicas = int(ctx.settings.get("replicas", 1))
    seed = int(ctx["seed"])
    mode = ctx.settings.get("extrapolation", "stop")
    ckpt = calc.checkpoints[0]
    atoms = atoms.copy()
    atoms.set_constraint()
    numbers = atoms.numbers.copy()
    symbols = atoms.get_chemical_symbols()
    n = len(atoms)
    folders = _folders(ctx, replicas)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    interval = math.gcd(int(write_every), int(log_every))
    chunk = int(chunk_steps or CHUNK_STEPS)
    chunk = interval * max(1, round(chunk / interval))
    md = JaxMD(ckpt, numbers, atoms.get_masses(), ensemble, thermostat, timestep_fs=dt_fs, temperature_K=temp,
               dtype=calc.dtype, capacity=capacity, interval=interval,
               envelope=ckpt.envelope if mode != "off" else None, max_length=calc.max_length,
               message_passing=calc.potentials[0].config.message_passing)  # (issue 24)
    columns = LOG_COLUMNS + (["econs_eV"] if ensemble == "nvt" and thermostat == "nose-hoover" else [])
    state_file = ctx.path("state.json")
    with jax.enable_x64(md.x64):
        keys = np.stack([np.asarray(jax.random.fold_in(jax.random.PRNGKey(seed), r), np.uint32)
                         for r in range(replicas)])
    if ctx.resume and state_file.exists():
        saved = json.loads(state_file.read_text())
        with np.load(ctx.path("state.npz")) as z:
            if not np.array_equal(z["numbers"], numbers):
                raise ValueError("the saved state belongs to a different system")
            positions = z["positions"].reshape(replicas, n, 3)
            momenta = z["momenta"].reshape(replicas, n, 3)
            thermo = {k[len("thermostat_"):]: z[k] for k in z.files if k.startswith("thermostat_")}
        start = int(saved["step"])
        md.capacity = max(int(saved.get("pair_capacity", 0)), 0) or None
        for folder in folders:
            truncate_outputs(folder, start)
    else:
        for folder in folders:
            for name in ("trajectory.extxyz", "log.csv"):
                (folder / name).unlink(missing_ok=True)
        atoms.calc = calc  # the starting structure is checked by the calculator, as with ASE
        atoms.get_potential_energy()
        ext = (calc.results or {}).get("extrapolation") or {}
        if mode == "stop" and ext.get("status") == "outside":
            raise InputError(f"the starting structure is outside the model's training envelope: "
                             f"{'; '.join(ext['reasons'])} (--set extrapolation=warn runs it anyway)")
        rng = np.random.default_rng(seed)
        positions, momenta = [], []
        for _ in range(replicas):
            a = atoms.copy()
            (initial_velocities_fn or (lambda x, g: initial_velocities(x, temp, g)))(a, rng)
            positions.append(a.positions.copy())
            momenta.append(a.get_momenta())
        positions, momenta = np.stack(positions), np.stack(momenta)
        thermo = None
        start = 0
    if capacity is not None and md.capacity is None:
        md.capacity = capacity
    state = md.init(positions, momenta, seeds=keys, thermostat_state=thermo)
    for folder in folders:
        if not (folder / "log.csv").exists():
            write_log(folder / "log.csv", [], columns)
    dof = 3 * n
    if start == 0:  # step 0: the calculator's energy and forces of the (common) starting structure
        epot0 = np.full(replicas, calc.results["energy"])
        ekin0 = np.sum(momenta ** 2 / (2 * atoms.get_masses()[None, :, None]), axis=(1, 2))
        recs = {"positions": positions[None], "momenta": momenta[None],
                "forces": np.broadcast_to(calc.results["forces"], positions.shape)[None], "epot": epot0[None],
                "ekin": ekin0[None], "econs": (epot0 + ekin0)[None]}  # a Nosé–Hoover chain starts at rest
        _write(folders, symbols, dt_fs, recs, 1, -1, 1, write_every, log_every, columns, dof)
        _save_state(ctx, md, state, 0, numbers, replicas)
    ekin0 = np.sum(np.asarray(state.momentum, np.float64) ** 2 / (2 * np.asarray(state.mass, np.float64)), axis=(1, 2))
    t_start = float(np.max(2 * ekin0 / (dof * units.kB)))
    t_limit = max(temperature_limit_factor * max(temp, t_start, 1.0), 1000.0)
    stop_flags = FLAGS["temperature"] | FLAGS["force"] | FLAGS["too_close"]
    if calc.strict:
        stop_flags |= FLAGS["max_length"]
    if mode == "stop":
        stop_flags |= FLAGS["envelope"] | FLAGS["envelope_energy"]
    warned: set = set()
    stop_reason = None
    step = start
    bar = tqdm(total=steps, initial=start, desc=f"{ctx.protocol}", unit="step", disable=not ctx.progress)
    while step < steps:
        # realign records to multiples of the interval (only after resuming a run that ended between them)
        k_int = interval if step % interval == 0 else 1
        length = chunk if k_int == interval else 1
        todo = min(length, steps - step)
        out = md.run_chunk(state, length, todo, t_limit, force_limit_eV_A, stop_flags, interval=k_int)
        if out.overflow:
            old = md.capacity
            md.grow()
            log.info("jax MD: the pair list outgrew its %d slots within steps %d-%d; chunk redone with %d "
                     "(one new compilation)", old, step + 1, step + todo, md.capacity)
            continue  # the overflowed chunk is discarded: redo it from the same state
        _write(folders, symbols, dt_fs, out.records, out.steps_done // k_int, step, k_int, write_every, log_every,
               columns, dof)
        state = out.state
        if out.stop is not None:
            stop_reason = _stop_message(out.stop, step, md, calc, numbers, mode, t_limit, force_limit_eV_A,
                                        stop_flags, replicas)
        step += out.steps_done
        _save_state(ctx, md, state, step, numbers, replicas)
        bar.update(out.steps_done)
        for name in ("envelope", "envelope_energy", "max_length"):
            if np.any(out.seen & FLAGS[name]) and not (stop_flags & FLAGS[name]) and name not in warned:
                warned.add(name)
                what = ("the model's max_length (strict=False)" if name == "max_length"
                        else "the model's training envelope")
                warnings.warn(f"jax MD: a structure left {what} within steps {step - out.steps_done + 1}-{step}; "
                              "predictions there are extrapolated", RuntimeWarning, stacklevel=2)
        if stop_reason:
            break
    bar.close()
    extra = {"engine": NAME, "pair_capacity": int(md.capacity), "pair_capacity_growths": md.growths,
             "chunk_steps": chunk}
    return finish(ctx, ensemble, folders, n, stop_reason, extra)
