"""NPT of 500 argon atoms at 94.4 K and 1 atm with ``argon-local``, three ways, against LAMMPS's LJ.

The model ``argon-local`` is trained on LAMMPS's ``lj/smooth/linear 8.5`` argon, so its NPT
density must equal LAMMPS's own NPT of that potential (``benchmarks/lammps_argon_npt.py``,
``benchmarks/results/lammps_argon_npt.json``) within the standard errors; any difference is an
error of the model or of our NPT.  Runs (each a separate process, so they can run side by side):

* ``--run ase``:    ``efa-md run npt --engine ase`` (ASE's IsotropicMTKNPT);
* ``--run jax``:    ``efa-md run npt --engine jax`` (jax-md's ``npt_nose_hoover``);
* ``--run lammps``: LAMMPS integrates (``fix npt``, Nosé–Hoover), efa-calc supplies energy,
  forces and virial through ``fix external`` (:mod:`efa_calc.interfaces.lammps`);
* ``--run bias``:   relabels every 5th production frame of the ASE (or ``--bias-run jax``) run with LAMMPS's LJ and
  measures the model's pressure error along the NPT trajectory (model − LJ virial pressure,
  bar), the quantity that shifts the model's NPT density;
* ``--seed K`` (K ≠ 1) runs an engine again into ``<engine>_seed<K>``; the summary pools the seeds;
* ``--run summary``: collects what exists into ``benchmarks/results/argon_npt_comparison.json``
  and ``docs/figures/argon_npt_comparison.png``.

All start from the same 500-atom 94.4 K / 1 atm liquid frame of the held-out test split
(``models/data/argon/argon_lj_test.extxyz``), use 2 fs steps, thermostat time 100 fs and
barostat time 1000 fs (LAMMPS's ``tdamp``/``pdamp``, ASE's ``tdamp``/``pdamp``), sample every
0.2 ps, and leave the first ``--equilibration-ps`` out.  Means and standard errors of the
correlated series: :func:`efa_calc.timeseries.mean_and_standard_error`.  Units: g/cm³, eV,
K, bar, ps.

    python benchmarks/argon_npt_comparison.py --run ase --production-ps 100
    python benchmarks/argon_npt_comparison.py --run summary
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read, write

from efa_calc.timeseries import mean_and_standard_error

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npt_runs import compare_density, plot_density, read_series, run_efa_md_npt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MASS = 39.948
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660
EV_TO_KJ_PER_MOL = units.mol / units.kJ
T_K, P_BAR, DT_FS, TDAMP_FS, PDAMP_FS, SAMPLE_PS = 94.4, 1.01325, 2.0, 100.0, 1000.0, 0.2


def start_frame() -> Atoms:
    """The last 500-atom 94.4 K liquid frame of the held-out test split."""
    frames = [f for f in read(ROOT / "models/data/argon/argon_lj_test.extxyz", ":")
              if len(f) == 500 and f.info.get("kind") == "liquid" and abs(float(f.info.get("temperature_K", T_K))
                                                                       - T_K) < 1.0]
    if not frames:
        raise SystemExit("no 500-atom 94.4 K liquid frame in argon_lj_test.extxyz")
    atoms = frames[-1]
    atoms.calc = None
    return atoms


def isolated_atom_energy(dtype: str) -> float:
    """The model's energy of one Ar atom without neighbours (eV), for ΔH_vap."""
    from ase import Atoms

    from efa_calc import EFACalculator

    atom = Atoms("Ar", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 30.0, pbc=True)
    atom.calc = EFACalculator("argon-local", dtype=dtype, guard="off")
    return float(atom.get_potential_energy())


def run_efa_md(engine: str, out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    structure = out / "start.extxyz"
    if not structure.exists():
        write(structure, start_frame())
    run_efa_md_npt(out, structure, "argon-local", engine, temperature_K=T_K, pressure_bar=args.pressure_bar, timestep_fs=DT_FS,
                   tdamp_fs=TDAMP_FS, pdamp_fs=PDAMP_FS, equilibration_ps=args.equilibration_ps,
                   production_ps=args.production_ps, sample_ps=SAMPLE_PS, dtype=args.dtype, seed=args.seed,
                   extra=["--isolated-energy", repr(isolated_atom_energy(args.dtype))])


def run_lammps(out: Path, args) -> None:
    """LAMMPS ``fix npt`` with argon-local through ``fix external``; writes ``series.csv``."""
    from efa_calc.generate.lammps_labeller import setup_lammps_system
    from efa_calc.interfaces.lammps import attach
    from efa_calc.interfaces.lammps_runtime import new_lammps

    out.mkdir(parents=True, exist_ok=True)
    atoms = start_frame()
    n = len(atoms)
    lmp = new_lammps()
    setup_lammps_system(lmp, atoms, ["Ar"], ["pair_style zero 9.0", "pair_coeff * *"], {"Ar": MASS})
    sample = int(round(SAMPLE_PS * 1000 / DT_FS))
    lmp.commands_list([
        f"timestep {DT_FS / 1000!r}", "fix efa all external pf/callback 1 1",
        "fix_modify efa energy yes virial yes",
        f"velocity all create {T_K!r} {args.seed + 1} mom yes rot no dist gaussian",
        f"fix npt all npt temp {T_K!r} {T_K!r} {TDAMP_FS / 1000!r} iso {args.pressure_bar!r} {args.pressure_bar!r} {PDAMP_FS / 1000!r}",
        "thermo_style custom step temp pe press vol", f"thermo {sample}",
    ])
    fix = attach(lmp, "argon-local", ["Ar"], dtype=args.dtype, guard="warn")
    rows = []
    total = int(round((args.equilibration_ps + args.production_ps) / SAMPLE_PS))
    t0 = time.perf_counter()
    for k in range(1, total + 1):
        lmp.command(f"run {sample} pre {'yes' if k == 1 else 'no'} post no")
        fix.raise_if_failed()
        thermo = lmp.last_thermo()  # the thermo line of the chunk's last step (energies tallied there)
        vol = float(thermo["Volume"])
        rows.append({"time_ps": k * SAMPLE_PS, "volume_A3": vol,
                     "density_g_cm3": n * MASS / vol * AMU_PER_A3_TO_G_PER_CM3,
                     "epot_eV": float(thermo["PotEng"]), "temperature_K": float(thermo["Temp"]),
                     "pressure_bar": float(thermo["Press"])})
        if k % 50 == 0:
            _write_rows(out / "series.csv", rows)
    lmp.close()
    _write_rows(out / "series.csv", rows)
    (out / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")


def pressure_bias(args) -> dict:
    """Model − LJ virial pressure (bar), energy (meV/atom) and mean |ΔF| (meV/Å) on ``--bias-run`` frames."""
    from efa_calc import EFACalculator
    from efa_calc.generate.lammps_labeller import LammpsLabeller

    lab = LammpsLabeller(["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"], ["Ar"], {"Ar": MASS})
    every = int(round(args.equilibration_ps / SAMPLE_PS))
    frames = read(args.work / args.bias_run / "run" / "trajectory.extxyz", f"{every}::5")
    calc = EFACalculator("argon-local", dtype="float64", guard="off")
    rows = []
    for f in frames:
        e, forces, stress = lab.compute(f)
        a = f.copy()
        a.calc = calc
        dp = (-np.mean(a.get_stress()[:3]) + np.mean(stress[:3])) / units.bar
        rows.append((dp, (a.get_potential_energy() - e) / len(a) * 1e3, np.abs(a.get_forces() - forces).mean() * 1e3))
    r = np.array(rows)
    out = {"engine": args.bias_run, "frames": len(r), "pressure_bias_bar": float(r[:, 0].mean()),
           "pressure_bias_se_bar": float(r[:, 0].std(ddof=1) / np.sqrt(len(r))),
           "energy_bias_meV_per_atom": float(r[:, 1].mean()), "force_mae_meV_A": float(r[:, 2].mean())}
    (args.work / "pressure_bias.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def summary(args) -> dict:
    ref = json.loads((RESULTS / f"lammps_argon_npt{_suffix(args)}.json").read_text())
    rho_ref = ref["results"]["density_g_cm3"]
    out = {"description": __doc__.split("\n")[0], "units": "g/cm^3, kJ/mol, ps",
           "settings": {"temperature_K": T_K, "pressure_bar": args.pressure_bar, "timestep_fs": DT_FS, "tdamp_fs": TDAMP_FS,
                        "pdamp_fs": PDAMP_FS, "sample_ps": SAMPLE_PS, "equilibration_ps": args.equilibration_ps,
                        "dtype": args.dtype},
           "lammps_lj_reference": {"density_g_cm3": rho_ref["mean"], "se": rho_ref["se"],
                                   "heat_of_vaporization_kJ_mol": ref["results"]["heat_of_vaporization"]["kJ_per_mol"]},
           "runs": {}}
    e_gas = isolated_atom_energy(args.dtype)
    series = {}
    # ase, jax, jax_seed2, …, lammps: further seeds of an engine run in <engine>_seed<k> (--work …/<engine>_seed<k>)
    names = sorted(d.name for d in args.work.iterdir() if d.is_dir()) if args.work.is_dir() else []
    for name in names:
        s = read_series(args.work / name / ("series.csv" if name == "lammps" else "run/log.csv"))
        row = None if s is None else compare_density(s, args.equilibration_ps, rho_ref["mean"], rho_ref["se"])
        if row is None:
            continue
        series[name] = s
        keep = row.pop("keep")
        u, se_u, _ = mean_and_standard_error(s["epot_eV"][keep] / 500)
        dh = (e_gas - u + units.kB * T_K) * EV_TO_KJ_PER_MOL
        wall = args.work / name / "wall_s.txt"
        row["relative_difference_to_lammps_lj"] = row.pop("relative_difference_to_lammps")
        out["runs"][name] = {**row, "heat_of_vaporization_kJ_mol": dh,
                             "se_heat_of_vaporization_kJ_mol": se_u * EV_TO_KJ_PER_MOL,
                             "wall_s": float(wall.read_text()) if wall.exists() else None}
    for engine in ("ase", "jax"):  # independent seeds pooled by inverse variance
        rows = [r for k, r in out["runs"].items() if k.split("_seed")[0] == engine]
        if len(rows) > 1:
            w = np.array([1 / r["se"] ** 2 for r in rows])
            rho = float(np.sum(w * [r["density_g_cm3"] for r in rows]) / w.sum())
            dh = float(np.sum(w * [r["heat_of_vaporization_kJ_mol"] for r in rows]) / w.sum())
            se = float(w.sum() ** -0.5)
            out.setdefault("pooled", {})[engine] = {
                "runs": len(rows), "density_g_cm3": rho, "se": se,
                "relative_difference_to_lammps_lj": rho / rho_ref["mean"] - 1,
                "difference_in_combined_se": (rho - rho_ref["mean"]) / float(np.hypot(se, rho_ref["se"])),
                "heat_of_vaporization_kJ_mol": dh}
    bias = args.work / "pressure_bias.json"
    if bias.exists():
        out["model_pressure_bias_along_trajectory"] = json.loads(bias.read_text())
    shifted = sorted(RESULTS.glob("lammps_argon_npt_*bar.json"))
    for path in shifted:  # LAMMPS's LJ at 1 atm + the model's pressure bias: what the bias alone predicts
        r = json.loads(path.read_text())
        out.setdefault("lammps_lj_at_shifted_pressure", []).append(
            {"pressure_bar": r["settings"]["pressure_bar"], "density_g_cm3": r["results"]["density_g_cm3"]["mean"],
             "se": r["results"]["density_g_cm3"]["se"]})
    out["isolated_atom_energy_eV"] = e_gas
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"argon_npt_comparison{_suffix(args)}.json").write_text(json.dumps(out, indent=1) + "\n")
    _plot(series, out, _suffix(args))
    return out


def _suffix(args) -> str:
    """File-name suffix of a run at another pressure than 1 atm ('' or e.g. '_50bar')."""
    return "" if abs(args.pressure_bar - P_BAR) < 1e-9 else f"_{args.pressure_bar:g}bar"


def _plot(series: dict, out: dict, suffix: str = "") -> None:
    ref = out["lammps_lj_reference"]
    rows = {f"argon-local, {k}": v for k, v in out["runs"].items()}
    plot_density({f"argon-local, {k}": v for k, v in series.items()}, rows, (ref["density_g_cm3"], ref["se"]),
                 out["settings"]["equilibration_ps"], f"NPT, 500 Ar, 94.4 K, {out['settings']['pressure_bar']:g} bar",
                 "LAMMPS LJ", ROOT / "docs" / "figures" / f"argon_npt_comparison{suffix}.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", choices=("ase", "jax", "lammps", "bias", "summary"), required=True)
    p.add_argument("--work", type=Path, default=None, help="run directories (default benchmarks/runs/argon_npt[_Pbar])")
    p.add_argument("--pressure-bar", type=float, default=P_BAR, help="bar (default 1 atm; the LAMMPS reference "
                   "benchmarks/results/lammps_argon_npt[_Pbar].json must exist for the summary)")
    p.add_argument("--equilibration-ps", type=float, default=10.0)
    p.add_argument("--production-ps", type=float, default=100.0)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bias-run", choices=("ase", "jax"), default="ase", help="whose frames --run bias relabels")
    args = p.parse_args(argv)
    if args.work is None:
        args.work = ROOT / "benchmarks" / "runs" / f"argon_npt{_suffix(args)}"
    if args.run == "bias":
        print(json.dumps(pressure_bias(args), indent=1))
    elif args.run == "summary":
        print(json.dumps(summary(args)["runs"], indent=1))
    elif args.run == "lammps":
        run_lammps(args.work / "lammps", args)
    else:
        run_efa_md(args.run, args.work / (args.run if args.seed == 1 else f"{args.run}_seed{args.seed}"), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
