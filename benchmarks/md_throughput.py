"""MD throughput: the ASE engine vs the jax engine (jax-md in XLA) with 1/8/64/256 replicas.

For C9H4 (``cumulene-efa``, relaxed, 13 atoms) and the Cl⁻···CH3Br complex (``sn2-efa``,
relaxed, 6 atoms), in float32 and float64, in one process, on the same starting structure
and velocities (300 K Maxwell–Boltzmann, seed 0), NVE with a 0.5 fs timestep:

* ``ase``: ASE's ``VelocityVerlet`` driving :class:`~efa_calc.EFACalculator`, one model
  call per step (what ``efa-md run ... --engine ase`` does, without the file output);
* ``jax``: :class:`efa_calc.md_jax.JaxMD`, ``--chunk`` steps per XLA call (what
  ``--engine jax`` does, without the file output), with R = 1, 8, 64, 256 replicas.

Reported per row: steps/s of one trajectory, replica·steps/s in total, the speed-up of the
total over the ASE engine (same system and dtype), and for jax the achieved GFLOP/s
(XLA's ``cost_analysis`` of the compiled chunk: one step of every replica — XLA counts a
loop body once — times the steps run, plus the chunk's one starting force call) and the
compile time.  Timings are the best of ``--repeats`` timed calls after one warm-up call
(which compiles).

``--drift``: NVE energy drift of both engines over ``--drift-steps`` steps (default
10 000) of C9H4 from the same start: linear drift of the total energy (eV/atom/ps) and its
largest deviation from the start (meV/atom), float32 and float64.

    python benchmarks/md_throughput.py                      # full table + drift
    python benchmarks/md_throughput.py --quick              # small sanity run (R ≤ 8, few steps)
    python benchmarks/md_throughput.py --message-passing cuequivariance   # the other kernel

Prints a table and writes ``benchmarks/results/md_throughput.json`` (``--out``).
Units: steps/s, GFLOP/s, s, eV/atom/ps, meV/atom.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ase import units  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.md_jax import JaxMD  # noqa: E402
from md_protocols.dynamics import initial_velocities  # noqa: E402
from md_protocols.systems import cumulene_start, sn2_reactant_complex  # noqa: E402

SYSTEMS = {"C9H4": ("cumulene-efa", lambda calc: cumulene_start(9, calc)),
           "SN2": ("sn2-efa", lambda calc: sn2_reactant_complex(calc))}
DT_FS = 0.5


def start(system: str, dtype: str, message_passing=None):
    model, build = SYSTEMS[system]
    calc = EFACalculator(model, dtype=dtype, guard="off", message_passing=message_passing)
    atoms = build(calc)
    atoms.calc = calc
    initial_velocities(atoms, 300.0, np.random.default_rng(0))
    return atoms, calc


def bench_ase(atoms, calc, steps: int, repeats: int) -> dict:
    a = atoms.copy()
    a.calc = calc
    dyn = VelocityVerlet(a, DT_FS * units.fs)
    dyn.run(5)  # warm-up (compiles)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        dyn.run(steps)
        best = min(best, time.perf_counter() - t)
    return {"steps_per_s": steps / best, "replica_steps_per_s": steps / best, "timed_steps": steps}


def make_md(atoms, calc, replicas: int) -> tuple:
    md = JaxMD(calc.checkpoints[0], atoms.numbers, atoms.get_masses(), "nve", timestep_fs=DT_FS, dtype=calc.dtype,
               message_passing=calc.potentials[0].config.message_passing)
    rng = np.random.default_rng(1)
    pos = np.repeat(atoms.positions[None], replicas, 0)
    mom = np.stack([atoms.get_momenta()] + [_velocities(atoms, rng) for _ in range(replicas - 1)])
    return md, md.init(pos, mom)


def _velocities(atoms, rng):
    a = atoms.copy()
    initial_velocities(a, 300.0, rng)
    return a.get_momenta()


def bench_jax(atoms, calc, replicas: int, chunk: int, repeats: int) -> dict:
    import jax

    md, state = make_md(atoms, calc, replicas)
    t = time.perf_counter()
    out = md.run_chunk(state, chunk)  # warm-up: compiles
    first = time.perf_counter() - t
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = md.run_chunk(out.state, chunk)
        best = min(best, time.perf_counter() - t)
    assert out.steps_done == chunk and not out.overflow
    cost = md.cost_analysis(state, chunk)
    with jax.enable_x64(md.x64):
        fe = jax.jit(jax.vmap(md.force_and_energy(md.capacity), in_axes=(None, 0)))
        start_cost = fe.lower(md.params, state.position).compile().cost_analysis()
    start_cost = start_cost[0] if isinstance(start_cost, list) else start_cost
    per_step = cost["flops"] - float(start_cost["flops"])
    flops = per_step * chunk + float(start_cost["flops"])
    return {"steps_per_s": chunk / best, "replica_steps_per_s": replicas * chunk / best, "timed_steps": chunk,
            "gflop_per_s": flops / best / 1e9, "mflop_per_replica_step": per_step / replicas / 1e6,
            "mb_accessed_per_replica_step": (cost["bytes accessed"] - float(start_cost["bytes accessed"])) / replicas / 1e6,
            "compile_and_first_call_s": first - best, "pair_capacity": md.capacity}


def drift(atoms, calc, steps: int) -> dict:
    """Total-energy drift of both engines over ``steps`` NVE steps from the same start."""
    from md_protocols.dynamics import nve_drift

    n = len(atoms)
    out = {}
    a = atoms.copy()
    a.calc = calc
    dyn = VelocityVerlet(a, DT_FS * units.fs)
    rows = []

    def rec():
        rows.append({"time_fs": dyn.nsteps * DT_FS, "etot_eV": a.get_potential_energy() + a.get_kinetic_energy()})

    dyn.attach(rec, interval=1)
    t = time.perf_counter()
    dyn.run(steps)
    out["ase"] = {**nve_drift(rows, n), "wall_s": time.perf_counter() - t}
    md, state = make_md(atoms, calc, 1)
    etot = [calc.get_potential_energy(atoms) + atoms.get_kinetic_energy()]
    chunk = 1000 if steps >= 1000 else steps
    t = time.perf_counter()
    done = 0
    while done < steps:
        res = md.run_chunk(state, chunk, min(chunk, steps - done))
        k = res.steps_done
        etot += list(res.records["epot"][:k, 0] + res.records["ekin"][:k, 0])
        state, done = res.state, done + k
    rows = [{"time_fs": i * DT_FS, "etot_eV": e} for i, e in enumerate(etot)]
    out["jax"] = {**nve_drift(rows, n), "wall_s": time.perf_counter() - t}
    return out


def plot(rows: list[dict], path: Path) -> None:
    """Total steps/s (log scale) against replicas, one line per system and dtype, the ASE
    engine as a dashed level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted({(r["system"], r["dtype"]) for r in rows})
    for i, (system, dtype) in enumerate(keys):
        jax_rows = sorted((r for r in rows if (r["system"], r["dtype"]) == (system, dtype) and r["engine"] == "jax"),
                          key=lambda r: r["replicas"])
        ase = [r for r in rows if (r["system"], r["dtype"]) == (system, dtype) and r["engine"] == "ase"]
        if jax_rows:
            ax.plot([r["replicas"] for r in jax_rows], [r["replica_steps_per_s"] for r in jax_rows], "o-", color=f"C{i}",
                    label=f"{system} {dtype} jax")
        if ase:
            ax.axhline(ase[0]["steps_per_s"], color=f"C{i}", ls="--", lw=1, label=f"{system} {dtype} ASE")
    ax.set(xscale="log", yscale="log", xlabel="replicas per call", ylabel="MD steps/s (all replicas)",
           title="MD throughput: ASE engine vs jax engine")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="sanity run: replicas 1 and 8, short chunks, 300 drift steps")
    p.add_argument("--systems", default="C9H4,SN2")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--replicas", default="1,8,64,256")
    p.add_argument("--chunk", type=int, default=200, help="steps per XLA call (at most; see next)")
    p.add_argument("--replica-steps-per-call", type=int, default=6400,
                   help="caps the steps per call at this / R (≥ 5), so that R = 256 calls stay short")
    p.add_argument("--ase-steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--drift-steps", type=int, default=10_000)
    p.add_argument("--no-drift", action="store_true")
    p.add_argument("--only-drift", action="store_true", help="only the C9H4 drift comparison")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "md_throughput.json"))
    p.add_argument("--message-passing", choices=("native", "cuequivariance"), default=None,
                   help="message-passing kernel (default: the platform's)")
    args = p.parse_args(argv)
    replicas = [int(r) for r in args.replicas.split(",")]
    if args.quick:
        replicas = [r for r in replicas if r <= 8]
        args.chunk, args.ase_steps, args.repeats, args.drift_steps = 20, 30, 1, 300
    import jax

    load0 = os.getloadavg()
    rows, drifts = [], {}
    for system in args.systems.split(","):
        for dtype in args.dtypes.split(","):
            atoms, calc = start(system, dtype, args.message_passing)
            if args.only_drift:
                if system == "C9H4":
                    drifts[dtype] = drift(atoms, calc, args.drift_steps)
                    print(f"drift {dtype}: {json.dumps(drifts[dtype])}", flush=True)
                continue
            ase = bench_ase(atoms, calc, args.ase_steps, args.repeats)
            rows.append({"system": system, "dtype": dtype, "engine": "ase", "replicas": 1, **ase})
            print(f"{system} {dtype} ase: {ase['steps_per_s']:.1f} steps/s", flush=True)
            for r in replicas:
                chunk = max(5, min(args.chunk, args.replica_steps_per_call // r))
                res = bench_jax(atoms, calc, r, chunk, args.repeats)
                res["speedup_vs_ase"] = res["replica_steps_per_s"] / ase["steps_per_s"]
                rows.append({"system": system, "dtype": dtype, "engine": "jax", "replicas": r, **res})
                print(f"{system} {dtype} jax R={r}: {res['replica_steps_per_s']:.1f} replica-steps/s "
                      f"({res['speedup_vs_ase']:.2f}x ASE), {res['gflop_per_s']:.2f} GFLOP/s", flush=True)
            if system == "C9H4" and not args.no_drift:
                drifts[dtype] = drift(atoms, calc, args.drift_steps)
                print(f"drift {dtype}: {json.dumps(drifts[dtype])}", flush=True)
    head = f"{'system':6s} {'dtype':8s} {'engine':6s} {'R':>4s} {'steps/s':>9s} {'total/s':>9s} {'× ASE':>7s} {'GFLOP/s':>8s}"
    print("\n" + head + "\n" + "-" * len(head))
    for row in rows:
        sp = f"{row['speedup_vs_ase']:.2f}" if "speedup_vs_ase" in row else "1.00"
        gf = f"{row['gflop_per_s']:.2f}" if "gflop_per_s" in row else "-"
        print(f"{row['system']:6s} {row['dtype']:8s} {row['engine']:6s} {row['replicas']:4d} {row['steps_per_s']:9.1f} "
              f"{row['replica_steps_per_s']:9.1f} {sp:>7s} {gf:>8s}")
    for dtype, d in drifts.items():
        for eng, v in d.items():
            print(f"drift C9H4 {dtype} {eng}: {v['drift_eV_per_atom_per_ps']:.3e} eV/atom/ps, "
                  f"max deviation {v['max_energy_deviation_meV_per_atom']:.4f} meV/atom over {args.drift_steps} steps")
    result = {"rows": rows, "drift": drifts, "drift_steps": args.drift_steps, "timestep_fs": DT_FS,
              "quick": args.quick, "device": str(jax.devices()[0]), "message_passing": args.message_passing or "default", "cpu_count": os.cpu_count(),
              "platform": platform.platform(), "load_average_start": load0, "load_average_end": os.getloadavg(),
              "units": {"steps_per_s": "MD steps per second of one trajectory",
                        "replica_steps_per_s": "MD steps per second summed over replicas",
                        "gflop_per_s": "1e9 floating-point operations per second (XLA cost_analysis)",
                        "drift_eV_per_atom_per_ps": "eV/atom/ps", "max_energy_deviation_meV_per_atom": "meV/atom"},
              "versions": {m: importlib.metadata.version(m) for m in ("jax", "jax-md", "ase", "numpy", "e3x")}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")
    if rows:
        plot(rows, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
