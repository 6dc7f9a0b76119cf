"""NVE dynamics (VelocityVerlet) of your own structure (``--structure FILE``) from
Maxwell–Boltzmann velocities at ``temperature_K``; reports the energy drift (eV/atom/ps).

The same outputs, guard and ``--resume`` as ``cumulene-nve``; the structure is used as read.
"""

from md_protocols.dynamics import ENGINE_DEFAULTS, run_dynamics

NAME = "nve"
DESCRIPTION = "NVE (VelocityVerlet) of your structure (--structure FILE --model M); reports energy drift"
DEFAULTS = {"structure": None, "model": None, "steps": 1000, "timestep_fs": 0.5, "temperature_K": 300.0,
            "dtype": "float32", "seed": 0, "guard": "error",
            "write_every": 1, "log_every": 1, **ENGINE_DEFAULTS}


def run(ctx):
    return run_dynamics(ctx, ctx.structure(), ctx.calculator(), "nve")
