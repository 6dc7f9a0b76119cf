"""NVT of the X⁻···CH3Y ion–molecule complex (default Cl⁻···CH3Br) at 300 K."""

from md_protocols.dynamics import ENGINE_DEFAULTS, run_dynamics
from md_protocols.systems import sn2_reactant_complex

NAME = "sn2-nvt"
DESCRIPTION = "NVT of the Cl-...CH3Br ion-molecule complex at 300 K (Langevin by default)"
DEFAULTS = {"model": "sn2-efa", "steps": 2000, "timestep_fs": 0.5, "temperature_K": 300.0, "thermostat": "langevin",
            "dtype": "float32", "seed": 0, "guard": "error", "nucleophile": "Cl", "leaving_group": "Br", **ENGINE_DEFAULTS}


def run(ctx):
    calc = ctx.calculator()
    atoms = sn2_reactant_complex(calc, str(ctx["nucleophile"]), str(ctx["leaving_group"]))
    return run_dynamics(ctx, atoms, calc, "nvt")
