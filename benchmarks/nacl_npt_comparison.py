"""NPT of 216 Tosi–Fumi NaCl ions at 1200 K and 1 bar with ``nacl-efa`` against LAMMPS's own NPT.

``nacl-efa`` is trained on LAMMPS's ``born/coul/long 9.0`` + ``ewald 1e-6`` NaCl, so its NPT
density must equal LAMMPS's NPT of that potential (``benchmarks/lammps_nacl_npt.py``,
``benchmarks/results/lammps_nacl_npt.json``: 1.4034 ± 0.0029 g/cm³) within 1 % (issue 25).

* ``--run ase [--model M]``: ``efa-md run npt --engine ase`` (ASE's IsotropicMTKNPT) with
  model M (default ``nacl-efa``; ``nacl-local`` is the local control);
* ``--run summary``: collects what exists into ``benchmarks/results/nacl_npt_comparison.json``
  and ``docs/figures/nacl_npt_comparison.png``.

Start: the last 216-ion 1200 K melt frame of the held-out test split
(``models/data/nacl/nacl_tf_test.extxyz``, a LAMMPS NVT liquid at 1.45 g/cm³); 2 fs steps,
thermostat time 100 fs and barostat time 1000 fs as LAMMPS's ``tdamp``/``pdamp``, samples
every 0.1 ps, the first ``--equilibration-ps`` left out.  Means and standard errors of the
correlated series: :func:`efa_calc.timeseries.mean_and_standard_error`.  Units: g/cm³, eV,
K, bar, ps.  Runs resume (``--run ase`` again continues to the new total).

    python benchmarks/nacl_npt_comparison.py --run ase --production-ps 40
    python benchmarks/nacl_npt_comparison.py --run summary
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ase import Atoms
from ase.io import read, write

from efa_calc.timeseries import mean_and_standard_error

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npt_runs import compare_density, plot_density, read_series, run_efa_md_npt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
T_K, P_BAR, DT_FS, TDAMP_FS, PDAMP_FS, SAMPLE_PS = 1200.0, 1.0, 2.0, 100.0, 1000.0, 0.1
MODELS = ("nacl-efa", "nacl-local", "nacl-all-to-all", "nacl-latent-ewald")


def start_frame() -> Atoms:
    """The last 216-ion 1200 K melt frame of the held-out test split."""
    frames = [f for f in read(ROOT / "models/data/nacl/nacl_tf_test.extxyz", ":")
              if len(f) == 216 and f.info.get("kind") == "melt" and abs(float(f.info["temperature_K"]) - T_K) < 1]
    if not frames:
        raise SystemExit("no 216-ion 1200 K melt frame in nacl_tf_test.extxyz")
    atoms = frames[-1]
    atoms.calc = None
    return atoms


def run(model: str, args) -> None:
    out = args.work / model
    out.mkdir(parents=True, exist_ok=True)
    structure = out / "start.extxyz"
    if not structure.exists():
        write(structure, start_frame())
    path = ROOT / "runs" / model / "export"  # the comparison variants are not bundled
    run_efa_md_npt(out, structure, str(path) if path.is_dir() else model, "ase", temperature_K=T_K,
                   pressure_bar=P_BAR, timestep_fs=DT_FS, tdamp_fs=TDAMP_FS, pdamp_fs=PDAMP_FS,
                   equilibration_ps=args.equilibration_ps, production_ps=args.production_ps, sample_ps=SAMPLE_PS,
                   dtype=args.dtype, seed=args.seed, extra=["--guard", "warn"])


def summary(args) -> dict:
    ref = json.loads((RESULTS / "lammps_nacl_npt.json").read_text())["results"]
    rho_ref = ref["density_g_cm3"]
    out = {"description": __doc__.split("\n")[0], "units": "g/cm^3, eV/ion, ps",
           "settings": {"temperature_K": T_K, "pressure_bar": P_BAR, "timestep_fs": DT_FS, "tdamp_fs": TDAMP_FS,
                        "pdamp_fs": PDAMP_FS, "sample_ps": SAMPLE_PS, "equilibration_ps": args.equilibration_ps,
                        "dtype": args.dtype, "engine": "ase"},
           "lammps_reference": {"density_g_cm3": rho_ref["mean"], "se": rho_ref["se"],
                                "pe_eV_per_ion": ref["pe_eV_per_ion"]["mean"], "se_pe": ref["pe_eV_per_ion"]["se"]},
           "bound_relative": 0.01, "runs": {}}
    series = {}
    for model in MODELS:
        s = read_series(args.work / model / "run" / "log.csv")
        row = None if s is None else compare_density(s, args.equilibration_ps, rho_ref["mean"], rho_ref["se"])
        if row is None:
            continue
        keep = row.pop("keep")
        u, se_u, _ = mean_and_standard_error(s["epot_eV"][keep] / 216)
        wall = args.work / model / "wall_s.txt"
        out["runs"][model] = {**row, "pe_eV_per_ion": u, "se_pe_eV_per_ion": se_u,
                              "within_bound": bool(abs(row["relative_difference_to_lammps"]) <= 0.01),
                              "wall_s": float(wall.read_text()) if wall.exists() else None}
        series[model] = s
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "nacl_npt_comparison.json").write_text(json.dumps(out, indent=1) + "\n")
    if series:
        plot_density(series, out["runs"], (rho_ref["mean"], rho_ref["se"]), args.equilibration_ps,
                     "NPT, 216 NaCl ions, 1200 K, 1 bar", "LAMMPS Tosi–Fumi",
                     ROOT / "docs" / "figures" / "nacl_npt_comparison.png")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", choices=("ase", "summary"), required=True)
    p.add_argument("--model", default="nacl-efa", choices=MODELS)
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "runs" / "nacl_npt", help="run directories")
    p.add_argument("--equilibration-ps", type=float, default=10.0)
    p.add_argument("--production-ps", type=float, default=40.0)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.run == "summary":
        print(json.dumps(summary(args)["runs"], indent=1))
    else:
        run(args.model, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
