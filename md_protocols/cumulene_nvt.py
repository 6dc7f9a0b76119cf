"""NVT dynamics of a cumulene (default C9H4): Langevin, Bussi or Nosé–Hoover chain."""

from md_protocols.dynamics import ENGINE_DEFAULTS, run_dynamics
from md_protocols.systems import cumulene_start

NAME = "cumulene-nvt"
DESCRIPTION = "NVT of C9H4 at 300 K (Langevin by default; --thermostat bussi|nose-hoover)"
DEFAULTS = {"model": "cumulene-efa", "steps": 2000, "timestep_fs": 0.5, "temperature_K": 300.0,
            "thermostat": "langevin", "dtype": "float32", "seed": 0, "guard": "error", "n_carbons": 9, **ENGINE_DEFAULTS}


def run(ctx):
    calc = ctx.calculator()
    atoms = cumulene_start(int(ctx["n_carbons"]), calc)
    return run_dynamics(ctx, atoms, calc, "nvt")
