"""The end of an MD run: status, summary results and the dynamics plot.

Results (for summary.json, from ``log.csv``): ``steps_done``, ``final_epot_eV`` (eV),
``mean_temperature_K`` (K, steps after the first), ``num_atoms``; for NVE also the drift of
the total energy (eV/atom/ps) and its largest deviation (meV/atom); with replicas, those
of replica 0 plus ``replicas`` and ``per_replica``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from md_protocols.common import RunContext

__all__ = ["finish", "nve_drift", "plot_dynamics"]


def nve_drift(log_rows: list[dict], num_atoms: int) -> dict:
    """Linear drift (eV/atom/ps) and max deviation (meV/atom) of the total energy."""
    t = np.array([float(r["time_fs"]) for r in log_rows]) / 1000.0
    e = np.array([float(r["etot_eV"]) for r in log_rows])
    slope = np.polyfit(t, e, 1)[0] if len(t) > 2 else 0.0
    return {"drift_eV_per_atom_per_ps": float(slope / num_atoms),
            "max_energy_deviation_meV_per_atom": float(1e3 * np.max(np.abs(e - e[0])) / num_atoms)}


def _results(rows: list[dict], ensemble: str, num_atoms: int) -> dict:
    last = rows[-1]
    res = {"steps_done": int(last["step"]), "final_epot_eV": float(last["epot_eV"]),
           "mean_temperature_K": float(np.mean([float(r["temperature_K"]) for r in rows[1:]] or [0.0])),
           "num_atoms": num_atoms}
    if ensemble == "nve":
        res.update(nve_drift(rows, num_atoms))
    return res


def finish(ctx: RunContext, ensemble: str, folders: list[Path], num_atoms: int, stop_reason: str | None,
           extra: dict | None = None) -> dict:
    """Common end of a run: status, plot of the first replica, results for summary.json
    (those of the first replica; with several replicas also ``replicas`` and
    ``per_replica``)."""
    if stop_reason:
        ctx.status = f"stopped: {stop_reason}"
        print(f"efa-md: {ctx.protocol} stopped — {stop_reason}; every frame up to then is kept", flush=True)
    per = []
    for folder in folders:
        with open(folder / "log.csv") as f:
            per.append(list(csv.DictReader(f)))
    rel = [str((folder / "x").relative_to(ctx.out).parent) for folder in folders]
    if len(folders) == 1:
        ctx.files.update({"trajectory": "trajectory.extxyz", "log": "log.csv"})
    else:
        ctx.files.update({"trajectory": [f"{r}/trajectory.extxyz" for r in rel], "log": [f"{r}/log.csv" for r in rel]})
    plot_dynamics(ctx, per[0])
    results = _results(per[0], ensemble, num_atoms)
    if len(folders) > 1:
        results["replicas"] = len(folders)
        results["per_replica"] = [_results(rows, ensemble, num_atoms) for rows in per]
    results.update(extra or {})
    return results


def plot_dynamics(ctx: RunContext, rows: list[dict]) -> None:
    import matplotlib.pyplot as plt

    t = np.array([float(r["time_fs"]) for r in rows])
    fig, ax = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in (("epot_eV", "potential"), ("ekin_eV", "kinetic"), ("etot_eV", "total")):
        y = np.array([float(r[key]) for r in rows])
        ax[0].plot(t, y - y[0], label=label)
    if rows and "econs_eV" in rows[0]:
        y = np.array([float(r["econs_eV"]) for r in rows])
        ax[0].plot(t, y - y[0], "--", label="conserved (NHC)")
    ax[0].set(ylabel="energy − initial value (eV)", title=f"{ctx.protocol}: energies")
    ax[0].legend()
    ax[1].plot(t, [float(r["temperature_K"]) for r in rows], color="C3")
    if "temperature_K" in ctx.settings:
        label = "target" if "thermostat" in ctx.settings else "initial (Maxwell–Boltzmann)"
        ax[1].axhline(float(ctx["temperature_K"]), color="k", lw=0.8, ls=":", label=label)
        ax[1].legend()
    ax[1].set(xlabel="time (fs)", ylabel="temperature (K)")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    ctx.savefig(fig, "dynamics.png")
