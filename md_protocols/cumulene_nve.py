"""NVE dynamics of a cumulene (default C9H4) with VelocityVerlet; reports the energy drift."""

from md_protocols.dynamics import ENGINE_DEFAULTS, run_dynamics
from md_protocols.systems import cumulene_start

NAME = "cumulene-nve"
DESCRIPTION = "NVE (VelocityVerlet) of C9H4 from 300 K Maxwell-Boltzmann velocities; reports energy drift"
DEFAULTS = {"model": "cumulene-efa", "steps": 1000, "timestep_fs": 0.5, "temperature_K": 300.0,
            "dtype": "float32", "seed": 0, "guard": "error", "n_carbons": 9, **ENGINE_DEFAULTS}


def run(ctx):
    calc = ctx.calculator()
    atoms = cumulene_start(int(ctx["n_carbons"]), calc)
    return run_dynamics(ctx, atoms, calc, "nve")
