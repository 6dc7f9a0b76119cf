"""The ``efa-calc`` command line: data generation, training, checkpoint conversion, i-PI.

Run ``efa-calc --help`` for the subcommands.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path


def _load_toml(path: str | Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _cmd_generate(args) -> int:
    from efa_calc.generate import run_generation

    cfg_path = Path(args.config)
    config = _load_toml(cfg_path)
    dataset = Path(config["dataset"])
    if not dataset.is_absolute():
        dataset = (cfg_path.parent / dataset).resolve()
    workdir = Path(args.workdir or (Path("generation") / cfg_path.stem))
    prov = run_generation(config, workdir, dataset, workers=args.workers, threads=args.threads,
                          label=not args.plan_only)
    if prov is None:
        print(f"generation in {workdir} not complete yet (or plan only); run the same command again to continue")
        return 0
    print(f"wrote {dataset}: {prov['num_kept']} frames kept, {prov['num_rejected_nonconverged']} rejected (not converged)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efa-calc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a reference dataset (resumable)")
    g.add_argument("config", help="generation config (TOML), e.g. models/configs/sn2-data.toml")
    g.add_argument("--workdir", help="resumable scratch directory (default: generation/<config name>)")
    g.add_argument("--workers", type=int, default=1, help="parallel labelling processes")
    g.add_argument("--threads", type=int, default=1, help="threads per labelling process")
    g.add_argument("--plan-only", action="store_true", help="write the geometry plan and stop")
    g.set_defaults(func=_cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
