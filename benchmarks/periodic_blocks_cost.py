"""XLA's cost of one energy+forces+stress call of the local model and of the periodic
long-range blocks (all_to_all with minimum image, latent_ewald with Ewald and PME) on
NaCl-like rock-salt cells from 64 ions up, and the accuracy of latent_ewald's PME/P3M.

Cells: n × n × n conventional rock-salt cells (a = 5.64 Å, 8n³ ions, every ion rattled by
0.1 Å), float32, the calculator's padded shapes.  Model (random parameters): F = 32, two
iterations, 5 Å cutoff, message degree 2, the long-range block in the last iteration
(scalar input): ``all_to_all`` with 4 heads; ``latent_ewald`` with 4 latent charge
channels, σ = 1 Å, Ewald ``accuracy`` (default 1e-6, λ = 0.60 Å) or PME with mesh
spacing σ/2.  Figures are ``compiled.cost_analysis()`` flops and bytes accessed (steady
on a busy machine; the big sizes are compiled only, never run).  ``--time N`` also times
warm calls at the smallest size (wall clock: the machine of record was loaded, so the
times are indicative only).

The accuracy rows compare latent_ewald's Coulomb energy of fixed random neutral charges
on the 64-ion cell, PME and P3M at several mesh spacings, against Ewald at accuracy 1e-12.

    python benchmarks/periodic_blocks_cost.py [--repeats 2 4 8 16] [--time 20] [--accuracy 1e-6]

Writes ``benchmarks/results/periodic_blocks_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ase.build import bulk  # noqa: E402

from efa_calc.backends.base import Graph  # noqa: E402
from efa_calc.backends.single import Potential  # noqa: E402
from efa_calc.checkpoint import Checkpoint  # noqa: E402
from efa_calc.graphs.neighbors import periodic_pairs  # noqa: E402
from efa_calc.graphs.padding import pad_graphs  # noqa: E402
from efa_calc.nn.config import ModelConfig  # noqa: E402
from efa_calc.nn.energy_model import init_params  # noqa: E402

CUTOFF = 5.0


def blocks(accuracy: float) -> dict[str, dict | None]:
    les = {"kind": "latent_ewald", "iterations": [1], "num_charges": 4, "smearing": 1.0}
    return {
        "local": None,
        "all_to_all": {"kind": "all_to_all", "iterations": [1], "num_heads": 4},
        "latent_ewald_ewald": {**les, "method": "ewald", "accuracy": accuracy},
        "latent_ewald_pme": {**les, "method": "pme", "mesh_spacing": 0.5},
    }


def checkpoint(long_range) -> Checkpoint:
    cfg = ModelConfig.from_dict({"num_features": 32, "num_iterations": 2, "cutoff": CUTOFF, "mp_max_degree": 2,
                                 "output_is_zero_at_init": False, "long_range": long_range})
    z = np.array([11, 17, 11, 17])
    pos = np.array([[0.0, 0, 0], [2.8, 0, 0], [0, 2.8, 0], [2.8, 2.8, 0.3]])
    dst, src = np.nonzero(~np.eye(4, dtype=bool))
    params = init_params(cfg, jax.random.PRNGKey(0), pad_graphs([z], [pos], [(dst, src)], 8, 16, dtype=np.float32))
    return Checkpoint(cfg, jax.tree_util.tree_map(np.asarray, params), ["Na", "Cl"], name="cost", periodic=True)


def nacl_graph(repeat: int) -> tuple[Graph, object]:
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.1, seed=repeat)
    p = periodic_pairs(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
    return Graph(atoms.numbers, atoms.positions, p.dst, p.src, p.shifts, atoms.cell.array), atoms


def cost_rows(repeats, accuracy: float) -> list[dict]:
    rows = []
    models = {name: Potential(checkpoint(lr), "float32") for name, lr in blocks(accuracy).items()}
    for n in repeats:
        graph, atoms = nacl_graph(n)
        for name, potential in models.items():
            lr = potential.config.long_range
            grid = None if lr is None else lr.reciprocal_grid(atoms.cell.array[None])
            t0 = time.perf_counter()
            cost = potential.cost([graph])
            rows.append({"block": name, "ions": len(atoms), "cell_A": float(atoms.cell[0, 0]),
                         "pairs": int(len(graph.dst)), "reciprocal_grid": grid, **cost,
                         "compile_s": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def timed_rows(repeat: int, calls: int, accuracy: float) -> list[dict]:
    graph, atoms = nacl_graph(repeat)
    rows = []
    for name, lr in blocks(accuracy).items():
        potential = Potential(checkpoint(lr), "float32")
        batch = potential.batch([graph])
        potential.run(batch)  # compile
        t0 = time.perf_counter()
        for _ in range(calls):
            potential.run(batch)
        rows.append({"block": name, "ions": len(atoms), "seconds_per_call": (time.perf_counter() - t0) / calls})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def accuracy_rows() -> list[dict]:
    import jax.numpy as jnp

    from efa_calc.nn.long_range.latent_ewald import LatentEwaldConfig, latent_coulomb_energies

    _, atoms = nacl_graph(2)
    rng = np.random.default_rng(0)
    q = rng.normal(size=len(atoms))
    q -= q.mean()
    n = len(q)

    def energy(cfg):
        with jax.enable_x64(True):
            e = latent_coulomb_energies(cfg, jnp.asarray(q)[:, None], jnp.asarray(atoms.positions),
                                        jnp.zeros(n, jnp.int32), jnp.ones(n, bool), 1, n,
                                        jnp.asarray(atoms.cell.array)[None], cfg.reciprocal_grid(atoms.cell.array[None]))
            return float(jnp.sum(e))

    ref = energy(LatentEwaldConfig(iterations=(0,), smearing=1.0, accuracy=1e-12))
    rows = []
    for acc in (1e-4, 1e-6, 1e-8):
        e = energy(LatentEwaldConfig(iterations=(0,), smearing=1.0, accuracy=acc))
        rows.append({"method": "ewald", "accuracy": acc, "relative_error": abs(e - ref) / abs(ref)})
    for method in ("pme", "p3m"):
        for h in (1.0, 0.5, 0.25):
            cfg = LatentEwaldConfig(iterations=(0,), smearing=1.0, method=method, mesh_spacing=h)
            e = energy(cfg)
            rows.append({"method": method, "mesh_spacing_A": h, "grid": cfg.reciprocal_grid(atoms.cell.array[None]),
                         "relative_error": abs(e - ref) / abs(ref)})
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, nargs="+", default=[2, 4, 8, 16], help="rock-salt cells per axis (8n³ ions)")
    ap.add_argument("--accuracy", type=float, default=1e-6, help="latent_ewald Ewald accuracy")
    ap.add_argument("--time", type=int, default=20, help="warm calls timed at the smallest size (0: none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/periodic_blocks_cost.json"))
    args = ap.parse_args()
    result = {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
              "device": str(jax.devices()[0]), "dtype": "float32", "accuracy_rows": accuracy_rows(),
              "cost_rows": cost_rows(args.repeats, args.accuracy)}
    if args.time:
        result["timed_rows"] = timed_rows(min(args.repeats), args.time, args.accuracy)
        result["timing_note"] = "wall clock on a loaded 2-core machine shared with other jobs: indicative only"
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
