"""Liquid–vapour coexistence of argon-local's potential at 94.4 K (LAMMPS, two-phase slab).

Why: the NPT reference (``benchmarks/lammps_argon_npt.py``) runs at 1 atm.  If the
potential's vapour pressure at 94.4 K is above 1 atm, that liquid is superheated —
metastable, so long or larger NPT runs (of LAMMPS or of efa-calc) may boil.  This script
measures the vapour pressure directly.

Protocol (units metal, lj/smooth/linear 8.5, ε = 0.010323 eV, σ = 3.405 Å, 39.948 amu):
fcc 5×5×10 cubic cells (1000 atoms) at 1.10 g/cm³, melted at 300 K and cooled to T in NVT,
then the box is stretched to 3× along z (a liquid slab with two free surfaces) and run in
NVT (Nosé–Hoover, tdamp 100 fs, 2 fs steps): equilibrate, then produce, sampling every 0.5 ps.

Reported (means with standard errors from the statistical inefficiency):

* p_zz (bar), the normal pressure = the vapour pressure at coexistence (kinetic + virial);
* the vapour density ρ_v (atoms/Å³ and g/cm³) counted beyond 15 Å from either surface of the
  slab (located by the liquid's centre of mass along z and its density), and ρ_v k_B T (bar),
  the ideal-gas estimate of the same vapour pressure;
* the coexisting liquid density (g/cm³) in the middle half of the slab.

    python benchmarks/lammps_argon_coexistence.py            # ~200 ps, a few minutes
Writes ``benchmarks/results/lammps_argon_coexistence.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk

from efa_calc.generate.lammps_labeller import setup_lammps_system
from efa_calc.interfaces.lammps_runtime import new_lammps
from efa_calc.timeseries import mean_and_standard_error

ROOT = Path(__file__).resolve().parents[1]
PAIR = ["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"]
MASS = 39.948
G_CM3_PER_AMU_A3 = 1.66053906660


def _z_profile(lmp, n: int, lz: float, zlo: float) -> np.ndarray:
    """Atom z positions (Å) relative to the slab's centre, in [−lz/2, lz/2) (circular mean centre)."""
    z = np.array(lmp.numpy.extract_atom("x")[:n, 2], dtype=np.float64) - zlo
    phase = np.angle(np.mean(np.exp(2j * np.pi * z / lz)))
    centre = (phase / (2 * np.pi)) * lz
    return (z - centre + lz / 2) % lz - lz / 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--temperature", type=float, default=94.4, help="K")
    p.add_argument("--equil-ps", type=float, default=50.0)
    p.add_argument("--prod-ps", type=float, default=150.0)
    p.add_argument("--seed", type=int, default=88211)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_argon_coexistence.json"))
    args = p.parse_args(argv)
    t = args.temperature
    a0 = (4 * MASS * G_CM3_PER_AMU_A3 / 1.10) ** (1 / 3)
    atoms = bulk("Ar", "fcc", a=a0, cubic=True).repeat((5, 5, 10))
    n = len(atoms)
    lmp = new_lammps()
    setup_lammps_system(lmp, atoms, ["Ar"], PAIR, {"Ar": MASS})
    lmp.commands_list([
        "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes", "timestep 0.002",
        "thermo_style custom step temp pe pzz pxx pyy", "thermo 250",
        f"velocity all create 300.0 {args.seed} mom yes rot no dist gaussian",
        "fix md all nvt temp 300.0 300.0 0.1", "run 5000",
        "unfix md", f"fix md all nvt temp 300.0 {t!r} 0.1", "run 5000",
        "change_box all z final $(2*zlo-zhi) $(2*zhi-zlo) units box",  # 3× along z: vacuum on both sides
        "unfix md", f"fix md all nvt temp {t!r} {t!r} 0.1",
        f"run {int(args.equil_ps * 500)}",
    ])
    boxlo, boxhi, *_ = lmp.extract_box()
    lx, ly, lz = (boxhi[k] - boxlo[k] for k in range(3))
    pzz, rho_v, rho_l = [], [], []
    for k in range(int(args.prod_ps * 2)):
        lmp.command(f"run 250 pre {'yes' if k == 0 else 'no'} post no")
        z = _z_profile(lmp, n, lz, boxlo[2])
        mid = np.abs(z) < 12.0  # middle of a ~60 Å slab
        rho_l.append(np.sum(mid) / (lx * ly * 24.0))
        half = 0.5 * n / (rho_l[-1] * lx * ly)  # slab half-thickness from its own density
        gas = np.abs(z) > half + 15.0
        rho_v.append(np.sum(gas) / (lx * ly * 2 * max(lz / 2 - half - 15.0, 1e-9)))
        pzz.append(float(lmp.get_thermo("pzz")))
    lmp.close()
    res = {}
    for name, x in (("pzz_bar", pzz), ("vapour_atoms_per_A3", rho_v), ("liquid_atoms_per_A3", rho_l)):
        m, se, g = mean_and_standard_error(x)
        res[name] = {"mean": m, "se": se, "statistical_inefficiency": g}
    kt_bar = units.kB * t / units.bar
    res["ideal_gas_vapour_pressure_bar"] = {"mean": res["vapour_atoms_per_A3"]["mean"] * kt_bar,
                                            "se": res["vapour_atoms_per_A3"]["se"] * kt_bar}
    to_gcm3 = MASS * G_CM3_PER_AMU_A3
    res["vapour_density_g_cm3"] = res["vapour_atoms_per_A3"]["mean"] * to_gcm3
    res["liquid_density_g_cm3"] = {"mean": res["liquid_atoms_per_A3"]["mean"] * to_gcm3,
                                   "se": res["liquid_atoms_per_A3"]["se"] * to_gcm3}
    out = {"description": "two-phase slab NVT of argon-local's LAMMPS potential", "potential": PAIR,
           "num_atoms": n, "box_A": [lx, ly, lz], "settings": vars(args) | {"out": None}, "results": res}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"T {t} K: p_zz {res['pzz_bar']['mean']:.2f} ± {res['pzz_bar']['se']:.2f} bar; vapour "
          f"{res['vapour_density_g_cm3']:.4f} g/cm³ (ideal-gas p {res['ideal_gas_vapour_pressure_bar']['mean']:.2f} ± "
          f"{res['ideal_gas_vapour_pressure_bar']['se']:.2f} bar); liquid {res['liquid_density_g_cm3']['mean']:.4f} ± "
          f"{res['liquid_density_g_cm3']['se']:.4f} g/cm³")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
