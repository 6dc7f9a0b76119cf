"""MD engines behind :func:`md_protocols.dynamics.run_dynamics` (``--engine``).

An engine is one module with

* ``NAME`` and ``THERMOSTATS`` (the NVT thermostats it offers),
* ``available() -> str | None`` (``None``, or why it cannot run here, e.g. a missing extra),
* ``run(ctx, atoms, calc, ensemble, **options) -> dict`` with the contract of
  :func:`~md_protocols.dynamics.run_dynamics`: the same output files
  (``trajectory.extxyz``, ``log.csv``, ``state.npz`` + ``state.json``), resume, guard and
  progress bar.

Adding an engine is a new module here plus one line in :data:`ENGINES`.

* ``ase`` (default): ASE's integrators, one model call per step from Python
  (:mod:`md_protocols.engines.ase_engine`).
* ``jax``: jax-md's integrators inside XLA, many steps per call and ``--replicas R``
  trajectories per call (:mod:`md_protocols.engines.jax_engine`; needs ``efa-calc[md]``).
"""

from __future__ import annotations

import importlib

ENGINES = {
    "ase": "md_protocols.engines.ase_engine",
    "jax": "md_protocols.engines.jax_engine",
}


def get_engine(name: str):
    """The engine module called ``name``."""
    if name not in ENGINES:
        raise ValueError(f"unknown MD engine {name!r}; choose from {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])


__all__ = ["ENGINES", "get_engine"]
