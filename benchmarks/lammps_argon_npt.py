"""LAMMPS's own NPT reference for argon-local: 500 Ar atoms at 94.4 K and 1 atm.

The potential is the one ``argon-local`` is trained on (see ``models/data/argon/README.md``)::

    pair_style lj/smooth/linear 8.5          # shifted-force 12-6 LJ, E(rc) = E'(rc) = 0
    pair_coeff * * 0.010323 3.405            # eps (eV), sigma (Å); mass 39.948 amu

Protocol (units metal, serial LAMMPS, velocity Verlet with 2 fs steps): fcc 5×5×5 cubic
cells (500 atoms) at 1.30 g/cm³; melt in NVT (Nosé–Hoover) at 300 K, cool to 94.4 K in NVT,
then ``fix npt temp 94.4 94.4 0.1 iso 1.01325 1.01325 1.0`` (Nosé–Hoover thermostat and
barostat, tdamp 100 fs, pdamp 1000 fs): equilibrate, then produce, sampling every 0.2 ps.

Reported (production averages, standard errors from the statistical inefficiency; a
blocking estimate beside it): density (g/cm³), potential energy per atom (eV), temperature
(K), pressure (bar), and the heat of vaporisation

    ΔH_vap = <E_gas> − <U_liq>/N + k_B T − P <V_liq>/N,     <E_gas> = 0

(an isolated Ar atom has no energy with this potential; the ideal gas has P V = N k_B T and
the kinetic energies cancel at equal T; the P V_liq term is ~3e-5 eV, kept for exactness),
in eV/atom and kJ/mol.

    python benchmarks/lammps_argon_npt.py              # 285k steps (570 ps), a few minutes
    python benchmarks/lammps_argon_npt.py --quick      # short smoke run (not a result)

Writes ``benchmarks/results/lammps_argon_npt.json`` and ``docs/figures/lammps_argon_npt.png``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk

from efa_calc.generate.lammps_labeller import setup_lammps_system
from efa_calc.interfaces.lammps_runtime import new_lammps
from efa_calc.timeseries import blocking_standard_error, mean_and_standard_error

ROOT = Path(__file__).resolve().parents[1]
PAIR = ["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"]
MASS = 39.948  # amu
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660  # 1 amu/Å³ in g/cm³
EV_TO_KJ_PER_MOL = units.mol / units.kJ  # 96.485...


def _start(n_cells: int, density: float):
    a0 = (4 * MASS * AMU_PER_A3_TO_G_PER_CM3 / density) ** (1 / 3)
    return bulk("Ar", "fcc", a=a0, cubic=True).repeat(n_cells)


def _run(lmp, ps: float, dt_fs: float) -> None:
    lmp.command(f"run {int(round(ps * 1000 / dt_fs))} post no")


def simulate(args) -> dict:
    """Run the protocol; returns time series (ps, g/cm³, eV/atom, K, bar, Å³) and the settings."""
    atoms = _start(args.cells, 1.30)
    n = len(atoms)
    lmp = new_lammps()
    setup_lammps_system(lmp, atoms, ["Ar"], PAIR, {"Ar": MASS})
    dt = args.dt_fs
    sample_steps = int(round(args.sample_ps * 1000 / dt))
    lmp.commands_list([
        "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
        f"timestep {dt / 1000!r}",  # ps in units metal
        "thermo_style custom step temp pe press vol", f"thermo {sample_steps}",
        f"velocity all create 300.0 {args.seed} mom yes rot no dist gaussian",
        "fix melt all nvt temp 300.0 300.0 0.1",
    ])
    _run(lmp, args.melt_ps, dt)
    lmp.commands_list(["unfix melt", f"fix cool all nvt temp 300.0 {args.temperature!r} 0.1"])
    _run(lmp, args.cool_ps, dt)
    lmp.commands_list([
        "unfix cool",
        f"fix npt all npt temp {args.temperature!r} {args.temperature!r} {args.tdamp_fs / 1000!r} "
        f"iso {args.pressure_bar!r} {args.pressure_bar!r} {args.pdamp_fs / 1000!r}",
    ])
    series = {k: [] for k in ("time_ps", "density_g_cm3", "pe_eV_per_atom", "temperature_K", "pressure_bar", "volume_A3")}
    total = args.equil_ps + args.prod_ps
    for k in range(1, int(round(total / args.sample_ps)) + 1):
        # "pre no" (no re-setup between chunks) is only valid once the new fix npt is set up
        lmp.command(f"run {sample_steps} pre {'yes' if k == 1 else 'no'} post no")
        vol = float(lmp.get_thermo("vol"))
        series["time_ps"].append(k * args.sample_ps)
        series["volume_A3"].append(vol)
        series["density_g_cm3"].append(n * MASS / vol * AMU_PER_A3_TO_G_PER_CM3)
        series["pe_eV_per_atom"].append(float(lmp.get_thermo("pe")) / n)
        series["temperature_K"].append(float(lmp.get_thermo("temp")))
        series["pressure_bar"].append(float(lmp.get_thermo("press")))
    lmp.close()
    return {k: np.asarray(v) for k, v in series.items()} | {"num_atoms": n}


def summarise(series: dict, args) -> dict:
    """Production averages with standard errors, and ΔH_vap (see the module docstring)."""
    prod = series["time_ps"] > args.equil_ps + 1e-9
    out = {}
    for key in ("density_g_cm3", "pe_eV_per_atom", "temperature_K", "pressure_bar", "volume_A3"):
        x = series[key][prod]
        mean, se, g = mean_and_standard_error(x)
        out[key] = {"mean": mean, "se": se, "se_blocking": blocking_standard_error(x),
                    "statistical_inefficiency": g, "min": float(x.min()), "max": float(x.max())}
    n = series["num_atoms"]
    kt = units.kB * args.temperature
    pv = args.pressure_bar * units.bar * out["volume_A3"]["mean"] / n
    dh = -out["pe_eV_per_atom"]["mean"] + kt - pv
    se = out["pe_eV_per_atom"]["se"]
    out["heat_of_vaporization"] = {
        "formula": "dH_vap = <E_gas> - <U_liq>/N + k_B T - P <V_liq>/N, with <E_gas> = 0",
        "eV_per_atom": dh, "se_eV_per_atom": se,
        "kJ_per_mol": dh * EV_TO_KJ_PER_MOL, "se_kJ_per_mol": se * EV_TO_KJ_PER_MOL,
        "kT_eV": kt, "PV_liq_eV_per_atom": pv,
    }
    return out


def plot(series: dict, summary: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, rho = series["time_ps"], series["density_g_cm3"]
    d = summary["density_g_cm3"]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    ax.plot(t, rho, lw=0.7, color="C0")
    ax.axvspan(0, args.equil_ps, color="0.9", label="equilibration")
    ax.axhline(d["mean"], color="k", lw=1, label=f"production mean {d['mean']:.4f} ± {d['se']:.4f} g/cm³")
    ax.set_ylabel("density (g/cm³)")
    ax.set_title(f"LAMMPS NPT, {series['num_atoms']} Ar, lj/smooth/linear 8.5 Å, {args.temperature} K, {args.pressure_bar} bar")
    ax.set_ylim(rho.min() - 0.02, rho.max() + 0.08 * (rho.max() - rho.min()) + 0.04)  # room for the legend
    ax.legend(loc="upper center", ncol=2, fontsize=8, framealpha=0.9)
    bx.plot(t, series["pe_eV_per_atom"] * 1000, lw=0.7, color="C1")
    bx.axvspan(0, args.equil_ps, color="0.9")
    bx.set_ylabel("potential energy (meV/atom)")
    bx.set_xlabel("time in NPT (ps)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=5, help="fcc cubic cells per side (4 n³ atoms; 5 → 500)")
    p.add_argument("--temperature", type=float, default=94.4, help="K")
    p.add_argument("--pressure-bar", type=float, default=1.01325, help="bar (1 atm)")
    p.add_argument("--dt-fs", type=float, default=2.0)
    p.add_argument("--tdamp-fs", type=float, default=100.0)
    p.add_argument("--pdamp-fs", type=float, default=1000.0)
    p.add_argument("--melt-ps", type=float, default=10.0)
    p.add_argument("--cool-ps", type=float, default=10.0)
    p.add_argument("--equil-ps", type=float, default=50.0)
    p.add_argument("--prod-ps", type=float, default=500.0)
    p.add_argument("--sample-ps", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=4928459)
    p.add_argument("--quick", action="store_true", help="2 + 2 + 5 + 10 ps smoke run (not a result)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_argon_npt.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "figures" / "lammps_argon_npt.png"))
    args = p.parse_args(argv)
    if args.quick:
        args.melt_ps, args.cool_ps, args.equil_ps, args.prod_ps = 2.0, 2.0, 5.0, 10.0
    t0 = time.perf_counter()
    series = simulate(args)
    wall = time.perf_counter() - t0
    summary = summarise(series, args)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "plot")}
    result = {
        "description": "LAMMPS NPT of argon with the argon-local training potential (reference for efa-calc NPT)",
        "potential": PAIR + [f"mass 1 {MASS}"], "units": "metal (eV, Angstrom, ps); density g/cm^3, pressure bar",
        "settings": settings, "num_atoms": series["num_atoms"], "results": summary,
        "production_samples": int(np.sum(series["time_ps"] > args.equil_ps + 1e-9)),
        "series_every_1ps": {k: series[k][:: max(1, int(round(1.0 / args.sample_ps)))].round(6).tolist()
                             for k in ("time_ps", "density_g_cm3", "pe_eV_per_atom")},
        "wall_s_loaded_machine": round(wall, 1),
        "versions": {n: importlib.metadata.version(n) for n in ("lammps", "mpich", "ase", "numpy")},
        "python": platform.python_version(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(series, summary, args, Path(args.plot))
    d, h = summary["density_g_cm3"], summary["heat_of_vaporization"]
    print(f"density {d['mean']:.4f} ± {d['se']:.4f} g/cm³ (blocking SE {d['se_blocking']:.4f}; "
          f"range {d['min']:.3f}-{d['max']:.3f}); U/N {summary['pe_eV_per_atom']['mean'] * 1000:.3f} meV; "
          f"ΔH_vap {h['kJ_per_mol']:.4f} ± {h['se_kJ_per_mol']:.4f} kJ/mol; T {summary['temperature_K']['mean']:.2f} K; "
          f"P {summary['pressure_bar']['mean']:.1f} bar; {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
