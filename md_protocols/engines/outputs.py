"""The files of an MD run: trajectory, log and the resumable state (one set per replica folder).

* ``trajectory.extxyz`` — frames with positions (Å), momenta (amu·Å/ase_time), forces
  (eV/Å), energy (eV), ``step`` and ``time_fs`` (fs) in the frame info and, for a periodic
  run, the cell (``Lattice``, rows a, b, c in Å) and ``pbc``, byte-identical to
  ``ase.io.write(..., format="extxyz")`` of such Atoms (:func:`frames_text`);
* ``log.csv`` — :data:`LOG_COLUMNS` (+ ``econs_eV``, a conserved energy; + :data:`CELL_COLUMNS`
  ``volume_A3`` Å³, ``density_g_cm3`` g/cm³, ``pressure_bar`` bar for a periodic run) per
  logged step;
* ``state.npz`` + ``state.json`` — ``positions`` (Å), ``momenta`` (amu·Å/ase_time),
  ``numbers`` (a periodic run: ``cell``, Å) and the engine's arrays; ``step``, ``engine``
  and the engine's fields, and
  ``units`` (:func:`save_state`, :func:`load_state`), written atomically.

Resume cuts the trajectory and log back to the state's step (:func:`truncate_outputs`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from efa_calc.io import atomic_write

__all__ = ["LOG_COLUMNS", "CELL_COLUMNS", "write_log", "append_rows", "truncate_outputs", "frames_text", "append_frames",
           "save_state", "load_state", "STATE_UNITS"]

LOG_COLUMNS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
#: the log columns of a periodic run: volume (Å³), density (g/cm³), pressure (bar)
CELL_COLUMNS = ["volume_A3", "density_g_cm3", "pressure_bar"]
#: ``units`` of state.json (an engine may add entries)
STATE_UNITS = {"positions": "Angstrom", "momenta": "ASE (amu*Angstrom/ase_time)"}

_FRAME_HEADER = 'Properties=species:S:1:pos:R:3:momenta:R:3:forces:R:3 step={} time_fs={!r} energy={!r} pbc="{}"\n'


def _csv_text(rows, columns, header: bool) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(columns))
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_log(path: Path, rows, columns) -> None:
    """Write ``log.csv`` (header + ``rows``) atomically."""
    atomic_write(path, _csv_text(rows, columns, True), fsync=False)


def append_rows(path: Path, rows, columns) -> None:
    """Append log rows (dicts keyed by ``columns``) to ``path`` in one write."""
    if rows:
        with open(path, "a", newline="") as f:
            f.write(_csv_text(rows, columns, False))


def truncate_outputs(folder: Path, step: int) -> None:
    """Cut ``trajectory.extxyz`` and ``log.csv`` in ``folder`` back to frames/rows ≤ ``step``."""
    traj, log = folder / "trajectory.extxyz", folder / "log.csv"
    if traj.exists():
        from ase.io import read, write

        frames = [a for a in read(traj, index=":") if a.info.get("step", 0) <= step]
        buf = io.StringIO()
        if frames:
            write(buf, frames, format="extxyz")
        atomic_write(traj, buf.getvalue(), fsync=False)
    if log.exists():
        with open(log) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        write_log(log, rows, rows[0].keys() if rows else LOG_COLUMNS)


def frames_text(symbols, positions, momenta, forces, energies, steps, times_fs, cells=None, pbc=None) -> str:
    """extxyz text of K frames, byte-identical to ``ase.io.write(..., format="extxyz")`` of
    Atoms with momenta and a SinglePointCalculator (energy, forces) and info
    ``{"step", "time_fs"}``.  Arrays (K, N, 3): Å, amu·Å/ase_time, eV/Å; energies (K,) eV;
    ``cells`` (K, 3, 3) Å (rows a, b, c) with ``pbc`` (3,) bool for a periodic run."""
    n = len(symbols)
    sym = [f"{s:<2s}" for s in symbols]
    flags = " ".join("T" if p else "F" for p in (pbc if pbc is not None else (False,) * 3))
    out = []
    for k in range(len(steps)):
        block = np.concatenate([positions[k], momenta[k], forces[k]], axis=1).astype(np.float64)
        out.append(f"{n}\n")
        if cells is not None:  # ase writes the cell rows as str(float), a b c in order
            out.append('Lattice="' + " ".join(str(float(v)) for v in np.asarray(cells[k]).reshape(9)) + '" ')
        out.append(_FRAME_HEADER.format(int(steps[k]), float(times_fs[k]), float(energies[k]), flags))
        out.extend(s + "".join(f" {v:16.8f}" for v in row) + "\n" for s, row in zip(sym, block))
    return "".join(out)


def append_frames(path: Path, symbols, positions, momenta, forces, energies, steps, times_fs, cells=None,
                  pbc=None) -> None:
    """Append K frames to ``path`` in one write (see :func:`frames_text`)."""
    text = frames_text(symbols, positions, momenta, forces, energies, steps, times_fs, cells, pbc)
    with open(path, "a") as f:
        f.write(text)


def save_state(out: Path, arrays: dict, fields: dict, units: dict | None = None) -> None:
    """Write ``state.npz`` (``arrays``, and the fields as JSON text in ``_fields``) and
    ``state.json`` (``fields`` + ``units``, for people and tools) in ``out``, each atomically.

    The npz alone is the state: a run killed between the two writes leaves a state.json one
    checkpoint behind the npz, and :func:`load_state` reads the fields from the npz, so the
    arrays and the fields (step, RNG, thermostat) always belong together."""
    from md_protocols.common import _default, write_json

    doc = {**fields, "units": {**STATE_UNITS, **(units or {})}}
    buf = io.BytesIO()
    np.savez(buf, **arrays, _fields=np.array(json.dumps(doc, default=_default)))
    atomic_write(out / "state.npz", buf.getvalue(), fsync=False)
    write_json(out / "state.json", doc)


def load_state(out: Path, numbers) -> tuple[dict, dict]:
    """``(fields of state.json, arrays of state.npz)`` of the run in ``out``.

    Raises:
      ValueError: the state belongs to another system (other atomic numbers).
    """
    with np.load(out / "state.npz") as z:
        if not np.array_equal(z["numbers"], numbers):
            raise ValueError("the saved state belongs to a different system")
        arrays = {k: z[k] for k in z.files if k != "_fields"}
        # states written before the fields moved into the npz: state.json
        fields = json.loads(str(z["_fields"]) if "_fields" in z.files else (out / "state.json").read_text())
    return fields, arrays
