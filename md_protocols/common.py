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

Every setting is validated before any work starts
(:func:`md_protocols.settings.validate_settings`: a bad value is a :class:`SettingError`
naming the setting, the value and the allowed range), and the output folder must be
writable.  A run that fails with an exception
leaves nothing behind; a run stopped by a guard keeps its frames and a resumable state.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shutil
import time
from pathlib import Path
from typing import Any

from efa_calc.io import atomic_write
from md_protocols.settings import (SETTINGS, Setting, SettingError, guard_mode, option_name, read_structure,
                                   setting_spec, translate_legacy, validate_settings)

__all__ = ["RunContext", "execute", "make_calculator", "versions", "write_json", "Setting", "SETTINGS",
           "SettingError", "validate_settings", "setting_spec", "read_structure", "option_name"]


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
    atomic_write(path, json.dumps(data, indent=1, default=_default))


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
        # the calculator only warns: a protocol with guard=error stops the run itself, resumably
        kwargs.setdefault("guard", "off" if guard_mode(self.settings) == "off" else "warn")
        if self.settings.get("message_passing", "auto") != "auto":
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
    overrides = translate_legacy(overrides)
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
