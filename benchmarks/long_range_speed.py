"""Time and memory of one energy+forces call for each long-range design, against N.

Models: the SN2 comparison hyperparameters (``benchmarks/long_range/sn2-cmp-*.toml``: two
iterations, 5 Å cutoff, equal parameter budgets of ~83 k) with fresh parameters, float32:

* ``efa``        EFA, 50-point Lebedev rule (pair kernel for ≤ 64 atoms, linear order above)
* ``efa_974``    the same block on the 974-point grid (what frequencies 12.5× higher need)
* ``efa_exact``  the same block with its exact j₀ kernel, O(N²)
* ``all_to_all`` exact softmax attention over all atoms, O(N²)
* ``local``      no long-range block (F = 83)
* ``local_mara`` local + MARA edge gate (F = 80)

Structures: random clusters (jittered simple-cubic lattice cut to a sphere, density
0.1 Å⁻³, H/C) with N atoms, one structure per call.  For every (model, N) the script
compiles the calculator's jitted call once and reports

* ``time_ms``: median wall time of 5 warm calls of ``atoms.get_forces()`` (neighbour list
  included);
* ``temp_MiB``/``argument_MiB``: XLA's ``memory_analysis()`` of the compiled call;
* ``gflop``: XLA's ``cost_analysis()`` flops.

Sizes whose predicted memory exceeds ``--max-gib`` are not run (reported as not fitting).

    python benchmarks/long_range_speed.py [--sizes 13 64 256 1024 4096] [--out benchmarks/results/long_range_speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "efa": "sn2-cmp-efa",
    "efa_974": "sn2-cmp-efa",
    "efa_exact": "sn2-cmp-efa",
    "all_to_all": "sn2-cmp-all-to-all",
    "local": "sn2-cmp-local",
    "local_mara": "sn2-cmp-mara",
}


def cluster(n: int, density: float = 0.1, seed: int = 0) -> np.ndarray:
    """n points of a jittered simple-cubic lattice (spacing density^(-1/3) Å, jitter ±0.25 Å)
    nearest the origin: a compact cluster with no pair closer than ~1.6 Å."""
    rng = np.random.default_rng(seed)
    a = density ** (-1 / 3)
    m = int(np.ceil((n / (4 / 3 * np.pi)) ** (1 / 3))) + 2
    g = np.arange(-m, m + 1) * a
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pts = pts[np.argsort(np.linalg.norm(pts, axis=1), kind="stable")[:n]]
    return pts + rng.uniform(-0.25, 0.25, pts.shape)


def model(variant: str):
    import jax

    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.checkpoint import Checkpoint
    from efa_calc.graphs.neighbors import neighbor_pairs
    from efa_calc.nn.energy_model import init_params
    from efa_calc.train import load_train_config

    cfg = load_train_config(ROOT / "benchmarks" / "long_range" / f"{VARIANTS[variant]}.toml").model
    if variant == "efa_exact":
        cfg = cfg.for_evaluation(efa_exact=True)
    elif variant == "efa_974":
        cfg = cfg.for_evaluation(lebedev_num=974)
    pos = cluster(6)
    batch = pad_graphs([np.array([1, 6, 1, 6, 1, 6])], [pos], [neighbor_pairs(pos, cfg.cutoff)], 8, 64, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(0), batch))
    return Checkpoint(cfg, params, ["H", "C"], name=variant)


def measure(variant: str, n: int, max_gib: float, calls: int = 5) -> dict:
    import jax
    from ase import Atoms

    from efa_calc import EFACalculator
    from efa_calc.backends.base import Graph
    from efa_calc.backends.single import tight_slots
    from efa_calc.graphs.neighbors import neighbor_pairs

    ckpt = model(variant)
    pos = cluster(n)
    z = np.where(np.random.default_rng(1).random(n) < 0.5, 1, 6)
    pairs = neighbor_pairs(pos, ckpt.config.cutoff)
    graph = Graph(z, pos, *pairs)
    slots = tight_slots([graph])
    calc = EFACalculator(ckpt, strict=False)
    with jax.enable_x64(False):
        compiled = calc.potentials[0].lower([graph], slots).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    row = {"variant": variant, "N": n, "pairs": int(len(pairs[0])), "slots": slots.nodes_per_graph,
           "temp_MiB": mem.temp_size_in_bytes / 2**20, "argument_MiB": mem.argument_size_in_bytes / 2**20,
           "gflop": float(cost.get("flops", float("nan"))) / 1e9,
           "bytes_accessed_MB": float(cost.get("bytes accessed", float("nan"))) / 1e6}
    if (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2**30 > max_gib:
        row["time_ms"] = None
        row["note"] = f"needs more than {max_gib} GiB: not run"
        return row
    atoms = Atoms(z, pos)
    atoms.calc = calc
    atoms.get_forces()  # compile + warm
    times = []
    for k in range(calls):
        atoms.positions = pos + 1e-3 * (k + 1)  # a new call, same shapes
        t0 = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - t0)
    row["time_ms"] = 1e3 * statistics.median(times)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[13, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--max-gib", type=float, default=16.0, help="skip runs whose compiled call needs more (GiB)")
    p.add_argument("--limit", nargs="*", default=["efa_974=4096", "efa_exact=4096", "local_mara=1024"],
                   metavar="VARIANT=N", help="largest N to run for a variant (time on 2 CPU cores)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "long_range_speed.json"))
    args = p.parse_args(argv)
    limits = {k: int(v) for k, v in (item.split("=") for item in args.limit)}
    rows = []
    print(f"{'variant':12s} {'N':>6s} {'pairs':>8s} {'time ms':>9s} {'GFLOP':>8s} {'temp MiB':>9s}")
    for n in args.sizes:
        for v in args.variants:
            if n > limits.get(v, n):
                continue
            try:
                row = measure(v, n, args.max_gib)
            except Exception as exc:  # out of memory at compile or run time: record, go on
                row = {"variant": v, "N": n, "time_ms": None, "note": f"{type(exc).__name__}: {str(exc)[:200]}"}
            rows.append(row)
            t = "-" if row.get("time_ms") is None else f"{row['time_ms']:.1f}"
            print(f"{v:12s} {n:6d} {row.get('pairs', 0):8d} {t:>9s} {row.get('gflop', float('nan')):8.2f} "
                  f"{row.get('temp_MiB', float('nan')):9.1f} {row.get('note', '')}", flush=True)
    import jax

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()} {platform.processor()}", "jax": jax.__version__,
            "device": str(jax.devices()[0]), "dtype": "float32", "density_per_A3": 0.1}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")
    plot(out, ROOT / "docs" / "figures" / "long_range_speed.png")


def plot(json_path: Path, png: Path) -> None:
    """Time and compiled memory against N, one line per variant (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(json_path).read_text())["rows"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for v in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == v and "temp_MiB" in r]
        timed = [r for r in mine if r.get("time_ms")]
        a.loglog([r["N"] for r in timed], [r["time_ms"] / 1e3 for r in timed], "-o", ms=3, label=v)
        b.loglog([r["N"] for r in mine], [(r["temp_MiB"] + r["argument_MiB"]) / 1024 for r in mine], "-o", ms=3, label=v)
    a.set(xlabel="atoms N", ylabel="energy + forces call (s)")
    b.set(xlabel="atoms N", ylabel="compiled memory (GiB)")
    b.axhline(24, color="grey", ls=":", lw=1)
    a.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
