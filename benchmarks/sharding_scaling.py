"""Scaling of sharded evaluation (issue 15): memory per device, HLO collective bytes, time.

Runs on D host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4`` is set here
before jax starts).  Everything except ``--time`` is measured from compiled executables
(deterministic): ``memory_analysis()`` of the per-device program, and the collectives
(all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute) parsed from
``compiled.as_text()``.

    python benchmarks/sharding_scaling.py memory              # 8000-atom cluster, D = 1, 2, 4
    python benchmarks/sharding_scaling.py bytes               # collective bytes vs N, EFA and all-to-all
    python benchmarks/sharding_scaling.py time                # a few evaluations, D = 1, 2, 4

Model: the bundled ``sn2-efa`` architecture (F = 64, L = 2, T = 2, cutoff 5 Å, EFA at
t = 0, 1 with M = 50, F_qk = 16, F_v = 32) and the same architecture with all-to-all
attention (4 heads, same widths) with random parameters.  Clusters: a jittered simple
cubic lattice (1 atom per 10 Å³, as dense as liquid water's heavy atoms and hydrogens),
cut to a sphere, H and C.  float32 (the production precision) unless ``--float64``.
JSON goes to ``benchmarks/results/sharding_<what>.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from efa_calc.graphs.padding import edge_bucket, node_bucket, pad_graphs  # noqa: E402
from efa_calc.checkpoint import load_checkpoint  # noqa: E402
from efa_calc.models import resolve_model  # noqa: E402
from efa_calc.graphs.neighbors import neighbor_pairs  # noqa: E402
from efa_calc.checkpoint import Checkpoint  # noqa: E402
from efa_calc.nn.energy_model import init_params  # noqa: E402
from efa_calc.nn.long_range.all_to_all import AllToAllConfig  # noqa: E402
from efa_calc.backends.single import compiled_energy_and_forces  # noqa: E402
from efa_calc.backends.sharded import ShardedPotential  # noqa: E402
from kernel_cost import HLO_DTYPE_BYTES as DTYPE_BYTES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def cluster(n: int, seed: int = 0, spacing: float = 10.0 ** (1 / 3)) -> tuple[np.ndarray, np.ndarray]:
    """n atoms (H/C) of a jittered cubic lattice (spacing Å) cut to a sphere, centred."""
    rng = np.random.default_rng(seed)
    k = int(np.ceil((6 * n / np.pi) ** (1 / 3))) + 2
    g = (np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3) - (k - 1) / 2) * spacing
    g = g[np.argsort(np.linalg.norm(g, axis=1), kind="stable")[:n]]
    pos = g + rng.uniform(-0.25, 0.25, g.shape) * spacing
    return rng.choice([1, 6], n).astype(np.int32), pos - pos.mean(0)


def models():
    ck = load_checkpoint(resolve_model("sn2-efa"))
    efa_cfg = ck.config
    a2a = AllToAllConfig(iterations=(0, 1), num_heads=4, qk_features=16, v_features=32, max_degree=0)
    a2a_cfg = efa_cfg.replace(long_range=a2a)
    z, pos = cluster(8)
    b = pad_graphs([z], [pos], [neighbor_pairs(pos, efa_cfg.cutoff)], 8, 256)
    a2a_params = init_params(a2a_cfg, jax.random.PRNGKey(0), b)["params"]
    return {"efa": (efa_cfg, {"params": ck.params} if "params" not in ck.params else ck.params),
            "all_to_all": (a2a_cfg, {"params": a2a_params})}


def collectives(hlo: str, num_devices: int) -> list[dict]:
    """Every collective op of an HLO module: op, result shapes and its payload in bytes:
    the full logical array (all-reduce: the array; all-gather: its result; reduce-scatter:
    its operand = D × result; all-to-all: the D blocks).  A ring moves ≈ 2(D−1)/D (all-reduce)
    or (D−1)/D (the others) of the payload in and out of every device."""
    out = []
    pat = re.compile(r"=\s*(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo.splitlines():
        m = pat.search(line)
        if not m:
            continue
        shapes = re.findall(r"(\w+)\[([\d,]*)\]", m.group(1))
        nbytes, dims = 0, []
        for dt, d in shapes:
            if dt not in DTYPE_BYTES:
                continue
            size = int(np.prod([int(x) for x in d.split(",") if x])) if d else 1
            nbytes += size * DTYPE_BYTES[dt]
            dims.append(f"{dt}[{d}]")
        if m.group(3) and m.group(2) in ("all-gather", "all-reduce", "collective-permute") and len(dims) > 1:
            dims, nbytes = dims[len(dims) // 2:], nbytes // 2  # async start: (operand, result)
        if m.group(2) == "reduce-scatter":
            nbytes *= num_devices  # the full (operand) array, as for all-gather's result
        out.append({"op": m.group(2), "shapes": dims, "bytes": nbytes})
    return out


def single_device(cfg, params, z, pos, dtype):
    dst, src = neighbor_pairs(pos, cfg.cutoff)
    n = len(z)
    b = pad_graphs([z], [pos], [(dst, src)], node_bucket(n), edge_bucket(len(dst)), dtype=dtype)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), params)
    return compiled_energy_and_forces(cfg).lower(p, b), (p, b), (dst, src)


def memory_figures(compiled) -> dict:
    m = compiled.memory_analysis()
    d = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output", "generated_code")}
    d["temp_plus_argument"] = d["temp"] + d["argument"]
    return d


def run_memory(args):
    cfg, params = models()["efa"]
    z, pos = cluster(args.atoms)
    dtype = np.float64 if args.float64 else np.float32
    rows = []
    with jax.enable_x64(args.float64):
        lowered, _, (dst, src) = single_device(cfg, params, z, pos, dtype)
        base = memory_figures(lowered.compile())
    rows.append({"devices": "1 (plain)", **base, "ratio": 1.0})
    print(f"N = {args.atoms}, pairs = {len(dst)}, {'float64' if args.float64 else 'float32'}")
    print(f"{'devices':>10} {'temp MiB':>10} {'arg MiB':>9} {'temp+arg MiB':>13} {'ratio':>7}  capacities")
    print(f"{'1 (plain)':>10} {base['temp'] / 2**20:10.1f} {base['argument'] / 2**20:9.1f} "
          f"{base['temp_plus_argument'] / 2**20:13.1f} {1.0:7.3f}")
    for d in args.devices:
        sp = ShardedPotential(Checkpoint(cfg, params, ['H', 'C']), d, "float64" if args.float64 else "float32")
        inputs = sp.plan(z, pos, dst, src)
        mem = memory_figures(sp.lower_inputs(inputs).compile())
        ratio = mem["temp_plus_argument"] / base["temp_plus_argument"]
        counts = np.bincount(sp.owner, minlength=d).tolist()
        ghosts = int(inputs.send_mask.sum())
        rows.append({"devices": d, **mem, "ratio": ratio, "capacities": sp.capacities._asdict(),
                     "owned_per_device": counts, "ghosts_total": ghosts})
        print(f"{d:>10} {mem['temp'] / 2**20:10.1f} {mem['argument'] / 2**20:9.1f} "
              f"{mem['temp_plus_argument'] / 2**20:13.1f} {ratio:7.3f}  {tuple(sp.capacities)} ghosts={ghosts}")
    per_atom = base["temp_plus_argument"] / args.atoms
    print(f"single device: {per_atom / 2**20:.3f} MiB per atom (temp+argument)")
    return {"atoms": args.atoms, "pairs": int(len(dst)), "float64": args.float64, "rows": rows,
            "single_device_bytes_per_atom": per_atom}


def efa_formula(cfg, d: int, s: int, b: int) -> dict:
    """Bytes per device and step predicted for the EFA model (see docs/scaling.md)."""
    lr = cfg.long_range
    m = lr.lebedev_num
    layers = len(lr.iterations)
    # query/key width D_qk = (L_lr+1)²·F_qk on the scalar/EFA input; value width D_v likewise
    deg = [0 if (t == cfg.num_iterations - 1 or lr.max_degree == 0) else lr.max_degree for t in lr.iterations]
    per_layer = [2 * m * (l + 1) ** 2 * lr.qk_features * (l + 1) ** 2 * lr.v_features * b for l in deg]
    # x exchanged before every iteration: the embedding (F) before t = 0, then P·(L+1)²·F with
    # P = 1 after t = 0 (embedding ⊗ basis has no pseudotensors), P = 2 later (as the
    # compiled HLO's all-to-all shapes show)
    feat = [cfg.num_features] + [(1 if t == 1 else 2) * (cfg.mp_max_degree + 1) ** 2 * cfg.num_features
                                 for t in range(1, cfg.num_iterations)]
    # forward: positions and every exchange; backward: the same without the embedding's
    # (it depends on the atomic numbers only, so no cotangent flows back)
    halo = d * s * ((3 + sum(feat)) + (3 + sum(feat[1:]))) * b
    return {"efa_allreduce_per_layer": per_layer, "efa_allreduce": sum(per_layer), "halo_all_to_all": halo}


def a2a_formula(cfg, d: int, c_local: int, b: int) -> dict:
    """All-to-all attention, D·C_local rows (C_local = owned slots per device).  Forward all-gathers: per layer keys and values
    (F_qk + F_v numbers per row, scalar block input), once positions (3) and the mask
    (1 byte).  Backward reduce-scatters (their transposes): positions once per layer (the
    distance bias), keys and values for layers t ≥ 1 only (at t = 0 they depend on the
    atomic numbers alone, and XLA drops their cotangents)."""
    lr = cfg.long_range
    rows = d * c_local
    layers = len(lr.iterations)
    per_layer = rows * (lr.qk_features + lr.v_features) * b
    gather = layers * per_layer + rows * (3 * b + 1)
    scatter = sum(1 for t in lr.iterations if t > 0) * per_layer + layers * rows * 3 * b
    return {"a2a_gather_per_layer": per_layer, "a2a_gather": gather, "a2a_reduce_scatter": scatter,
            "a2a_total": gather + scatter}


def run_bytes(args):
    mods = models()
    d = 4
    dtype = "float64" if args.float64 else "float32"
    rows = []
    if args.reuse:  # recompute the formulas for the measured collectives of an earlier run
        rows = json.loads((RESULTS / "sharding_bytes.json").read_text())["rows"]
    for kind in () if args.reuse else ("efa", "all_to_all"):
        cfg, params = mods[kind]
        for n in args.sizes:
            if kind == "all_to_all" and n > args.max_a2a:
                continue
            z, pos = cluster(n)
            dst, src = neighbor_pairs(pos, cfg.cutoff)
            sp = ShardedPotential(Checkpoint(cfg, params, ['H', 'C']), d, dtype)
            inputs = sp.plan(z, pos, dst, src)
            ops = collectives(sp.lower_inputs(inputs).compile().as_text(), d)
            rows.append({"model": kind, "atoms": n, "capacities": sp.capacities._asdict(), "collectives": ops})
    return bytes_table(rows, mods, d, dtype)


def bytes_table(rows, mods, d, dtype):
    b = 8 if dtype == "float64" else 4
    print(f"D = {d}, {dtype}; bytes per device and step (forward + backward), from compiled HLO")
    print(f"{'model':>10} {'N':>7} {'all-reduce':>12} {'of which EFA':>13} {'formula EFA':>12} "
          f"{'all-to-all':>11} {'formula halo':>13} {'all-gather':>11} {'red-scatter':>12} {'fml gather':>12} "
          f"{'fml scatter':>12}")
    for row in rows:
        kind, n, ops, cap = row["model"], row["atoms"], row["collectives"], row["capacities"]
        cfg = mods[kind][0]
        tot = {c: sum(o["bytes"] for o in ops if o["op"] == c) for c in COLLECTIVES}
        big_ar = sum(o["bytes"] for o in ops if o["op"] == "all-reduce" and o["bytes"] > 64)
        halo = efa_formula(mods["efa"][0], d, cap["ghost"], b)["halo_all_to_all"]  # same MPNN
        row.update(totals=tot, allreduce_over_64_bytes=big_ar)
        if kind == "efa":
            row["formula"] = efa_formula(cfg, d, cap["ghost"], b)
            print(f"{kind:>10} {n:7d} {tot['all-reduce']:12d} {big_ar:13d} {row['formula']['efa_allreduce']:12d} "
                  f"{tot['all-to-all']:11d} {halo:13d} {tot['all-gather']:11d} {tot['reduce-scatter']:12d}")
        else:
            row["formula"] = {**a2a_formula(cfg, d, cap["own"], b), "halo_all_to_all": halo}
            f = row["formula"]
            print(f"{kind:>10} {n:7d} {tot['all-reduce']:12d} {'':>13} {'':>12} {tot['all-to-all']:11d} "
                  f"{halo:13d} {tot['all-gather']:11d} {tot['reduce-scatter']:12d} {f['a2a_gather']:12d} "
                  f"{f['a2a_reduce_scatter']:12d}")
    # formula extrapolation 10^3 … 10^6 (per device, D = 4; halo from the measured ghost slots ∝ N^(2/3))
    cfg = mods["efa"][0]
    table = []
    efa_rows = [r for r in rows if r["model"] == "efa"]
    g0 = efa_rows[-1]["capacities"]["ghost"] / efa_rows[-1]["atoms"] ** (2 / 3)
    for n in (10**3, 10**4, 10**5, 10**6):
        s = int(np.ceil(g0 * n ** (2 / 3)))
        fe = efa_formula(cfg, d, s, b)
        fa = a2a_formula(mods["all_to_all"][0], d, int(np.ceil(n / d)), b)
        table.append({"atoms": n, "efa_allreduce": fe["efa_allreduce"], "halo_all_to_all": fe["halo_all_to_all"],
                      "a2a_gather_forward": fa["a2a_gather"], "a2a_total": fa["a2a_total"], "ghost_slots": s})
    print("formula, D = 4 (halo slots scaled as N^(2/3) from the largest measured cluster):")
    for t in table:
        print(f"  N = {t['atoms']:>8d}: EFA all-reduce {t['efa_allreduce'] / 2**20:8.3f} MiB, halo "
              f"{t['halo_all_to_all'] / 2**20:8.2f} MiB, all-to-all attention gathers + scatters "
              f"{t['a2a_total'] / 2**20:10.2f} MiB")
    return {"devices": d, "dtype": dtype, "rows": rows, "formula_table": table}


def run_time(args):
    cfg, params = models()["efa"]
    z, pos = cluster(args.atoms)
    dtype = "float32"
    dst, src = neighbor_pairs(pos, cfg.cutoff)
    out = []
    lowered, call_args, _ = single_device(cfg, params, z, pos, np.float32)
    fn = compiled_energy_and_forces(cfg)
    jax.block_until_ready(fn(*call_args))
    ts = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*call_args))
        ts.append(time.perf_counter() - t)
    out.append({"devices": "1 (plain)", "seconds": ts})
    print(f"N = {args.atoms}; median of {args.repeats} (noisy: 2 physical cores shared by all host devices)")
    print(f"  plain single device: {np.median(ts):.3f} s")
    for d in args.devices:
        sp = ShardedPotential(Checkpoint(cfg, params, ['H', 'C']), d, dtype)
        sp(z, pos, dst, src)
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            sp(z, pos, dst, src)
            ts.append(time.perf_counter() - t)
        out.append({"devices": d, "seconds": ts})
        print(f"  {d} device(s), sharded (incl. host-side plan): {np.median(ts):.3f} s")
    return {"atoms": args.atoms, "rows": out, "cpu_count": os.cpu_count()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("memory", "bytes", "time"))
    ap.add_argument("--atoms", type=int, default=8000)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    ap.add_argument("--max-a2a", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--float64", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="bytes: recompute formulas for the saved measurements")
    args = ap.parse_args()
    res = {"memory": run_memory, "bytes": run_bytes, "time": run_time}[args.what](args)
    res["jax"] = jax.__version__
    res["devices_platform"] = jax.devices()[0].platform
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"sharding_{args.what}.json"
    path.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
