"""Time per MD step: LAMMPS + efa-calc (``fix external``) against efa-md's ASE engine, same system.

The system is a cumulene C_nH4 (default C9H4, 13 atoms) with ``cumulene-efa``, NVE, 0.5 fs,
from the same structure.  Four timings in one process, each after its own warm-up (XLA's
compiled code is shared through the calculator's process-wide cache, so no timed step
compiles):

* ``model``: one ``atoms.get_forces()`` after a position change — the floor;
* ``ase``: ASE's ``VelocityVerlet`` with ``EFACalculator`` (no output);
* ``efa-md``: ``efa-md run nve`` on the ASE engine (``md_protocols``), which also writes
  frames, the log and the state every step and runs the guard; its wall time per step;
* ``lammps``: LAMMPS ``fix nve`` + ``fix external`` (:mod:`efa_calc.interfaces.lammps`),
  thermo every 100 steps, no dumps.

    python benchmarks/lammps_overhead.py [--steps 200] [--n-carbons 9] [--dtype float32] [--out FILE]

Prints ms per step and the overhead over the model call; ``--out`` writes them as JSON.
Wall-clock numbers: run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import write
from ase.io.lammpsdata import write_lammps_data
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.interfaces.lammps import attach, import_lammps  # noqa: E402
from efa_calc.structures import cumulene  # noqa: E402

MODEL = "cumulene-efa"


def time_model(atoms, dtype: str, calls: int) -> float:
    calc = EFACalculator(MODEL, dtype=dtype)
    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(0)
    base = a.positions.copy()
    a.get_forces()  # warm-up (compile)
    t0 = time.perf_counter()
    for _ in range(calls):
        a.positions = base + rng.normal(scale=0.01, size=base.shape)
        a.get_forces()
    return (time.perf_counter() - t0) / calls


def time_ase(atoms, dtype: str, steps: int) -> float:
    a = atoms.copy()
    a.calc = EFACalculator(MODEL, dtype=dtype)
    dyn = VelocityVerlet(a, timestep=0.5 * units.fs)
    dyn.run(5)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps


def time_efa_md(atoms, dtype: str, steps: int, tmp: Path) -> float:
    from md_protocols import nve
    from md_protocols.common import execute

    write(tmp / "start.xyz", atoms)
    execute(nve, out=tmp / "warm", progress=False, structure=str(tmp / "start.xyz"), model=MODEL, steps=5,
            dtype=dtype, engine="ase")
    summary = execute(nve, out=tmp / "run", progress=False, structure=str(tmp / "start.xyz"), model=MODEL,
                      steps=steps, dtype=dtype, engine="ase")
    return summary["wall_time_s"] / steps


def time_lammps(atoms, dtype: str, steps: int, tmp: Path) -> float:
    data = tmp / "system.data"
    write_lammps_data(data, atoms, specorder=["C", "H"], masses=True, velocities=True, units="metal")
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string(f"""units metal
atom_style atomic
boundary f f f
atom_modify map array
read_data {data}
fix efa all external pf/callback 1 1
fix_modify efa energy yes virial yes
fix nve all nve
timestep 0.0005
thermo 100
""")
    efa = attach(lmp, MODEL, ["C", "H"], dtype=dtype)
    lmp.command("run 5")
    t0 = time.perf_counter()
    lmp.command(f"run {steps}")
    elapsed = time.perf_counter() - t0
    efa.raise_if_failed()
    lmp.close()
    return elapsed / (steps + 1)  # a run evaluates once more at its setup


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n-carbons", type=int, default=9)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    atoms = cumulene(args.n_carbons, 90.0 if args.n_carbons % 2 else 0.0)
    atoms.center(vacuum=10.0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(0), force_temp=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res = {"model": time_model(atoms, args.dtype, args.steps),
               "ase": time_ase(atoms, args.dtype, args.steps),
               "efa-md": time_efa_md(atoms, args.dtype, args.steps, tmp),
               "lammps": time_lammps(atoms, args.dtype, args.steps, tmp)}
    print(f"C{args.n_carbons}H4 ({len(atoms)} atoms), {MODEL} {args.dtype}, {args.steps} steps of 0.5 fs")
    print(f"  {'route':10s} {'ms/step':>9s} {'over model call':>16s}")
    for k, v in res.items():
        print(f"  {k:10s} {1e3 * v:9.3f} {1e3 * (v - res['model']):+13.3f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps({"system": f"C{args.n_carbons}H4", "atoms": len(atoms), "model": MODEL,
                                              "dtype": args.dtype, "steps": args.steps, "units": "s per step",
                                              "seconds_per_step": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
