"""NVE of an SN2 collision: X⁻ fired at the backside of CH3Y with a chosen collision energy."""

import numpy as np
from efa_calc.structures import sn2_complex
from md_protocols.dynamics import ENGINE_DEFAULTS, initial_velocities, run_dynamics
from md_protocols.systems import relaxed

NAME = "sn2-nve"
DESCRIPTION = "NVE SN2 collision: Cl- fired at CH3Br (backside, 2 eV); reports whether Br- was displaced"
DEFAULTS = {"model": "sn2-efa", "steps": 1000, "timestep_fs": 0.25, "temperature_K": 50.0, "dtype": "float32",
            "seed": 0, "guard": "error", "nucleophile": "Cl", "leaving_group": "Br", "distance_A": 6.0,
            "collision_energy_eV": 2.0, **ENGINE_DEFAULTS}


def run(ctx):
    calc = ctx.calculator()
    x, y = str(ctx["nucleophile"]), str(ctx["leaving_group"])
    start = sn2_complex(x, y, float(ctx["distance_A"]), 1.95)
    start = relaxed(start, calc, fmax=0.05, fixed=[4])  # CH3Y relaxed in the field of the ion

    def collision(atoms, rng):
        """Thermal internal motion plus a relative velocity along the backside axis with
        ½ μ v² = collision energy (μ: reduced mass of ion and molecule); zero total momentum."""
        initial_velocities(atoms, float(ctx["temperature_K"]), rng)
        m = atoms.get_masses()
        axis = atoms.positions[0] - atoms.positions[4]
        axis /= np.linalg.norm(axis)
        m_ion, m_mol = m[4], m.sum() - m[4]
        v_rel = np.sqrt(2 * float(ctx["collision_energy_eV"]) * (m_ion + m_mol) / (m_ion * m_mol))
        v = atoms.get_velocities()
        mol = [0, 1, 2, 3, 5]
        v[4] += v_rel * m_mol / (m_ion + m_mol) * axis
        v[mol] -= v_rel * m_ion / (m_ion + m_mol) * axis
        atoms.set_velocities(v)

    results = run_dynamics(ctx, start, calc, "nve", initial_velocities_fn=collision)
    from ase.io import read

    trajs = ctx.files["trajectory"] if isinstance(ctx.files["trajectory"], list) else [ctx.files["trajectory"]]
    outcomes = []
    for name in trajs:  # one per replica (jax engine, --replicas R)
        traj = read(ctx.path(name), index=":")
        d_cx = np.array([a.get_distance(0, 4) for a in traj])
        d_cy = np.array([a.get_distance(0, 5) for a in traj])
        outcomes.append({"min_C_X_distance_A": float(d_cx.min()), "final_C_X_distance_A": float(d_cx[-1]),
                         "final_C_Y_distance_A": float(d_cy[-1]), "reacted": bool(d_cx[-1] < 2.3 < d_cy[-1])})
    results.update(outcomes[0])
    results["collision_energy_eV"] = float(ctx["collision_energy_eV"])
    if len(outcomes) > 1:
        results["reacted_fraction"] = float(np.mean([o["reacted"] for o in outcomes]))
    return results
