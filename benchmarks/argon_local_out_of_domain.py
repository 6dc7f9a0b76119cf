"""``argon-local``'s energies outside the bulk training domain against LAMMPS's LJ: why a model boils in NPT.

The ``argon-local`` trained on liquid and fcc frames alone met its held-out bounds, yet its NPT
liquid at 94.4 K expanded (1 atm: 1.06 → 0.89 g/cm³ in 5 ps on both engines; 50 bar: ~1.0 against
LAMMPS's 1.155), while LAMMPS's own LJ from the same start frame stays liquid (its numbers:
``benchmarks/results/argon_local_v3_out_of_domain.json``).  This script measures what decides it:

* energy per atom (meV) of homogeneously expanded fcc lattices, a = 5.3 … 9 Å (1.78 … 0.36 g/cm³),
  model against LAMMPS ``lj/smooth/linear 8.5``;
* a (001) fcc slab of 256 atoms with 16 Å of vacuum (two free surfaces): the energy per
  atom, and the surface-energy error per surface atom;
* LAMMPS LJ NPT at 94.4 K and 1 atm from the comparison's start frame (two seeds, 20 ps):
  the density the model's runs should keep;
* voids: the largest empty sphere (Å; grid 0.7 Å) and the volume fraction farther than 3.5 Å
  from every atom, in frames of the model's NPT runs given by ``--voids-run`` (efa-md run
  directories) against LAMMPS's liquid frames of the test split.

    python benchmarks/argon_local_out_of_domain.py [--model argon-local] [--voids-run DIR ...] [--out FILE]

Needs the lammps extra; ~2 min.  Writes ``benchmarks/results/argon_local_out_of_domain.json``
by default.  Units: meV/atom, g/cm³, Å.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk

from efa_calc import EFACalculator
from efa_calc.generate.lammps_labeller import LammpsLabeller, setup_lammps_system
from efa_calc.interfaces.lammps_runtime import new_lammps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from argon_npt_comparison import start_frame  # noqa: E402

PAIR = ["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"]
MASS = 39.948
G_CM3 = MASS * 1.66053906660  # amu/Å³ → g/cm³ per atom


def energies(atoms, lab, calc) -> tuple[float, float]:
    """(LJ, model) energy per atom in meV."""
    e_lj = lab.compute(atoms)[0]
    b = atoms.copy()
    b.calc = calc
    return 1e3 * e_lj / len(atoms), 1e3 * b.get_potential_energy() / len(atoms)


def lj_npt_from_start(seed: int, ps: int = 20) -> list[float]:
    """LAMMPS LJ NPT (94.4 K, 1 atm, tdamp 100 fs, pdamp 1000 fs) density every ps from the start frame."""
    atoms = start_frame()
    lmp = new_lammps()
    try:
        setup_lammps_system(lmp, atoms, ["Ar"], PAIR, {"Ar": MASS})
        lmp.commands_list(["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes", "timestep 0.002",
                           "thermo_style custom step temp pe press vol",
                           f"velocity all create 94.4 {seed} mom yes rot no dist gaussian",
                           "fix npt all npt temp 94.4 94.4 0.1 iso 1.01325 1.01325 1.0"])
        out = []
        for k in range(ps):
            lmp.command(f"run 500 pre {'yes' if k == 0 else 'no'} post no")
            out.append(len(atoms) * G_CM3 / lmp.get_thermo("vol"))
        return out
    finally:
        lmp.close()


def voids(atoms, h: float = 0.7) -> dict:
    """Largest empty-sphere radius (Å) and volume fraction > 3.5 Å from all atoms (orthorhombic cells)."""
    from scipy.spatial import cKDTree

    lengths = atoms.cell.lengths()
    tree = cKDTree(atoms.get_positions(wrap=True), boxsize=lengths)
    grid = np.stack(np.meshgrid(*[np.arange(0, x, h) for x in lengths], indexing="ij"), -1).reshape(-1, 3)
    d, _ = tree.query(grid)
    return {"density_g_cm3": len(atoms) * G_CM3 / atoms.get_volume(), "largest_void_A": float(d.max()),
            "void_fraction": float(np.mean(d > 3.5))}


def void_rows(runs: list[Path]) -> dict:
    from ase.io import read

    out = {"lammps_lj_test_liquid": [voids(a) for a in read(ROOT / "models/data/argon/argon_lj_test.extxyz", ":")
                                     if a.info["kind"] == "liquid"][::4]}
    for run in runs:  # frames after the 10 ps (50 frames) of equilibration
        name = run.resolve().relative_to(ROOT) if run.resolve().is_relative_to(ROOT) else run
        out[f"model_npt:{name}"] = [voids(a) for a in read(run / "trajectory.extxyz", "50::30")]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="argon-local", help="bundled name or checkpoint directory")
    p.add_argument("--voids-run", type=Path, nargs="*", default=[ROOT / "benchmarks/runs/argon_npt/jax/run"],
                   help="efa-md NPT run directories whose frames are searched for voids (missing ones skipped)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "argon_local_out_of_domain.json")
    args = p.parse_args()
    lab = LammpsLabeller(PAIR, ["Ar"], {"Ar": MASS})
    calc = EFACalculator(args.model, dtype="float64", guard="off")
    lattices = []
    for a0 in (5.3, 5.5, 5.8, 6.2, 6.8, 7.5, 9.0):
        at = bulk("Ar", "fcc", a=a0, cubic=True).repeat(4)
        lj, model = energies(at, lab, calc)
        lattices.append({"a_A": a0, "density_g_cm3": len(at) * G_CM3 / at.get_volume(), "lj_meV": lj, "model_meV": model})
        print(json.dumps(lattices[-1]), flush=True)
    slab = bulk("Ar", "fcc", a=5.3, cubic=True).repeat(4)
    slab.center(vacuum=8.0, axis=2)
    s_lj, s_model = energies(slab, lab, calc)
    b_lj, b_model = energies(bulk("Ar", "fcc", a=5.3, cubic=True).repeat(4), lab, calc)
    surface_atoms = 2 * 32  # two (001) faces of a 4x4 cubic-cell slab, 2 atoms per face cell
    surface = {"slab_lj_meV": s_lj, "slab_model_meV": s_model, "bulk_lj_meV": b_lj, "bulk_model_meV": b_model,
               "surface_energy_error_meV_per_surface_atom":
                   ((s_model - b_model) - (s_lj - b_lj)) * len(slab) / surface_atoms,
               "surface_energy_lj_meV_per_surface_atom": (s_lj - b_lj) * len(slab) / surface_atoms}
    print(json.dumps(surface), flush=True)
    npt = {f"seed_{s}": lj_npt_from_start(s) for s in (2, 3)}
    runs = [r for r in args.voids_run if (r / "trajectory.extxyz").exists()]
    out = {"description": __doc__.split("\n")[0], "model": str(args.model), "units": "meV/atom, g/cm^3, A",
           "expanded_fcc": lattices, "fcc001_slab": surface, "lammps_lj_npt_from_start_density_per_ps": npt,
           "voids": void_rows(runs)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print({k: np.round(v, 3).tolist() for k, v in npt.items()}, "->", args.out)


if __name__ == "__main__":
    main()
