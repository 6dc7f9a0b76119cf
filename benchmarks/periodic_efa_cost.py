"""Cost of periodic EFA against the local model, for NaCl-like rock-salt cells of growing size.

Models (random parameters, float32, same widths): F = 32 features, two iterations, 5 Å
cutoff, ℓ ≤ 1; ``periodic_efa`` adds EFA on both iterations with F_qk = F_v = 16,
b_max = π, r_max = 10 Å (ω_max = 0.314 rad/Å) and λ = 4 Å (q_max = 2.42 1/Å at tolerance
1e-12); ``local`` is the same model without it; ``open_efa`` is the molecular EFA block (50
Lebedev points) on the same ions as an isolated cluster (energy + forces only), the cost
periodic EFA replaces.

Cells: n×n×n conventional rock-salt cells (a = 5.64 Å, 8 ions each; ions rattled by
0.1 Å), N = 8n³ from 64 ions.  For every N the script lowers the calculator's jitted
energy+forces+stress call and reports XLA's ``cost_analysis()`` flops (steady, needs no run)
and N_G, the half-space count of reciprocal vectors.  ``--time-sizes`` also times a few warm
calls (wall clock: only meaningful on an idle machine).

    python benchmarks/periodic_efa_cost.py [--cells 2 3 4 6 8 10 13 16 20] [--time-sizes 64 216]
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

A_NACL = 5.64  # Å, conventional cubic cell of rock salt
LAMBDA = 4.0  # Å


def rocksalt(n: int, seed: int = 0):
    """n×n×n conventional rock-salt cells (8n³ ions, Na and Cl), rattled by 0.1 Å (ase Atoms)."""
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=A_NACL, cubic=True).repeat((n, n, n))
    atoms.rattle(0.1, seed=seed)
    return atoms


def models():
    """(name, Checkpoint) of the three variants, random parameters."""
    import jax

    from efa_calc.checkpoint import Checkpoint
    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.nn.config import EFAConfig, ModelConfig
    from efa_calc.nn.energy_model import init_params

    base = dict(num_features=32, num_iterations=2, cutoff=5.0, mp_max_degree=1, num_basis_functions=16,
                output_is_zero_at_init=False)
    efa = dict(iterations=(0, 1), lebedev_num=50, max_frequency=np.pi, max_length=10.0, qk_features=16,
               v_features=16, max_degree=0)
    cfgs = {
        "periodic_efa": ModelConfig(**base, long_range=EFAConfig(**efa, periodic_smoothing=LAMBDA,
                                                                 max_reciprocal_vectors=10_000_000)),
        "local": ModelConfig(**base),
        "open_efa": ModelConfig(**base, long_range=EFAConfig(**efa)),
    }
    z, pos = np.array([11, 17]), np.array([[0.0, 0, 0], [2.8, 0, 0]])
    batch = pad_graphs([z], [pos], [(np.array([0, 1]), np.array([1, 0]))], 8, 16, dtype=np.float32)
    out = {}
    for name, cfg in cfgs.items():
        params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(0), batch))
        out[name] = Checkpoint(cfg, params, ["Na", "Cl"], name=name, periodic=name != "open_efa")
    return out


def graph(atoms, cutoff: float, periodic: bool):
    from efa_calc.backends.base import Graph
    from efa_calc.graphs.neighbors import neighbor_list

    if periodic:
        p = neighbor_list(atoms.positions, cutoff, atoms.cell.array, atoms.pbc)
        return Graph(atoms.numbers, atoms.positions, p.dst, p.src, p.shifts, atoms.cell.array)
    p = neighbor_list(atoms.positions, cutoff)
    return Graph(atoms.numbers, atoms.positions, p.dst, p.src)


def measure(ckpt, atoms, periodic: bool, timed: bool) -> dict:
    from efa_calc.backends.single import Potential
    from efa_calc.graphs.reciprocal import periodic_efa
    from efa_calc.nn.long_range.reciprocal import miller_indices

    pot = Potential(ckpt, "float32", edge_chunk=0)  # one pass: cost_analysis counts a loop body once
    g = graph(atoms, ckpt.config.cutoff, periodic)
    row = {"pairs": int(len(g.dst))}
    lr = periodic_efa(ckpt.config)
    if lr is not None:
        row["n_G"] = int(len(miller_indices(atoms.cell.array, lr.reciprocal_cutoff[1])))
    t0 = time.perf_counter()
    lowered = pot.lower([g])
    compiled = lowered.compile()
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    row["gflop"] = round(float(cost["flops"]) / 1e9, 4)
    mem = compiled.memory_analysis()
    if mem is not None:
        row["temp_MiB"] = round(mem.temp_size_in_bytes / 2**20, 1)
    if timed:
        pot.predict([g])
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            pot.predict([g])
            times.append(time.perf_counter() - t0)
        row["time_ms"] = round(1e3 * statistics.median(times), 1)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[2, 3, 4, 6, 8, 10, 13, 16, 20])
    ap.add_argument("--time-sizes", type=int, nargs="*", default=[64, 216])
    ap.add_argument("--skip-open", action="store_true", help="no open-EFA cluster column")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/periodic_efa_cost.json"))
    args = ap.parse_args()
    ckpts = models()
    rows = []
    for n in args.cells:
        atoms = rocksalt(n)
        cluster = atoms.copy()
        cluster.pbc = False
        row = {"cells": n, "N": len(atoms), "volume_A3": round(atoms.get_volume(), 1)}
        timed = len(atoms) in args.time_sizes
        for name, ckpt in ckpts.items():
            if name == "open_efa" and args.skip_open:
                continue
            try:
                row[name] = measure(ckpt, cluster if name == "open_efa" else atoms, name != "open_efa", timed)
            except Exception as exc:  # out of memory at compile, ...
                row[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        pe, lo = row["periodic_efa"], row["local"]
        if "gflop" in pe and "gflop" in lo:
            row["efa_over_local"] = round(pe["gflop"] / lo["gflop"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(meta(rows), indent=1) + "\n")


def meta(rows):
    import jax

    return {
        "what": "XLA cost_analysis flops of one energy+forces+stress call (periodic_efa, local) or energy+forces "
                "(open_efa on the same ions as a cluster), float32, NaCl rock-salt cells; n_G = half-space "
                "reciprocal vectors of the cell; time_ms from a loaded 2-core machine (indicative only)",
        "lambda_A": LAMBDA, "omega_max_rad_per_A": np.pi / 10.0, "platform": platform.platform(),
        "jax": jax.__version__, "device": str(jax.devices()[0]), "rows": rows,
    }


if __name__ == "__main__":
    main()
