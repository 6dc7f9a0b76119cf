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
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["RunContext", "execute", "make_calculator", "versions", "write_json"]


def versions() -> dict:
    out = {}
    for name in ("efa-calc", "jax", "e3x", "flax", "ase", "phonopy", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


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
        return make_calculator(self.settings["model"], self.settings["dtype"], **kwargs)

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

    Raises:
      FileExistsError: if ``out`` already holds a run and ``resume`` is False.
    """
    import matplotlib

    matplotlib.use("Agg")
    settings = dict(module.DEFAULTS)
    unknown = sorted(set(k for k, v in overrides.items() if v is not None) - set(settings))
    if unknown:
        raise ValueError(f"protocol {module.NAME} has no setting(s) {unknown}; it takes {sorted(settings)}")
    settings.update({k: v for k, v in overrides.items() if v is not None})
    out = Path(out or Path("efa-md-runs") / module.NAME)
    if (out / "summary.json").exists() or (out / "state.json").exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    elif resume and out.exists() and any(out.iterdir()):
        pass  # a run killed before its first checkpoint: start afresh in place
    out.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(module.NAME, settings, out, resume, progress)
    t0 = time.time()
    results = module.run(ctx)
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
