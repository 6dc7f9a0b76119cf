"""Time and peak memory of one energy+forces evaluation versus system size.

Random condensed clusters (uniform in a sphere, density 0.1 Å⁻³, H and C, minimum
distance 0.9 Å, ~50 neighbours per atom within 5 Å) with the exact hyperparameters of the
paper's SN2 checkpoints (``SN2_EFA``: F = 128, two iterations, 5 Å cutoff, EFA in both
iterations with M = 50, F_qk = 16, F_v = 32, EFA input degree 0; ``SN2_LOCAL``: the
local control, F = 162) and random parameters.  Each size runs in a fresh subprocess so
its peak resident memory (``ru_maxrss``) is its own.  Linear-cost EFA means time ∝ N at
fixed density; the fitted log–log slope, the time-per-atom ratio between the largest size
and N = 1000, and the marginal peak memory per atom between N = 1000 and the largest size
are printed.  A size that does not fit (killed or out of memory) ends the sweep: the last
size that ran is the largest N that fits this machine.

    python benchmarks/model_scaling.py [--sizes 250 500 1000 2000 4000 8000 16000 32000] [--local]
                                       [--message-passing native|cuequivariance]

On a GPU each row also gives the device's peak memory (``peak_device_GiB``, from
``memory_stats()``); a size that runs out of device memory ends the sweep like one that
runs out of host memory.

Writes ``benchmarks/results/model_scaling_{efa,local}.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: ``reference_predictions.json`` hyperparameters of ``sn2_efa`` and ``sn2_local_rcut5``.
SN2_EFA = {"cutoff": 5.0, "num_features": 128, "num_iterations": 2, "era_use_in_iterations": [0, 1],
           "era_lebedev_num": 50, "era_include_pseudotensors": False, "era_max_degree": 0, "era_qk_num_features": 16,
           "era_v_num_features": 32, "era_max_frequency": np.pi, "era_max_length": 20, "era_activation_fn": "gelu"}
SN2_LOCAL = {"cutoff": 5.0, "num_features": 162, "num_iterations": 2}


def cluster(n: int, density: float = 0.1, dmin: float = 0.9, seed: int = 0) -> np.ndarray:
    """``n`` points uniform in a sphere of the given density (Å⁻³), no pair closer than ``dmin``
    (random sequential addition, vectorised in batches of candidates)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    radius = (3 * n / (4 * np.pi * density)) ** (1 / 3)
    pts = np.zeros((0, 3))
    while len(pts) < n:
        cand = rng.uniform(-radius, radius, (max(64, n - len(pts)), 3))
        cand = cand[np.linalg.norm(cand, axis=1) <= radius]
        if len(pts):
            cand = cand[cKDTree(pts).query(cand)[0] >= dmin]
        # within the batch, keep the first point of every close pair
        drop = {j for i, j in cKDTree(cand).query_pairs(dmin)} if len(cand) > 1 else set()
        cand = cand[[i for i in range(len(cand)) if i not in drop]]
        pts = np.vstack([pts, cand[: n - len(pts)]])
    return pts


def single(n: int, local: bool, repeats: int = 3, message_passing=None) -> dict:
    import jax

    from efa_calc.backends.single import compiled_energy_and_forces
    from efa_calc.graphs.neighbors import neighbor_pairs
    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.nn.energy_model import init_params
    from efa_calc.nn.tensor import resolve_message_passing
    from efa_calc.reference import from_reference_hyperparameters

    pos = cluster(n)
    cfg = from_reference_hyperparameters(SN2_LOCAL if local else SN2_EFA)
    cfg = cfg.for_evaluation(message_passing=resolve_message_passing(message_passing, jax.default_backend()))
    z = np.where(np.random.default_rng(1).random(n) < 0.5, 1, 6)
    t0 = time.perf_counter()
    dst, src = neighbor_pairs(pos, cfg.cutoff)
    t_nl = time.perf_counter() - t0
    b = pad_graphs([z], [pos], [(dst, src)], n, len(dst), dtype=np.float32)
    params = init_params(cfg, jax.random.PRNGKey(0), jax.tree_util.tree_map(jax.numpy.asarray, b))
    fn = compiled_energy_and_forces(cfg)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, b))
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, b))
        times.append(time.perf_counter() - t0)
    stats = jax.devices()[0].memory_stats() or {}  # None on CPU
    return {"atoms": n, "pairs": int(len(dst)), "seconds": min(times), "first_call_s": t_first,
            "neighbor_list_s": t_nl, "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_device_GiB": stats.get("peak_bytes_in_use", 0) / 2**30 or None, "message_passing": cfg.message_passing}


def _total_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def run_with_memory_limit(cmd: list[str], max_rss_gib: float) -> tuple[int, str, str, float]:
    """Run ``cmd``; kill it (return code −9) when its resident memory passes ``max_rss_gib``
    rather than let the kernel's OOM killer pick a victim.  Returns (code, stdout, stderr, peak GiB)."""
    peak = 0.0
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 2**20
            except (OSError, StopIteration):
                rss = 0.0
            peak = max(peak, rss)
            if rss > max_rss_gib:
                p.kill()
                p.wait()
                break
            time.sleep(0.2)
        fo.seek(0)
        fe.seek(0)
        return p.returncode, fo.read(), fe.read(), peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000, 8000, 16000, 32000])
    ap.add_argument("--out", help="JSON output (default benchmarks/results/model_scaling_{efa,local}.json)")
    ap.add_argument("--local", action="store_true", help="the local control model (no EFA, F=162)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per size after the compiling one (best of)")
    ap.add_argument("--max-rss-gib", type=float, default=0.9 * _total_memory_gib(),
                    help="stop a size whose resident memory passes this (default 90%% of this machine's memory)")
    ap.add_argument("--message-passing", choices=("native", "cuequivariance"), default=None,
                    help="message-passing kernel (default: the platform's)")
    ap.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.single:
        print(json.dumps(single(args.single, args.local, args.repeats, args.message_passing)))
        return
    print(f"model: {'SN2 local MPNN (F=162)' if args.local else 'SN2 EFA + MPNN (F=128)'}, 2 iterations, 5 Å cutoff, float32, "
          "energy + forces, best of 3 after compile")
    print(f"{'atoms':>6s} {'pairs':>9s} {'time (s)':>9s} {'ms/atom':>8s} {'peak RSS (GiB)':>15s} {'nbr list (ms)':>14s}")
    rows, summary_fail = [], None
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"model_scaling_{'local' if args.local else 'efa'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--single", str(n), "--repeats", str(args.repeats)] + (["--local"] if args.local else [])
        cmd += ["--message-passing", args.message_passing] if args.message_passing else []
        code, out_text, err, peak = run_with_memory_limit(cmd, args.max_rss_gib)
        if code != 0:
            why = (f"stopped at {peak:.1f} GiB resident (--max-rss-gib {args.max_rss_gib:g})" if code == -9
                   else (err.strip().splitlines() or [str(code)])[-1])
            print(f"{n:6d}  does not fit: {why}")
            summary_fail = {"atoms": n, "reason": why}
            break
        row = json.loads(out_text.strip().splitlines()[-1])
        rows.append(row)
        out.write_text(json.dumps({"rows": rows, "partial": True}, indent=1))  # kept if a later size is killed
        print(f"{row['atoms']:6d} {row['pairs']:9d} {row['seconds']:9.3f} {1e3 * row['seconds'] / n:8.2f} "
              f"{row['peak_rss_GiB']:15.2f} {1e3 * row['neighbor_list_s']:14.1f}", flush=True)
    summary = {}
    if len(rows) >= 2:
        x = np.log([r["atoms"] for r in rows])
        y = np.log([r["seconds"] for r in rows])
        summary["loglog_slope"] = float(np.polyfit(x, y, 1)[0])
        print(f"log-log slope of time vs atoms: {summary['loglog_slope']:.2f} (1 = linear)")
    base = next((r for r in rows if r["atoms"] == 1000), None)
    if base is not None and rows[-1]["atoms"] > 1000:
        top = rows[-1]
        summary["time_per_atom_ratio"] = (top["seconds"] / top["atoms"]) / (base["seconds"] / base["atoms"])
        summary["marginal_MiB_per_atom"] = (top["peak_rss_GiB"] - base["peak_rss_GiB"]) * 1024 / (top["atoms"] - 1000)
        print(f"time per atom at N={top['atoms']} / N=1000: {summary['time_per_atom_ratio']:.2f}; marginal peak memory "
              f"{summary['marginal_MiB_per_atom']:.2f} MiB per atom")
    if rows:
        summary["largest_N_run"] = rows[-1]["atoms"]
    if summary_fail:
        summary["first_N_not_fitting"] = summary_fail
    out.write_text(json.dumps({"rows": rows, **summary}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
