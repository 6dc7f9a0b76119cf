"""NPT throughput of liquid-density argon, and what the stress costs on top of energy + forces.

For N argon atoms (fcc at the density of liquid argon at 94 K, 1.38 g/cm³, rattled 0.1 Å;
``--sizes 500 4000``) with the bundled periodic model ``argon-local`` or, where it is
absent, a random-parameter periodic model with an 8.5 Å cutoff (the timing does not depend
on the parameters):

* **NPT steps/s**, ASE engine: ASE's ``IsotropicMTKNPT`` (94.4 K, 1.01325 bar, tdamp
  100 fs, pdamp 1000 fs, 2 fs steps) driving :class:`~efa_calc.EFACalculator` — what
  ``efa-md run npt`` does without the file output; best of ``--repeats`` blocks of
  ``--steps`` steps after one warm-up block (which compiles).  jax engine:
  :class:`~efa_calc.md_jax.JaxMD` with jax-md's ``npt_nose_hoover`` (the same state
  point and damping times; one replica, one XLA call of ``--steps`` steps per block, the
  in-XLA minimum-image pair list rebuilt at every step) — what ``efa-md run npt --engine
  jax`` does without the file output; best of ``--repeats`` chunks after a warm-up chunk
  (which compiles), and XLA's ``cost_analysis`` flops of one step (steady on a loaded
  machine, unlike the wall time).
* **stress cost**: one XLA call of ``energy_and_forces`` against ``energy_forces_stress``
  (:mod:`efa_calc.nn.energy_model`) on the same padded periodic batch: XLA's
  ``cost_analysis`` flops, ``memory_analysis`` temporary bytes, and the best wall time of
  ``--repeats`` calls; the ratios stress/no-stress (the issue's target: ≤ 1.3 in time).

    python benchmarks/npt_throughput.py --sizes 500 4000
    python benchmarks/npt_throughput.py --sizes 108 --steps 5 --repeats 2     # a quick check

Writes ``benchmarks/results/npt_throughput.json`` (``--out``).  Units: steps/s, s, FLOP,
bytes, dimensionless ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402

LIQUID_DENSITY_G_CM3 = 1.38
CUTOFF_A = 8.5


def argon_box(n_atoms: int, seed: int = 0):
    """fcc argon with 4·k³ ≥ ``n_atoms`` atoms (k cubic cells a side) at 1.38 g/cm³, rattled 0.1 Å."""
    k = int(np.ceil((n_atoms / 4) ** (1 / 3) - 1e-9))
    mass_g = 4 * 39.948 * units._amu * 1e3
    a = (mass_g / LIQUID_DENSITY_G_CM3 / 1e-24) ** (1 / 3)  # Å
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(k)
    atoms.rattle(0.1, seed=seed)
    return atoms


def model(dtype: str):
    """``argon-local`` if bundled, else a random periodic Ar model (cutoff 8.5 Å)."""
    from efa_calc import list_models

    if "argon-local" in list_models():
        from efa_calc.checkpoint import load_checkpoint
        from efa_calc.models import resolve_model

        return load_checkpoint(resolve_model("argon-local")), "argon-local"
    import jax

    from efa_calc.checkpoint import Checkpoint
    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.nn.config import ModelConfig
    from efa_calc.nn.energy_model import init_params

    cfg = ModelConfig(num_features=32, num_iterations=2, cutoff=CUTOFF_A, mp_max_degree=2, num_basis_functions=16,
                      output_is_zero_at_init=False)
    z, pos = np.array([18, 18]), np.array([[0.0, 0, 0], [3.7, 0, 0]])
    batch = pad_graphs([z], [pos], [(np.array([0, 1]), np.array([1, 0]))], 2, 2, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(0), batch))
    return Checkpoint(cfg, params, ["Ar"], name="random-argon-8.5", periodic=True), "random-argon-8.5 (random parameters)"


def ase_npt(ckpt, atoms, dtype: str, steps: int, repeats: int) -> dict:
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    from efa_calc import EFACalculator
    from md_protocols.dynamics import initial_velocities

    atoms = atoms.copy()
    atoms.calc = EFACalculator(ckpt, dtype=dtype, guard="off")
    initial_velocities(atoms, 94.4, np.random.default_rng(0))
    dyn = IsotropicMTKNPT(atoms, 2.0 * units.fs, temperature_K=94.4, pressure_au=1.01325 * units.bar,
                          tdamp=100 * units.fs, pdamp=1000 * units.fs)
    t0 = time.perf_counter()
    dyn.run(steps)  # warm-up: compiles
    warm = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        dyn.run(steps)
        best = min(best, time.perf_counter() - t0)
    return {"engine": "ase", "steps_per_s": steps / best, "warmup_s": warm, "volume_A3_end": atoms.get_volume()}


def jax_npt(ckpt, atoms, dtype: str, steps: int, repeats: int) -> dict:
    """NPT steps/s of the jax engine (see the module docstring)."""
    import jax

    from efa_calc.md_jax import JaxMD
    from md_protocols.dynamics import initial_velocities

    atoms = atoms.copy()
    initial_velocities(atoms, 94.4, np.random.default_rng(0))
    md = JaxMD(ckpt, atoms.numbers, atoms.get_masses(), "npt", timestep_fs=2.0, temperature_K=94.4, tau_fs=100.0,
               dtype=dtype, periodic=True, pressure_bar=1.01325, pdamp_fs=1000.0)
    state = md.init(atoms.positions[None], atoms.get_momenta()[None], cells=atoms.cell.array)
    t0 = time.perf_counter()
    out = md.run_chunk(state, steps)  # warm-up: compiles
    jax.block_until_ready(out.state.position)
    warm = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = md.run_chunk(out.state, steps)
        jax.block_until_ready(out.state.position)
        best = min(best, time.perf_counter() - t0)
    flops = md.cost_analysis(out.state, steps).get("flops", float("nan"))
    vol = float(abs(np.linalg.det(out.records["cell"][-1, 0])))
    return {"engine": "jax", "steps_per_s": steps / best, "warmup_s": warm, "flops_per_step": flops,
            "pair_capacity": int(md.capacity), "overflow": bool(out.overflow), "volume_A3_end": vol}


def stress_cost(ckpt, atoms, dtype: str, repeats: int) -> dict:
    """energy_and_forces vs energy_forces_stress on one padded periodic batch (see the module docstring)."""
    import jax

    from efa_calc.graphs.neighbors import periodic_pairs
    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.nn.energy_model import energy_and_forces, energy_forces_stress

    x64 = dtype == "float64"
    with jax.enable_x64(x64):
        p = periodic_pairs(atoms.positions, atoms.cell.array, atoms.pbc, ckpt.config.cutoff)
        batch = pad_graphs([atoms.numbers], [atoms.positions], [(p.dst, p.src)], len(atoms), len(p.dst),
                           dtype=np.float64 if x64 else np.float32, shifts=[p.shifts], cells=[atoms.cell.array])
        params = ckpt.params  # atomic_energies casts them to the batch's precision
        out = {"num_pairs": int(len(p.dst))}
        for name, fn in (("energy_forces", energy_and_forces), ("energy_forces_stress", energy_forces_stress)):
            jitted = jax.jit(lambda prm, b, f=fn: f(prm, ckpt.config, b))
            compiled = jitted.lower(params, batch).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            mem = compiled.memory_analysis()
            jax.block_until_ready(compiled(params, batch))
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(params, batch))
                best = min(best, time.perf_counter() - t0)
            out[name] = {"time_s": best, "flops": float(cost.get("flops", np.nan)),
                         "temp_bytes": int(getattr(mem, "temp_size_in_bytes", -1)) if mem is not None else None}
    ef, efs = out["energy_forces"], out["energy_forces_stress"]
    out["ratio_time"] = efs["time_s"] / ef["time_s"]
    out["ratio_flops"] = efs["flops"] / ef["flops"]
    if ef["temp_bytes"] and efs["temp_bytes"] is not None:
        out["ratio_temp_bytes"] = efs["temp_bytes"] / ef["temp_bytes"]
    return out


def main(argv=None) -> int:
    import jax

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 4000], help="argon atoms (rounded up to 4·k³)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--steps", type=int, default=20, help="NPT steps per timed block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "npt_throughput.json"))
    args = ap.parse_args(argv)
    ckpt, name = model(args.dtype)
    rows = []
    for n in args.sizes:
        atoms = argon_box(n)
        row = {"num_atoms": len(atoms), "dtype": args.dtype, "model": name,
               "ase": ase_npt(ckpt, atoms, args.dtype, args.steps, args.repeats),
               "jax": jax_npt(ckpt, atoms, args.dtype, args.steps, args.repeats),
               "stress_cost": stress_cost(ckpt, atoms, args.dtype, args.repeats)}
        rows.append(row)
        sc = row["stress_cost"]
        print(f"N={len(atoms):5d}  ASE NPT {row['ase']['steps_per_s']:8.2f} steps/s  jax NPT "
              f"{row['jax']['steps_per_s']:8.2f} steps/s ({row['jax']['flops_per_step']:.3g} flop/step)   "
              "stress/no-stress: time "
              f"{sc['ratio_time']:.2f}x, flops {sc['ratio_flops']:.2f}x, temp memory {sc.get('ratio_temp_bytes', float('nan')):.2f}x",
              flush=True)
    result = {"benchmark": "npt_throughput", "devices": [str(d) for d in jax.devices()], "platform": platform.platform(),
              "units": {"steps_per_s": "1/s", "time_s": "s", "flops": "FLOP", "temp_bytes": "bytes"}, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
