"""LAMMPS's own NPT reference for nacl-efa: 216 Tosi–Fumi NaCl ions at 1200 K and 1 bar (molten salt).

The potential is the one ``nacl-efa`` / ``nacl-local`` are trained on (see ``models/data/nacl/README.md``,
:func:`efa_calc.generate.nacl.nacl_pair_commands`)::

    pair_style born/coul/long 9.0 ; pair_modify table 0 ; kspace_style ewald 1e-6
    charges +1 (Na, 22.98977 amu) / −1 e (Cl, 35.453 amu); Tosi–Fumi A, ρ, σ, C, D (LAMMPS D = −D_TF)

Protocol (units metal, serial LAMMPS, velocity Verlet with 2 fs steps): rock-salt 3×3×3 cubic cells
(216 ions) scaled to 1.5 g/cm³; melt in NVT (Nosé–Hoover, tdamp 100 fs) at 3000 K, cool to 1200 K in
NVT, then ``fix npt temp 1200 1200 0.1 iso 1 1 1.0`` (Nosé–Hoover thermostat and barostat, tdamp
100 fs, pdamp 1000 fs): equilibrate, then produce, sampling every ``sample_ps``.

Reported (production averages; standard errors from the statistical inefficiency, a blocking
estimate beside them, :mod:`efa_calc.timeseries`): density (g/cm³), potential energy per ion (eV),
temperature (K), pressure (bar, kinetic part included), volume (Å³).

    python benchmarks/lammps_nacl_npt.py              # 10 + 10 + 20 + 150 ps (95k steps), ~10 min on one core
    python benchmarks/lammps_nacl_npt.py --quick      # short smoke run (not a result)

Writes ``benchmarks/results/lammps_nacl_npt.json`` and ``docs/figures/lammps_nacl_npt.png``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import time
from pathlib import Path

import numpy as np

from efa_calc.generate.lammps_labeller import setup_lammps_system
from efa_calc.generate.nacl import CHARGES, MASSES, SPECIES, density_g_cm3, nacl_pair_commands, rocksalt
from efa_calc.interfaces.lammps_runtime import new_lammps
from efa_calc.timeseries import blocking_standard_error, mean_and_standard_error

ROOT = Path(__file__).resolve().parents[1]
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660  # 1 amu/Å³ in g/cm³


def _start(cells: int, density: float):
    atoms = rocksalt(5.64, (cells,) * 3)
    atoms.set_cell(atoms.cell.array * (density_g_cm3(atoms) / density) ** (1 / 3), scale_atoms=True)
    return atoms


def _run(lmp, ps: float, dt_fs: float) -> None:
    lmp.command(f"run {int(round(ps * 1000 / dt_fs))} post no")


def simulate(args) -> dict:
    """Run the protocol; returns time series (ps, g/cm³, eV/ion, K, bar, Å³), the ion count and steps/s."""
    atoms = _start(args.cells, 1.5)
    n, mass = len(atoms), sum(MASSES[s] for s in atoms.get_chemical_symbols())
    lmp = new_lammps()
    setup_lammps_system(lmp, atoms, list(SPECIES), nacl_pair_commands(), MASSES, CHARGES)
    dt = args.dt_fs
    sample_steps = int(round(args.sample_ps * 1000 / dt))
    tdamp, pdamp = args.tdamp_fs / 1000, args.pdamp_fs / 1000
    lmp.commands_list([
        "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes", f"timestep {dt / 1000!r}",
        "thermo_style custom step temp pe press vol", f"thermo {sample_steps}",
        f"velocity all create {args.melt_K!r} {args.seed} mom yes rot no dist gaussian",
        f"fix melt all nvt temp {args.melt_K!r} {args.melt_K!r} {tdamp!r}",
    ])
    _run(lmp, args.melt_ps, dt)
    lmp.commands_list(["unfix melt", f"fix cool all nvt temp {args.melt_K!r} {args.temperature!r} {tdamp!r}"])
    _run(lmp, args.cool_ps, dt)
    lmp.commands_list([
        "unfix cool",
        f"fix npt all npt temp {args.temperature!r} {args.temperature!r} {tdamp!r} "
        f"iso {args.pressure_bar!r} {args.pressure_bar!r} {pdamp!r}",
    ])
    series = {k: [] for k in ("time_ps", "density_g_cm3", "pe_eV_per_ion", "temperature_K", "pressure_bar", "volume_A3")}
    total = args.equil_ps + args.prod_ps
    t0 = time.perf_counter()
    for k in range(1, int(round(total / args.sample_ps)) + 1):
        # "pre no" (no re-setup between chunks) is only valid once the new fix npt is set up
        lmp.command(f"run {sample_steps} pre {'yes' if k == 1 else 'no'} post no")
        vol = float(lmp.get_thermo("vol"))
        series["time_ps"].append(k * args.sample_ps)
        series["volume_A3"].append(vol)
        series["density_g_cm3"].append(mass / vol * AMU_PER_A3_TO_G_PER_CM3)
        series["pe_eV_per_ion"].append(float(lmp.get_thermo("pe")) / n)
        series["temperature_K"].append(float(lmp.get_thermo("temp")))
        series["pressure_bar"].append(float(lmp.get_thermo("press")))
    steps_per_s = int(round(total / args.sample_ps)) * sample_steps / (time.perf_counter() - t0)
    lmp.close()
    return {k: np.asarray(v) for k, v in series.items()} | {"num_ions": n, "npt_steps_per_s": steps_per_s}


def summarise(series: dict, args) -> dict:
    """Production averages with standard errors (both estimators of efa_calc.timeseries)."""
    prod = series["time_ps"] > args.equil_ps + 1e-9
    out = {}
    for key in ("density_g_cm3", "pe_eV_per_ion", "temperature_K", "pressure_bar", "volume_A3"):
        x = series[key][prod]
        mean, se, g = mean_and_standard_error(x)
        out[key] = {"mean": mean, "se": se, "se_blocking": blocking_standard_error(x),
                    "statistical_inefficiency": g, "min": float(x.min()), "max": float(x.max())}
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
    ax.set_title(f"LAMMPS NPT, {series['num_ions']} ions Tosi–Fumi NaCl (Ewald), {args.temperature} K, {args.pressure_bar} bar",
                 fontsize=9)
    ax.legend(loc="upper center", ncol=2, fontsize=8, framealpha=0.9)
    bx.plot(t, series["pe_eV_per_ion"], lw=0.7, color="C1")
    bx.axvspan(0, args.equil_ps, color="0.9")
    bx.set_ylabel("potential energy (eV/ion)")
    bx.set_xlabel("time in NPT (ps)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=3, help="rock-salt cubic cells per side (8 n³ ions; 3 → 216)")
    p.add_argument("--temperature", type=float, default=1200.0, help="K")
    p.add_argument("--pressure-bar", type=float, default=1.0, help="bar")
    p.add_argument("--melt-K", type=float, default=3000.0, help="K, NVT melting of the start crystal")
    p.add_argument("--dt-fs", type=float, default=2.0)
    p.add_argument("--tdamp-fs", type=float, default=100.0)
    p.add_argument("--pdamp-fs", type=float, default=1000.0)
    p.add_argument("--melt-ps", type=float, default=10.0)
    p.add_argument("--cool-ps", type=float, default=10.0)
    p.add_argument("--equil-ps", type=float, default=20.0)
    p.add_argument("--prod-ps", type=float, default=150.0)
    p.add_argument("--sample-ps", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=81273)
    p.add_argument("--quick", action="store_true", help="1 + 1 + 2 + 4 ps smoke run (not a result)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_nacl_npt.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "figures" / "lammps_nacl_npt.png"))
    args = p.parse_args(argv)
    if args.quick:
        args.melt_ps, args.cool_ps, args.equil_ps, args.prod_ps = 1.0, 1.0, 2.0, 4.0
    t0 = time.perf_counter()
    series = simulate(args)
    wall = time.perf_counter() - t0
    summary = summarise(series, args)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "plot")}
    result = {
        "description": "LAMMPS NPT of molten Tosi-Fumi NaCl with the nacl-efa training potential (reference for efa-calc NPT)",
        "potential": nacl_pair_commands() + [f"mass {t} {MASSES[s]}" for t, s in enumerate(SPECIES, 1)]
        + [f"charge {s} {CHARGES[s]:+.0f} e" for s in SPECIES],
        "units": "metal (eV, Angstrom, ps); density g/cm^3, pressure bar (virial + kinetic), energy eV/ion",
        "settings": settings, "num_ions": series["num_ions"], "results": summary,
        "production_samples": int(np.sum(series["time_ps"] > args.equil_ps + 1e-9)),
        "series_every_1ps": {k: series[k][:: max(1, int(round(1.0 / args.sample_ps)))].round(6).tolist()
                             for k in ("time_ps", "density_g_cm3", "pe_eV_per_ion")},
        "npt_steps_per_s_loaded_machine": round(series["npt_steps_per_s"], 1),
        "wall_s_loaded_machine": round(wall, 1),
        "versions": {n: importlib.metadata.version(n) for n in ("lammps", "mpich", "ase", "numpy")},
        "python": platform.python_version(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(series, summary, args, Path(args.plot))
    d, u = summary["density_g_cm3"], summary["pe_eV_per_ion"]
    print(f"density {d['mean']:.4f} ± {d['se']:.4f} g/cm³ (blocking SE {d['se_blocking']:.4f}); "
          f"U/N {u['mean']:.5f} ± {u['se']:.5f} eV/ion; T {summary['temperature_K']['mean']:.1f} K; "
          f"P {summary['pressure_bar']['mean']:.0f} ± {summary['pressure_bar']['se']:.0f} bar; "
          f"{series['npt_steps_per_s']:.0f} NPT steps/s; {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
