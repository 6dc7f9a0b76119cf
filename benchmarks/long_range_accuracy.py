"""Accuracy of the long-range designs trained on equal terms (docs/long_range_blocks.md).

Reads the models exported by ``bash benchmarks/long_range/train_all.sh`` from
``runs/long_range/<name>`` and evaluates, with the bundled models' held-out data:

* test-split errors (from each checkpoint's provenance: energy MAE in eV per frame, force
  MAE in eV/Å);
* cumulene rigid CH2 torsion scans (GFN2-xTB) of C6H4, C8H4 (even) and C9H4, C11H4 (odd):
  offset-free RMSE, span (barrier) and where the minimum lies (0/180° even, 90° odd);
* SN2: the relaxed Cl⁻ + CH3Br path and the Cl⁻ pull to 12 Å (PBE0/def2-SVPD), with the
  energy rise from 8 to 12 Å (PBE0: +44 meV).

Writes ``benchmarks/results/long_range_accuracy.json`` and the plots
``docs/figures/long_range_cumulene_scans.png`` and ``docs/figures/long_range_sn2_pull.png``.

    python benchmarks/long_range_accuracy.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CUMULENE = {
    "EFA": "cumulene-cmp-efa",
    "all-to-all": "cumulene-cmp-all-to-all",
    "local": "cumulene-cmp-local",
    "local + MARA": "cumulene-cmp-mara",
    "EFA exact, ω_max 2.4 Å⁻¹": "cumulene-cmp-efa-exact-hf",
}
SN2 = {
    "EFA": "sn2-cmp-efa",
    "all-to-all": "sn2-cmp-all-to-all",
    "local": "sn2-cmp-local",
    "local + MARA": "sn2-cmp-mara",
}


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("models_evaluate", ROOT / "models" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trained(table: dict, runs: Path) -> dict:
    return {label: runs / name for label, name in table.items() if (runs / name / "config.json").is_file()}


def _summary(path: Path) -> dict:
    from efa_calc.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    prov = ck.provenance
    return {"run": path.name, "num_parameters": prov.get("num_parameters"), "steps": prov.get("training_steps"),
            "training_wall_time_s": prov.get("training_wall_time_s"), "test": prov.get("test_errors")}


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=str(ROOT / "runs" / "long_range"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "long_range_accuracy.json"))
    args = p.parse_args(argv)
    ev = _evaluate_module()
    runs = Path(args.runs)
    result: dict = {"cumulene": {}, "sn2": {}}
    cum = _trained(CUMULENE, runs)
    if cum:
        scans = ev.cumulene_scans([str(p) for p in cum.values()])
        for label, path in cum.items():
            result["cumulene"][label] = {**_summary(path), "scans": scans[str(path)]}
    sn2 = _trained(SN2, runs)
    if sn2:
        scans = ev.sn2_scans([str(p) for p in sn2.values()])
        for label, path in sn2.items():
            s = scans[str(path)]
            d = np.array(s["pull"]["x"])
            e, ref = np.array(s["pull"]["model_eV"]), np.array(s["pull"]["reference_eV"])
            i8, i12 = int(np.argmin(abs(d - 8.0))), int(np.argmin(abs(d - 12.0)))
            s["pull"]["rise_8_to_12_meV"] = 1e3 * float(e[i12] - e[i8])
            s["pull"]["reference_rise_8_to_12_meV"] = 1e3 * float(ref[i12] - ref[i8])
            result["sn2"][label] = {**_summary(path), "scans": s}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    _print(result)
    _plot(result, ROOT / "docs" / "figures")
    print(f"wrote {out}")


def _print(result: dict) -> None:
    for family, rows in result.items():
        for label, r in rows.items():
            t = r["test"] or {}
            line = (f"{family:9s} {label:26s} params {r['num_parameters']}  test E MAE {1e3 * t.get('energy_mae_eV', np.nan):6.1f} meV"
                    f"  F MAE {1e3 * t.get('forces_mae_eV_A', np.nan):6.1f} meV/Å")
            for key, s in r["scans"].items():
                line += f" | {key} RMSE {1e3 * s['relative_energy_rmse_eV']:.0f} meV span {1e3 * s['model_span_eV']:.0f}"
                if "rise_8_to_12_meV" in s:
                    line += f" rise8-12 {s['rise_8_to_12_meV']:.0f} (ref {s['reference_rise_8_to_12_meV']:.0f})"
                elif family == "cumulene":
                    line += f" min@{s['model_minimum_at']:.0f}°"
            print(line)


def _plot(result: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    if result["cumulene"]:
        chains = list(next(iter(result["cumulene"].values()))["scans"])
        fig, axes = plt.subplots(1, len(chains), figsize=(4 * len(chains), 3.4), sharey=False)
        for ax, chain in zip(np.atleast_1d(axes), chains):
            first = next(iter(result["cumulene"].values()))["scans"][chain]
            ref = np.array(first["reference_eV"])
            ax.plot(first["x"], ref - ref.min(), "k-", lw=2.5, label="GFN2-xTB")
            for label, r in result["cumulene"].items():
                s = r["scans"][chain]
                e = np.array(s["model_eV"])
                ax.plot(s["x"], e - e.mean() + (ref - ref.min()).mean(), "-o", ms=3, label=label)
            ax.set_title(chain)
            ax.set_xlabel("CH2–CH2 dihedral (°)")
        np.atleast_1d(axes)[0].set_ylabel("relative energy (eV)")
        np.atleast_1d(axes)[-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "long_range_cumulene_scans.png", dpi=120)
        plt.close(fig)
    if result["sn2"]:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for ax, key, xl in ((axes[0], "relaxed_path", "reaction coordinate (Å)"), (axes[1], "pull", "C–Cl distance (Å)")):
            first = next(iter(result["sn2"].values()))["scans"][key]
            ref = np.array(first["reference_eV"])
            ax.plot(first["x"], ref - ref[-1], "k-", lw=2.5, label="PBE0")
            for label, r in result["sn2"].items():
                s = r["scans"][key]
                e = np.array(s["model_eV"])
                ax.plot(s["x"], e - e[-1], "-o", ms=3, label=label)
            ax.set_xlabel(xl)
            ax.set_ylabel("energy relative to the last frame (eV)")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "long_range_sn2_pull.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
