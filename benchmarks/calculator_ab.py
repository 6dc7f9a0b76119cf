"""A/B timing of the calculator between two source trees (e.g. before and after a refactor).

Each round runs one fresh process per tree, alternating A, B, A, B, ...; each process times
``--calls`` warm ``get_forces`` calls of C9H4 with ``cumulene-efa`` (float32, a new position
every call, as in MD) through the public ``EFACalculator`` API only, so any two versions can
be compared.  Prints and writes the per-round medians and their ratio B/A (ms per call):
interleaving makes a busy machine's load hit both trees alike.

    python benchmarks/calculator_ab.py --a ../old-checkout --b . [--rounds 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, time, statistics
sys.path.insert(0, sys.argv[1])
import numpy as np
from efa_calc import EFACalculator
from efa_calc.structures import cumulene
assert EFACalculator.__module__.startswith("efa_calc")
atoms = cumulene(9, 30.0)
atoms.calc = EFACalculator("cumulene-efa")
pos = atoms.positions.copy()
atoms.get_forces()
times = []
for k in range(int(sys.argv[2])):
    atoms.positions = pos + 1e-4 * np.sin(k + np.arange(pos.size).reshape(pos.shape))
    t0 = time.perf_counter()
    atoms.get_forces()
    times.append(time.perf_counter() - t0)
print(1e3 * statistics.median(times))
"""


def one(tree: Path, calls: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(calls)], env=env, check=True,
                         capture_output=True, text=True, cwd=tree)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="source tree A (baseline)")
    ap.add_argument("--b", default=".", help="source tree B")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "calculator_ab.json"))
    args = ap.parse_args(argv)
    a, b = Path(args.a).resolve(), Path(args.b).resolve()
    rows = []
    for r in range(args.rounds):
        ta, tb = one(a, args.calls), one(b, args.calls)
        rows.append({"round": r, "a_ms": ta, "b_ms": tb})
        print(f"round {r}: A {ta:.3f} ms  B {tb:.3f} ms  B/A {tb / ta:.3f}", flush=True)
    ma, mb = statistics.median(x["a_ms"] for x in rows), statistics.median(x["b_ms"] for x in rows)
    summary = {"a": str(a), "b": str(b), "calls": args.calls, "rounds": rows, "median_a_ms": ma, "median_b_ms": mb,
               "ratio_b_over_a": mb / ma}
    print(f"medians: A {ma:.3f} ms, B {mb:.3f} ms per C9H4 energy+forces call; B/A = {mb / ma:.3f}")
    Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
