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


def _cmd_train(args) -> int:
    from efa_calc.train import load_train_config, train

    overrides = {"steps": args.steps} if args.steps else {}
    cfg = load_train_config(args.config, **overrides)
    workdir = Path(args.workdir or (Path("runs") / cfg.name))
    summary = train(cfg, workdir)
    t = summary.get("test") or summary["valid"]
    print(f"{cfg.name}: best step {summary['best_step']}; test energy MAE {1e3 * t['energy_mae_eV']:.2f} meV, "
          f"forces MAE {1e3 * t['forces_mae_eV_A']:.2f} meV/Å; run directory {workdir}"
          + (f"; exported to {cfg.export}" if cfg.export else ""))
    return 0


def _cmd_convert_reference(args) -> int:
    from efa_calc.checkpoint import EnergyShift, save_checkpoint
    from efa_calc.reference import checkpoint_from_reference

    hp = json.loads(Path(args.hyperparameters).read_text())
    if "hyperparameters" in hp and isinstance(hp["hyperparameters"], dict):
        hp = hp["hyperparameters"]  # accept an entry of reference_predictions.json as is
    shift = EnergyShift(constant=args.energy_shift) if args.energy_shift else None
    species = args.species.split(",") if args.species else None
    ckpt = checkpoint_from_reference(args.ckpt_dir, hp, species=species, energy_shift=shift, name=args.name)
    out = save_checkpoint(ckpt, args.out, overwrite=args.overwrite)
    print(f"wrote {out} (species {', '.join(ckpt.species)}; max_length {ckpt.config.max_length} Å)")
    return 0


def _cmd_models(args) -> int:
    from efa_calc.checkpoint import load_checkpoint
    from efa_calc.models import list_models, resolve_model

    for name in list_models():
        ck = load_checkpoint(resolve_model(name), check_shapes=False)
        lr = "EFA" if ck.config.long_range is not None else "local"
        print(f"{name:20s} {lr:5s} cutoff {ck.config.cutoff:g} Å  species {','.join(ck.species)}  {resolve_model(name)}")
    return 0


def _cmd_ipi(args) -> int:
    """Serve forces to an i-PI server (or LAMMPS through i-PI) with ASE's SocketClient."""
    from ase.calculators.socketio import SocketClient
    from ase.io import read

    from efa_calc.calculator import EFACalculator

    if (args.unix is None) == (args.port is None):
        raise SystemExit("efa-calc ipi: give exactly one of --unix NAME or --port N")
    atoms = read(args.structure)
    atoms.pbc = False  # i-PI always sends a cell; the models are non-periodic
    atoms.calc = EFACalculator(args.model, dtype=args.dtype, strict=not args.no_strict)
    client = SocketClient(host=args.host, port=args.port, unixsocket=args.unix)
    print(f"efa-calc ipi: model {args.model} connected to "
          f"{'unix socket ' + args.unix if args.unix else f'{args.host}:{args.port}'}", flush=True)
    client.run(atoms)
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

    t = sub.add_parser("train", help="train a model from a TOML config (resumes in its run directory)")
    t.add_argument("config", help="training config, e.g. models/configs/cumulene-efa.toml")
    t.add_argument("--workdir", help="run directory (default: runs/<name>); re-running resumes there")
    t.add_argument("--steps", type=int, help="override the number of optimiser steps")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("convert-reference", help="convert a reference-code (orbax) checkpoint to efa-calc's format")
    c.add_argument("ckpt_dir", help="reference run directory (holding ckpt_<step>/params)")
    c.add_argument("--hyperparameters", required=True,
                   help="JSON file with the reference EnergyModel keyword arguments")
    c.add_argument("--out", required=True, help="output checkpoint directory")
    c.add_argument("--species", help="comma-separated elements (default: non-zero element_bias entries)")
    c.add_argument("--energy-shift", type=float, default=0.0,
                   help="constant added to every energy in eV (e.g. the training-set mean)")
    c.add_argument("--name", help="model name stored in the checkpoint")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=_cmd_convert_reference)

    i = sub.add_parser("ipi", help="drive this calculator from an i-PI server (ASE SocketClient)")
    i.add_argument("--model", required=True, help="bundled model name or checkpoint directory")
    i.add_argument("--structure", required=True,
                   help="any ASE-readable file with the system (i-PI sends positions only, not elements)")
    i.add_argument("--unix", help="UNIX socket name (i-PI <address>)")
    i.add_argument("--port", type=int, help="TCP port of the i-PI server")
    i.add_argument("--host", default="localhost", help="i-PI server host for --port")
    i.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    i.add_argument("--no-strict", action="store_true", help="warn instead of failing beyond max_length")
    i.set_defaults(func=_cmd_ipi)

    m = sub.add_parser("models", help="list the models found by name (bundled and EFA_CALC_MODEL_PATH)")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
