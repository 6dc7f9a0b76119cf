"""Plots for ``docs/performance.md`` from the benchmark JSON files in ``benchmarks/results/``.

    python benchmarks/plot_performance.py [--results benchmarks/results] [--out docs/figures]

One figure per benchmark whose JSON exists (missing ones are skipped with a note):
``performance_model_scaling.png`` (time and peak memory per atom against N, EFA and
local), ``performance_reference.png`` (per-call time, reference-style vs efa-calc),
``performance_kernel_cost.png`` (bytes accessed per layer of one C9H4 call) and
``performance_md_throughput.png`` (steps/s of the MD engines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load(results: Path, name: str):
    p = results / name
    if not p.exists():
        print(f"skip: {p} not found")
        return None
    return json.loads(p.read_text())


def model_scaling(results: Path, out: Path) -> None:
    runs = {k: _load(results, f"model_scaling_{k}.json") for k in ("efa", "local")}
    runs = {k: v for k, v in runs.items() if v and v.get("rows")}
    if not runs:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, r in runs.items():
        n = [row["atoms"] for row in r["rows"]]
        a1.plot(n, [1e3 * row["seconds"] / row["atoms"] for row in r["rows"]], "o-", label=f"SN2 {k}")
        a2.plot(n, [row["peak_rss_GiB"] for row in r["rows"]], "o-", label=f"SN2 {k}")
    a1.set(xscale="log", xlabel="atoms N", ylabel="ms per atom (energy + forces)", title="time per atom")
    a2.set(xscale="log", xlabel="atoms N", ylabel="peak RSS (GiB)", title="peak memory (fresh process)")
    for a in (a1, a2):
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "performance_model_scaling.png", dpi=120)
    plt.close(fig)


def reference(results: Path, out: Path) -> None:
    r = _load(results, "reference_comparison.json")
    if not r:
        return
    rows = r["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    labels = [row["case"] for row in rows]
    x = range(len(rows))
    for i, (key, name) in enumerate((("reference_style_s", "reference-style"), ("efa_calc_kernel_s", "efa-calc kernel"),
                                     ("efa_calc_calculator_s", "EFACalculator"))):
        ax.bar([j + 0.27 * (i - 1) for j in x], [row[key] for row in rows], width=0.27, label=name)
    ax.set(yscale="log", ylabel="seconds per energy+forces call", xticks=list(x), xticklabels=labels,
           title="reference checkpoints, float32, CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "performance_reference.png", dpi=120)
    plt.close(fig)


def kernel_cost(results: Path, out: Path) -> None:
    r = _load(results, "kernel_cost.json")
    if not r or "cumulene-efa C9H4" not in r["cases"]:
        return
    layers = r["cases"]["cumulene-efa C9H4"]["layers_MB"]
    top = sorted(layers.items(), key=lambda kv: -kv[1])[:14]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.barh([k for k, _ in top][::-1], [v for _, v in top][::-1])
    ax.set(xlabel="MB written by top-level HLO instructions", title="one C9H4 cumulene-efa call, by layer")
    fig.tight_layout()
    fig.savefig(out / "performance_kernel_cost.png", dpi=120)
    plt.close(fig)


def md_throughput(results: Path, out: Path) -> None:
    r = _load(results, "md_throughput.json")
    rows = (r or {}).get("rows")
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [f"{row.get('system', '')} {row.get('engine', '')} R={row.get('replicas', 1)} {row.get('dtype', '')}"
              for row in rows]
    ax.barh(labels[::-1], [row.get("replica_steps_per_s", row.get("steps_per_s", 0.0)) for row in rows][::-1])
    ax.set(xscale="log", xlabel="MD steps per second (all replicas)", title="MD throughput, CPU")
    fig.tight_layout()
    fig.savefig(out / "performance_md_throughput.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    args = ap.parse_args(argv)
    results, out = Path(args.results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fn in (model_scaling, reference, kernel_cost, md_throughput):
        fn(results, out)
    print(f"figures in {out}")


if __name__ == "__main__":
    main()
