"""Evaluate the bundled models on held-out reference scans; write metrics and plots.

    python models/evaluate.py            # all four models (needs models/data/*)

Writes ``models/evaluation.json`` and, per family, a PNG comparing EFA and local models
with the reference method:

* cumulenes: rigid CH2 torsion scans 0–180° of n = 6, 8, 9, 11 (GFN2-xTB; never trained on);
* SN2: (a) the Cl⁻ + CH3Br → ClCH3 + Br⁻ path relaxed at PBE0/def2-SVPD near the
  transition state, (b) Cl⁻ pulled from CH3Br along the C–Cl axis, 3.5–12 Å (PBE0).

Energies in eV, forces in eV/Å, angles in degrees, distances in Å.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.data import read_dataset  # noqa: E402
from efa_calc.evaluation import scan_report  # noqa: E402


def cumulene_scans(models=("cumulene-efa", "cumulene-local")) -> dict:
    ds = read_dataset(HERE / "data" / "cumulene_gfn2_scans.extxyz")
    n = np.array([i["n_carbons"] for i in ds.info])
    phi = np.array([i["dihedral_deg"] for i in ds.info])
    out: dict = {}
    for m in models:
        calc = EFACalculator(m)
        out[m] = {}
        for k in sorted(set(n.tolist())):
            idx = np.flatnonzero(n == k)
            out[m][f"C{k}H4"] = scan_report(calc, ds.subset(idx), phi[idx])
    return out


def sn2_scans(models=("sn2-efa", "sn2-local")) -> dict:
    ds = read_dataset(HERE / "data" / "sn2_pbe0_test.extxyz")
    kinds = np.array([i["kind"] for i in ds.info])
    out: dict = {}
    for m in models:
        calc = EFACalculator(m)
        out[m] = {}
        idx = np.flatnonzero(kinds == "test_relaxed_path")
        out[m]["relaxed_path"] = scan_report(calc, ds.subset(idx), [ds.info[i]["rc"] for i in idx])
        idx = np.flatnonzero(kinds == "test_pull")
        out[m]["pull"] = scan_report(calc, ds.subset(idx), [ds.info[i]["d_CX_A"] for i in idx])
    return out


def plot_cumulene(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(next(iter(res.values())))
    fig, axes = plt.subplots(1, len(systems), figsize=(4 * len(systems), 3.6), sharey=False)
    for ax, s in zip(axes, systems):
        ref = next(iter(res.values()))[s]
        x, e_ref = np.array(ref["x"]), np.array(ref["reference_eV"])
        ax.plot(x, e_ref - e_ref.min(), "k-", lw=2, label="GFN2-xTB")
        for m, style in zip(res, ("o-", "s--")):
            e = np.array(res[m][s]["model_eV"])
            ax.plot(x, e - e.mean() + (e_ref - e_ref.min()).mean(), style, ms=4,
                    label=f"{m} (RMSE {1e3 * res[m][s]['relative_energy_rmse_eV']:.0f} meV)")
        ax.set(title=f"{s} rigid torsion", xlabel="CH2–CH2 dihedral (degrees)", ylabel="relative energy (eV)")
        ax.set_xticks(np.arange(0, 181, 45))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sn2(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xlabel in ((axes[0], "relaxed_path", "rc = d(C–Br) − d(C–Cl) (Å)"),
                            (axes[1], "pull", "d(C–Cl) (Å)")):
        ref = next(iter(res.values()))[key]
        x, e_ref = np.array(ref["x"]), np.array(ref["reference_eV"])
        ax.plot(x, e_ref - e_ref.mean(), "k-", lw=2, label="PBE0/def2-SVPD")
        for m, style in zip(res, ("o-", "s--")):
            e = np.array(res[m][key]["model_eV"])
            ax.plot(x, e - e.mean(), style, ms=4, label=f"{m} (RMSE {1e3 * res[m][key]['relative_energy_rmse_eV']:.0f} meV)")
        ax.set(xlabel=xlabel, ylabel="energy − mean (eV)",
               title={"relaxed_path": "Cl⁻ + CH3Br path near the TS", "pull": "Cl⁻ pulled from CH3Br"}[key])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    results = {}
    if (HERE / "data" / "cumulene_gfn2_scans.extxyz").is_file():
        results["cumulene"] = cumulene_scans()
        plot_cumulene(results["cumulene"], HERE / "cumulene_scans.png")
    if (HERE / "data" / "sn2_pbe0_test.extxyz").is_file():
        results["sn2"] = sn2_scans()
        plot_sn2(results["sn2"], HERE / "sn2_scans.png")
    (HERE / "evaluation.json").write_text(json.dumps(results, indent=1))
    for fam, per_model in results.items():
        for m, scans in per_model.items():
            for s, r in scans.items():
                print(f"{m:15s} {s:13s} rel. energy RMSE {1e3 * r['relative_energy_rmse_eV']:7.1f} meV  "
                      f"force MAE {1e3 * r['forces_mae_eV_A']:7.1f} meV/Å  ref span {r['reference_span_eV']:.3f} eV  "
                      f"min at {r['model_minimum_at']:g} (ref {r['reference_minimum_at']:g})")


if __name__ == "__main__":
    main()
