"""MD engines behind :func:`md_protocols.dynamics.run_dynamics` (``--engine``).

An engine is one module here holding a subclass of :class:`md_protocols.engines.base.Engine`
that only steps (``begin``, ``advance``, the state it saves); the base does the rest for
every engine: output files, resume, starting velocities, the guards
(:mod:`md_protocols.engines.guards`) and the summary.  Adding an engine is a new module
plus one line in :data:`ENGINES` (what it offers, so settings are checked before any
import of it).

* ``ase`` (default): ASE's integrators, one model call per step from Python
  (:mod:`md_protocols.engines.ase_engine`).
* ``jax``: jax-md's integrators inside XLA, many steps per call and ``--replicas R``
  trajectories per call (:mod:`md_protocols.engines.jax_engine`; needs ``efa-calc[md]``);
  periodic cells whose heights all exceed twice the model's cutoff (minimum image), and
  isotropic NPT.

This package's ``__init__`` imports nothing of ``md_protocols``: the settings check
(:func:`md_protocols.settings.check_engine`) reads the table without importing an engine.
"""

from __future__ import annotations

import dataclasses
import importlib

__all__ = ["EngineInfo", "ENGINES", "get_engine", "unavailable"]


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What an engine offers: its module (holding the class ``ENGINE``), NVT thermostats,
    whether it runs replicas, its ensembles, whether it runs periodic cells, and the module
    it needs with the command that installs it."""

    module: str
    thermostats: tuple
    replicas: bool = False
    ensembles: tuple = ("nve", "nvt")
    periodic: bool = False
    requires: str | None = None
    install: str = ""


ENGINES = {
    "ase": EngineInfo("md_protocols.engines.ase_engine", ("langevin", "bussi", "nose-hoover"),
                      ensembles=("nve", "nvt", "npt"), periodic=True),
    "jax": EngineInfo("md_protocols.engines.jax_engine", ("langevin", "nose-hoover"), replicas=True,
                      ensembles=("nve", "nvt", "npt"), periodic=True, requires="jax_md",
                      install="pip install 'efa-calc[md]'"),
}


def unavailable(name: str) -> str | None:
    """``None``, or why engine ``name`` cannot run here (a missing extra)."""
    info = ENGINES[name]
    if info.requires is None:
        return None
    try:
        importlib.import_module(info.requires)
    except ImportError as exc:
        return f"{info.requires} is not installed ({exc}); install the md extra: {info.install}"
    return None


def get_engine(name: str):
    """The engine class called ``name`` (a :class:`~md_protocols.engines.base.Engine`)."""
    if name not in ENGINES:
        raise ValueError(f"unknown MD engine {name!r}; choose from {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name].module).ENGINE
