"""``efa-md``: list and run the bundled protocols.

    efa-md list
    efa-md run cumulene-nvt [--out DIR] [--model MODEL] [--steps N] [--timestep FS]
                            [--temperature K] [--thermostat langevin|bussi|nose-hoover]
                            [--dtype float32|float64] [--seed S] [--resume] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys

from md_protocols import protocols
from md_protocols.common import execute


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efa-md", description="Run molecular-dynamics and related protocols with EFA models.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the protocols")
    r = sub.add_parser("run", help="run a protocol")
    r.add_argument("name", help="protocol name (efa-md list)")
    r.add_argument("--out", help="output folder (default: efa-md-runs/<name>)")
    r.add_argument("--model", help="bundled model name or checkpoint directory")
    r.add_argument("--steps", type=int, help="MD steps (total, also when resuming)")
    r.add_argument("--timestep", type=float, dest="timestep_fs", help="time step in fs")
    r.add_argument("--temperature", type=float, dest="temperature_K", help="temperature in K")
    r.add_argument("--thermostat", choices=["langevin", "bussi", "nose-hoover"])
    r.add_argument("--dtype", choices=["float32", "float64"])
    r.add_argument("--seed", type=int)
    r.add_argument("--resume", action="store_true", help="continue the run in --out to the new --steps total")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other protocol setting")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    table = protocols()
    if args.command == "list":
        width = max(len(n) for n in table)
        for name, mod in table.items():
            print(f"{name:{width}s}  {mod.DESCRIPTION}")
        return 0
    if args.name not in table:
        p.error(f"unknown protocol {args.name!r}; run 'efa-md list'")
    mod = table[args.name]
    overrides = {k: getattr(args, k) for k in ("model", "steps", "timestep_fs", "temperature_K", "thermostat", "dtype", "seed")}
    for item in args.set:
        key, _, val = item.partition("=")
        overrides[key] = _value(val)
    try:
        summary = execute(mod, out=args.out, resume=args.resume, progress=not args.quiet, **overrides)
    except (FileExistsError, ValueError) as exc:
        print(f"efa-md: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or f"efa-md-runs/{args.name}"
    print(f"{args.name}: {summary['status']} in {summary['wall_time_s']:.1f} s; results in {out}/summary.json")
    for k, v in summary["results"].items():
        if not isinstance(v, (list, dict)):
            print(f"  {k} = {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
