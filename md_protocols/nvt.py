"""NVT dynamics of your own structure (``--structure FILE``): Langevin, Bussi or Nosé–Hoover chain.

The same outputs, guard and ``--resume`` as ``sn2-nvt``/``cumulene-nvt``
(:func:`md_protocols.dynamics.run_dynamics`); the structure is used as read (the last frame
of the file), without a prior relaxation.
"""

from md_protocols.dynamics import ENGINE_DEFAULTS, run_dynamics

NAME = "nvt"
DESCRIPTION = "NVT of your structure (--structure FILE --model M; Langevin, --thermostat bussi|nose-hoover)"
DEFAULTS = {"structure": None, "model": None, "steps": 2000, "timestep_fs": 0.5, "temperature_K": 300.0,
            "thermostat": "langevin", "dtype": "float32", "seed": 0, "guard": "error",
            "write_every": 1, "log_every": 1, **ENGINE_DEFAULTS}


def run(ctx):
    return run_dynamics(ctx, ctx.structure(), ctx.calculator(), "nvt")
