"""Shared pieces of the NPT comparisons against LAMMPS (argon, NaCl): launch ``efa-md run npt``
resumably, read a run's density series, and compare its mean with a LAMMPS reference.

Units: ps, fs, K, bar, g/cm³, eV.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from efa_calc.timeseries import mean_and_standard_error


def run_efa_md_npt(out: Path, structure: Path, model: str, engine: str, *, temperature_K: float, pressure_bar: float,
                   timestep_fs: float, tdamp_fs: float, pdamp_fs: float, equilibration_ps: float,
                   production_ps: float, sample_ps: float, dtype: str, seed: int, extra: list[str] = ()) -> None:
    """``efa-md run npt`` into ``out/run`` (``--resume`` when a state exists); wall time in ``out/wall_s.txt``."""
    steps = int(round((equilibration_ps + production_ps) * 1000 / timestep_fs))
    sample = int(round(sample_ps * 1000 / timestep_fs))
    cmd = [sys.executable, "-m", "md_protocols.cli", "run", "npt", "--out", str(out / "run"), "--quiet",
           "--structure", str(structure), "--model", model, "--engine", engine,
           "--temperature", str(temperature_K), "--pressure", str(pressure_bar), "--timestep", str(timestep_fs),
           "--tdamp", str(tdamp_fs), "--pdamp", str(pdamp_fs), "--steps", str(steps),
           "--equilibration-steps", str(int(round(equilibration_ps * 1000 / timestep_fs))),
           "--write-every", str(sample), "--log-every", str(sample), "--dtype", dtype, "--seed", str(seed), *extra]
    if (out / "run" / "state.json").exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    (out / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")


def read_series(path: Path) -> dict | None:
    """time (ps), density (g/cm³) and potential energy (eV) of an efa-md ``log.csv`` (``time_fs``) or a
    LAMMPS ``series.csv`` (``time_ps``); None if the file is absent."""
    if not path.exists():
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    t = np.array([float(r["time_ps"]) if "time_ps" in r else float(r["time_fs"]) / 1000 for r in rows])
    return {"time_ps": t, "density_g_cm3": np.array([float(r["density_g_cm3"]) for r in rows]),
            "epot_eV": np.array([float(r["epot_eV"]) for r in rows])}


def compare_density(series: dict, equilibration_ps: float, ref_mean: float, ref_se: float,
                    min_samples: int = 20) -> dict | None:
    """Production mean density ± SE (statistical inefficiency) against a reference; None if too short."""
    keep = series["time_ps"] > equilibration_ps + 1e-9
    if keep.sum() < min_samples:
        return None
    rho, se, g = mean_and_standard_error(series["density_g_cm3"][keep])
    return {"production_ps": float(series["time_ps"][keep][-1] - equilibration_ps), "density_g_cm3": rho, "se": se,
            "statistical_inefficiency": g, "relative_difference_to_lammps": rho / ref_mean - 1,
            "difference_in_combined_se": (rho - ref_mean) / np.hypot(se, ref_se), "keep": keep}


def plot_density(series: dict, rows: dict, ref: tuple[float, float], equilibration_ps: float, title: str,
                 ref_label: str, path: Path) -> None:
    """Density against time of every run, the reference mean ± SE as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.axhspan(ref[0] - ref[1], ref[0] + ref[1], color="0.8", label=f"{ref_label}: {ref[0]:.4f} ± {ref[1]:.4f}")
    for k, (name, s) in enumerate(series.items()):
        r = rows[name]
        ax.plot(s["time_ps"], s["density_g_cm3"], lw=0.6, color=f"C{k}",
                label=f"{name}: {r['density_g_cm3']:.4f} ± {r['se']:.4f}")
    ax.axvline(equilibration_ps, color="k", lw=0.8, ls=":")
    ax.set(xlabel="time (ps)", ylabel="density (g/cm³)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
