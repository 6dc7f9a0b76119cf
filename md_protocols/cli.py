"""``efa-md``: list and run the protocols.

    efa-md list
    efa-md run PROTOCOL --help                 # the protocol's settings, defaults and units
    efa-md run cumulene-nvt [--out DIR] [--model MODEL] [--steps N] [--timestep FS]
                            [--temperature K] [--thermostat langevin|bussi|nose-hoover]
                            [--dtype float32|float64] [--seed S] [--resume] [--set KEY=VALUE ...]
    efa-md run nvt --structure my.xyz --model sn2-efa --steps 50 --out run1

Every setting of a protocol is also an option of its own (``--n-carbons 9`` is
``--set n_carbons=9``).  Every value is checked before any work starts; a bad one exits
with status 2 and a message naming the argument, its value and the allowed range.
"""

from __future__ import annotations

import argparse
import json
import sys

from md_protocols import protocols
from md_protocols.common import execute, option_name, setting_spec


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _version() -> str:
    from efa_calc import __version__

    return f"efa-md (efa-calc) {__version__}"


def protocol_parser(name: str, mod) -> argparse.ArgumentParser:
    """The ``efa-md run NAME`` parser: one option per setting, its default and unit in the help."""
    p = argparse.ArgumentParser(
        prog=f"efa-md run {name}", description=mod.DESCRIPTION,
        epilog="Units: eV, Å, fs, K, cm⁻¹.  Outputs: summary.json, plots and the protocol's files in --out.",
    )
    p.add_argument("--out", help=f"output folder (default: efa-md-runs/{name})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (to the new --steps total)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting below by its key, e.g. --set temperature_K=350")
    if "guard" in mod.DEFAULTS:  # the former name of --guard (stop|warn|off), still understood
        p.add_argument("--extrapolation", dest="extrapolation", default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group(f"settings of {name} (default in brackets)")
    for key, default in mod.DEFAULTS.items():
        spec = setting_spec(mod, key)
        shown = ("optional" if spec.optional else "required") if default is None else f"default {default}"
        unit = f" {spec.unit}" if spec.unit and default is not None else ""
        g.add_argument(option_name(key), dest=key, metavar=key.upper(), default=None,
                       help=f"{spec.help} [{shown}{unit}; key {key}; allowed: {spec.allowed()}]")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    table = protocols()
    p = argparse.ArgumentParser(prog="efa-md", description="Run molecular-dynamics and related protocols with EFA models.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the protocols")
    r = sub.add_parser("run", help="run a protocol (efa-md run PROTOCOL --help shows its settings)", add_help=False)
    r.add_argument("name", nargs="?")
    r.add_argument("rest", nargs=argparse.REMAINDER)
    args, extra = p.parse_known_args(argv)
    if args.command == "list":
        width = max(len(n) for n in table)
        for name, mod in table.items():
            print(f"{name:{width}s}  {mod.DESCRIPTION}")
        return 0
    rest = list(args.rest or []) + extra
    if args.name in (None, "-h", "--help"):
        print("usage: efa-md run PROTOCOL [options]   (efa-md run PROTOCOL --help for its settings)\n\nprotocols:")
        for name, mod in table.items():
            print(f"  {name:22s} {mod.DESCRIPTION}")
        return 0 if args.name else 2
    if args.name not in table:
        print(f"efa-md: error: unknown protocol {args.name!r}; choose from {', '.join(table)} (efa-md list)",
              file=sys.stderr)
        return 2
    mod = table[args.name]
    pa = protocol_parser(args.name, mod).parse_args(rest)
    overrides = {k: getattr(pa, k) for k in mod.DEFAULTS if getattr(pa, k) is not None}
    if getattr(pa, "extrapolation", None) is not None:
        overrides["extrapolation"] = pa.extrapolation
    for item in pa.set:
        key, eq, val = item.partition("=")
        if not eq or not key:
            print(f"efa-md: error: --set {item!r}: allowed: KEY=VALUE with KEY one of {', '.join(mod.DEFAULTS)}",
                  file=sys.stderr)
            return 2
        overrides[key] = _value(val)
    try:
        summary = execute(mod, out=pa.out, resume=pa.resume, progress=not pa.quiet, **overrides)
    except (FileExistsError, ValueError) as exc:
        print(f"efa-md: error: {exc}", file=sys.stderr)
        return 2
    out = pa.out or f"efa-md-runs/{args.name}"
    print(f"{args.name}: {summary['status']} in {summary['wall_time_s']:.1f} s; results in {out}/summary.json")
    for k, v in summary["results"].items():
        if not isinstance(v, (list, dict)):
            print(f"  {k} = {v}")
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
