"""Plumbing shared by every protocol: settings, the output folder, summary.json, plots.

A protocol module defines ``NAME``, ``DESCRIPTION``, ``DEFAULTS`` (a dict of settings) and
``run(ctx) -> dict``; :func:`execute` merges command-line settings over the defaults, makes
the output folder, calls ``run`` and writes ``summary.json``::

    {"protocol": ..., "model": ..., "steps": ..., "timestep_fs": ..., "temperature_K": ...,
     "thermostat": ..., "dtype": ..., "seed": ..., <other settings>,
     "status": "completed" | "stopped: <reason>", "wall_time_s": ...,
     "versions": {...}, "results": {...},
     "trajectory": "trajectory.extxyz", "log": "log.csv", "plots": [...], "scan": ...}

Units: eV, Å, fs, K (and cm⁻¹ for frequencies), as the key names say.

Every setting is validated before any work starts (:func:`validate_settings`): its type
and allowed range come from :data:`SETTINGS` (or a protocol's own ``SETTINGS``), and a bad
value is a :class:`SettingError` naming the setting, the value and the allowed range.  The
model must resolve, a ``structure`` file must be readable and hold only the model's
elements, and the output folder must be writable.  A run that fails with an exception
leaves nothing behind; a run stopped by a guard keeps its frames and a resumable state.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["RunContext", "execute", "make_calculator", "versions", "write_json", "Setting", "SETTINGS",
           "SettingError", "validate_settings", "setting_spec", "read_structure", "option_name"]


class SettingError(ValueError):
    """A protocol setting (command-line argument) with a bad value."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """Type, allowed range and meaning of a protocol setting.

    ``kind`` is ``int``, ``float``, ``str``, ``bool``, ``"path"``, ``"model"`` or
    ``"indices"`` (comma-separated atom indices); ``lo``/``hi`` bound numbers (``lo_open``:
    strictly above ``lo``); ``choices`` lists allowed strings; ``count`` fixes the number of
    indices.
    """

    kind: Any
    help: str
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple = ()
    count: int | None = None

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind == "indices":
            return f"{self.count} comma-separated atom indices (0-based), e.g. " + ",".join(map(str, range(self.count or 1)))
        if self.kind in (int, float):
            what = "an integer" if self.kind is int else "a number"
            fmt = (lambda v: f"{int(v):,}".replace(",", " ")) if self.kind is int else (lambda v: f"{v:g}")
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '≥'} {fmt(self.lo)}"
            hi = "" if self.hi is None else f"≤ {fmt(self.hi)}"
            rng = " and ".join(x for x in (lo, hi) if x)
            return f"{what}{' ' + rng if rng else ''}{' ' + self.unit if self.unit else ''}"
        if self.kind is bool:
            return "true or false"
        if self.kind == "path":
            return "a readable structure file (any format ase.io.read understands, e.g. .xyz, .extxyz, .pdb)"
        if self.kind == "model":
            return "a bundled model name (efa-calc models) or a checkpoint directory"
        return "a string"


#: Settings shared by the protocols (a protocol's own ``SETTINGS`` adds to or overrides these).
SETTINGS: dict[str, Setting] = {
    "model": Setting("model", "bundled model name or checkpoint directory"),
    "structure": Setting("path", "starting structure: any file ase.io.read understands (the last frame is used)"),
    "steps": Setting(int, "MD steps in total (also when resuming)", "", 1, 100_000_000),
    "timestep_fs": Setting(float, "time step", "fs", 0, 10, lo_open=True),
    "temperature_K": Setting(float, "temperature (NVT target; NVE: of the initial Maxwell–Boltzmann velocities)",
                             "K", 0, 10_000, lo_open=True),
    "thermostat": Setting(str, "NVT thermostat", choices=("langevin", "bussi", "nose-hoover")),
    "engine": Setting(str, "MD engine: ase (ASE's integrators, one step per call; every thermostat) or jax "
                           "(jax-md inside XLA, many steps and replicas per call; langevin or nose-hoover; "
                           "needs pip install 'efa-calc[md]')", choices=("ase", "jax")),
    "replicas": Setting(int, "independent trajectories (own velocities and noise) run together in one batched "
                             "call; jax engine only; outputs in replica_000/ ...", "", 1, 4096),
    "dtype": Setting(str, "floating-point precision of the model", choices=("float32", "float64")),
    "message_passing": Setting(str, "message-passing kernel: auto (native on CPUs, the GPU default on GPUs), native, "
                                    "or cuequivariance (needs pip install 'efa-calc[cuequivariance]' or "
                                    "'efa-calc[gpu]')", choices=("auto", "native", "cuequivariance")),
    "seed": Setting(int, "random seed (velocities, Langevin noise)", "", 0, 2**32 - 1),
    "extrapolation": Setting(str, "when a structure leaves the model's training envelope: stop (resumable), "
                                  "warn and go on, or off (no check)", choices=("stop", "warn", "off")),
    "fmax": Setting(float, "force convergence threshold", "eV/Å", 0, 100, lo_open=True),
    "max_steps": Setting(int, "largest number of optimiser steps", "", 1, 10_000_000),
    "optimizer": Setting(str, "ASE optimiser", choices=("BFGS", "LBFGS", "FIRE", "bfgs", "lbfgs", "fire")),
    "n_carbons": Setting(int, "number of carbon atoms of the cumulene CnH4", "", 2, 40),
    "displacement_A": Setting(float, "finite displacement of phonopy", "Å", 0, 0.5, lo_open=True),
    "box_A": Setting(float, "edge of the vacuum box handed to phonopy", "Å", 0, 10_000, lo_open=True),
    "batch_size": Setting(int, "structures per XLA call", "", 1, 4096),
    "near_zero_cm1": Setting(float, "frequencies below this count as translations/rotations", "cm⁻¹", 0, 1000),
    "start_deg": Setting(float, "first dihedral of the scan", "degrees", -360, 360),
    "stop_deg": Setting(float, "last dihedral of the scan", "degrees", -360, 360),
    "step_deg": Setting(float, "dihedral increment", "degrees", 0, 360, lo_open=True),
    "start_dihedral_deg": Setting(float, "CH2–CH2 dihedral of the starting structure", "degrees", -360, 360),
    "dihedral": Setting("indices", "the four atoms i,j,k,l of the scanned dihedral (the k side rotates)", count=4),
    "images": Setting(int, "NEB images including the end points", "", 3, 200),
    "spring_constant": Setting(float, "NEB spring constant", "eV/Å²", 0, 100, lo_open=True),
    "nucleophile": Setting(str, "the incoming halide X⁻", choices=("F", "Cl", "Br")),
    "leaving_group": Setting(str, "the leaving halide Y", choices=("F", "Cl", "Br")),
    "distance_A": Setting(float, "starting C···X distance", "Å", 0.5, 50),
    "collision_energy_eV": Setting(float, "relative kinetic energy of the collision", "eV", 0, 100),
}

#: Command-line spellings of settings whose option name differs from the key.
_OPTION_NAMES = {"timestep_fs": "timestep", "temperature_K": "temperature"}


def option_name(key: str) -> str:
    """``--timestep`` for ``timestep_fs``, ``--n-carbons`` for ``n_carbons``, ..."""
    return "--" + _OPTION_NAMES.get(key, key.replace("_", "-"))


def setting_spec(module, key: str) -> Setting:
    """The :class:`Setting` of ``key`` for protocol ``module`` (inferred from the default if unlisted)."""
    own = getattr(module, "SETTINGS", {})
    if key in own:
        return own[key]
    if key in SETTINGS:
        return SETTINGS[key]
    default = module.DEFAULTS.get(key)
    kind = type(default) if isinstance(default, (bool, int, float)) else str
    return Setting(kind, key.replace("_", " "))


def _convert(key: str, value, spec: Setting, module):
    name = f"{option_name(key)} ({key})" if option_name(key)[2:] != key else option_name(key)

    def bad(extra: str = ""):
        return SettingError(f"{name} = {value!r}{extra}: not allowed for protocol {module.NAME}; allowed: {spec.allowed()}")

    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise bad()
    if spec.kind in (int, float):
        if isinstance(value, bool):
            raise bad()
        try:
            v = float(value) if spec.kind is float else (int(value) if not isinstance(value, float) or value.is_integer()
                                                          else None)
            if v is None:
                raise ValueError
            if spec.kind is int and isinstance(value, str):
                v = int(value.strip())
        except (TypeError, ValueError):
            raise bad() from None
        if not math.isfinite(v):
            raise bad()
        if spec.lo is not None and (v < spec.lo or (spec.lo_open and v == spec.lo)):
            raise bad()
        if spec.hi is not None and v > spec.hi:
            raise bad()
        return v
    if spec.kind == "indices":
        parts = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
        try:
            idx = [int(p) for p in parts]
        except (TypeError, ValueError):
            raise bad() from None
        if (spec.count and len(idx) != spec.count) or len(set(idx)) != len(idx) or min(idx) < 0:
            raise bad()
        return idx
    value = str(value)
    if spec.choices and value not in spec.choices:
        raise bad()
    return value


def read_structure(path: str | Path):
    """The last frame of any file ``ase.io.read`` understands, non-periodic, with its cell kept."""
    from ase.io import read

    atoms = read(str(path), index=-1)
    return atoms


def validate_settings(module, settings: dict) -> dict:
    """Convert and check every setting of ``module``; returns the converted settings.

    Raises:
      SettingError: naming the setting, its value and the allowed range.
    """
    out = {}
    for key, value in settings.items():
        spec = setting_spec(module, key)
        if value is None:
            if spec.kind in ("path", "indices", "model"):
                raise SettingError(f"protocol {module.NAME} needs {option_name(key)}: {spec.help} "
                                   f"(allowed: {spec.allowed()})")
            out[key] = None
            continue
        out[key] = _convert(key, value, spec, module)
        if spec.kind == "path":
            if not Path(out[key]).is_file():
                raise SettingError(f"{option_name(key)} = {out[key]!r}: no such file; allowed: {spec.allowed()}")
            out[key] = str(Path(out[key]).resolve())  # summary.json and --resume from anywhere
    if "model" in out:
        from efa_calc.checkpoint import load_checkpoint
        from efa_calc.errors import CheckpointError
        from efa_calc.models import resolve_model

        try:
            ckpt = load_checkpoint(resolve_model(out["model"]), check_shapes=False)
        except CheckpointError as exc:
            raise SettingError(f"--model = {out['model']!r}: {exc}") from None
        species = set(ckpt.species)
    else:
        species = None
    if out.get("structure") is not None:
        path = Path(out["structure"])
        if not path.is_file():
            raise SettingError(f"--structure = {str(path)!r}: no such file; allowed: {SETTINGS['structure'].allowed()}")
        try:
            atoms = read_structure(path)
        except Exception as exc:  # ase raises many types for unreadable files
            raise SettingError(f"--structure = {str(path)!r}: ase.io.read cannot read it ({exc})") from None
        if len(atoms) == 0:
            raise SettingError(f"--structure = {str(path)!r}: the structure has no atoms")
        if atoms.pbc.any():
            raise SettingError(f"--structure = {str(path)!r}: the structure is periodic (pbc={atoms.pbc.tolist()}); "
                               "the models are for isolated molecules: write it without periodic boundaries")
        unknown = sorted(set(atoms.get_chemical_symbols()) - species) if species is not None else []
        if unknown:
            raise SettingError(f"--structure = {str(path)!r}: element(s) {', '.join(unknown)} unknown to model "
                               f"{out['model']!r} (it knows {', '.join(sorted(species))})")
        if out.get("dihedral") is not None and max(out["dihedral"]) >= len(atoms):
            raise SettingError(f"--dihedral = {','.join(map(str, out['dihedral']))}: indices must be below the "
                               f"{len(atoms)} atoms of {path.name}")
    if "engine" in out:
        from md_protocols.dynamics import check_engine

        ensemble = "nvt" if "thermostat" in out else "nve"
        check_engine(out["engine"], ensemble, out.get("thermostat", "langevin"), int(out.get("replicas", 1)))
    if {"start_deg", "stop_deg"} <= set(out) and out["stop_deg"] < out["start_deg"]:
        raise SettingError(f"--stop-deg = {out['stop_deg']:g} is below --start-deg = {out['start_deg']:g}; "
                           "allowed: stop_deg ≥ start_deg")
    return out


def versions() -> dict:
    out = {}
    for name in ("efa-calc", "jax", "e3x", "flax", "ase", "phonopy", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_scan(ctx, rows: list[dict], frames: list) -> None:
    """Write a scan's table (``scan.csv``, one row per point, units in the column names) and
    its relaxed frames (``scan.extxyz``), and register both as run outputs."""
    import csv

    from ase.io import write

    with open(ctx.path("scan.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write(ctx.path("scan.extxyz"), frames, format="extxyz")
    ctx.files.update({"scan": "scan.csv", "trajectory": "scan.extxyz"})


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a killed run never leaves a truncated file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_default))
    os.replace(tmp, path)


def _default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def make_calculator(model: str, dtype: str = "float32", **kwargs):
    """An :class:`~efa_calc.EFACalculator` for a bundled model name or checkpoint path."""
    from efa_calc import EFACalculator

    return EFACalculator(model, dtype=dtype, **kwargs)


@dataclasses.dataclass
class RunContext:
    """What a protocol's ``run`` gets: its settings, its output folder and helpers.

    Attributes:
      protocol: protocol name.
      settings: merged settings (defaults overridden by the command line).
      out: output folder.
      resume: continue a previous run in ``out``.
      files: output files to record in summary.json (``trajectory``, ``log``, ``scan``).
      plots: PNG files written.
      status: ``"completed"`` unless the protocol stopped early.
    """

    protocol: str
    settings: dict
    out: Path
    resume: bool = False
    progress: bool = True
    files: dict = dataclasses.field(default_factory=dict)
    plots: list = dataclasses.field(default_factory=list)
    status: str = "completed"

    def __getitem__(self, key: str):
        return self.settings[key]

    def path(self, name: str) -> Path:
        return self.out / name

    def calculator(self, **kwargs):
        guard = {"stop": "warn", "warn": "warn", "off": "off"}[self.settings.get("extrapolation", "stop")]
        kwargs.setdefault("guard", guard)
        if self.settings.get("message_passing", "auto") != "auto":  # (issue 24)
            kwargs.setdefault("message_passing", self.settings["message_passing"])
        return make_calculator(self.settings["model"], self.settings["dtype"], **kwargs)

    def structure(self):
        """The user's starting structure (``--structure``), as ``ase.Atoms``."""
        atoms = read_structure(self.settings["structure"])
        atoms.calc = None
        atoms.set_constraint()
        return atoms

    def savefig(self, fig, name: str) -> Path:
        path = self.path(name)
        fig.savefig(path, dpi=120)
        import matplotlib.pyplot as plt

        plt.close(fig)
        if name not in self.plots:
            self.plots.append(name)
        return path


def execute(module, out: str | Path | None = None, resume: bool = False, progress: bool = True, **overrides) -> dict:
    """Run protocol ``module`` with ``overrides`` of its DEFAULTS; returns the summary dict.

    Every setting is checked first (:func:`validate_settings`); nothing is written before.
    If ``run`` raises, the output folder (or, when it existed before, what this call
    created in it) is removed again, unless a resumed run was already there.

    Raises:
      SettingError: a bad setting, model or structure file; an unwritable ``out``.
      FileExistsError: if ``out`` already holds a run and ``resume`` is False.
    """
    import matplotlib

    matplotlib.use("Agg")
    settings = dict(module.DEFAULTS)
    unknown = sorted(set(k for k, v in overrides.items() if v is not None) - set(settings))
    if unknown:
        hint = ("; for your own structure use the generic protocols nve, nvt, optimize, vibrations or torsion-scan"
                if "structure" in unknown else "")
        raise SettingError(f"protocol {module.NAME} has no setting(s) {unknown}; it takes {sorted(settings)} "
                           f"(efa-md run {module.NAME} --help){hint}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings = validate_settings(module, settings)
    out = Path(out or Path("efa-md-runs") / module.NAME)
    if (out / "summary.json").exists() or (out / "state.json").exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    elif resume and out.exists() and any(out.iterdir()):
        pass  # a run killed before its first checkpoint: start afresh in place
    existed = out.exists()
    before = set(out.iterdir()) if existed and out.is_dir() else set()
    resuming = resume and ((out / "state.json").exists() or (out / "summary.json").exists())
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".efa-md-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise SettingError(f"--out = {str(out)!r}: cannot write there ({exc.strerror or exc}); "
                           "allowed: a folder you can create and write to") from None
    ctx = RunContext(module.NAME, settings, out, resume, progress)
    t0 = time.time()
    try:
        results = module.run(ctx)
    except BaseException:
        if not resuming:  # a failed fresh run leaves nothing behind
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for p in set(out.iterdir()) - before:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    summary = {
        "protocol": module.NAME,
        **settings,
        "status": ctx.status,
        "wall_time_s": round(time.time() - t0, 2),
        "versions": versions(),
        "results": results,
        **ctx.files,
        "plots": ctx.plots,
        "units": {"energy": "eV", "length": "Angstrom", "time": "fs", "temperature": "K", "frequency": "cm^-1"},
    }
    write_json(out / "summary.json", summary)
    return summary
