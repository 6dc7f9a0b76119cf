"""The ``efa-calc`` command line: evaluation, data generation, training, checkpoint conversion, i-PI.

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
        lr = ck.config.long_range.kind if ck.config.long_range is not None else "local"
        lr += "+mara" if ck.config.mara_gate is not None else ""
        env = "envelope" if ck.envelope is not None else "no envelope (unchecked)"
        print(f"{name:20s} {lr:10s} cutoff {ck.config.cutoff:g} Å  species {','.join(ck.species)}  {env}  "
              f"{resolve_model(name)}")
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
    atoms.calc = EFACalculator(args.model, dtype=args.dtype, strict=not args.no_strict, guard=args.guard)
    client = SocketClient(host=args.host, port=args.port, unixsocket=args.unix)
    print(f"efa-calc ipi: model {args.model} connected to "
          f"{'unix socket ' + args.unix if args.unix else f'{args.host}:{args.port}'}", flush=True)
    client.run(atoms)
    return 0


def _cmd_lammps(args) -> int:
    """Run a LAMMPS input with the model behind its fix external; exit 2 for bad input, 1 for a failed run."""
    from efa_calc.errors import EFAError
    from efa_calc.interfaces.lammps_run import RunFailed, run_input

    try:
        out = run_input(args.input, args.model, args.elements, fix_id=args.fix_id, log=args.log,
                        variables=dict(args.var or []), dtype=args.dtype, guard=args.guard)
    except (EFAError, ImportError, ValueError) as exc:
        print(f"efa-calc lammps: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"efa-calc lammps: {exc}", file=sys.stderr)
        return 1
    print(f"efa-calc lammps: {args.input}: done at step {out['steps']}, {out['calls']} model calls")
    return 0


def _cmd_eval(args) -> int:
    """Evaluate a model on every frame of a file; errors against its reference labels."""
    from ase.io import read, write

    from efa_calc.calculator import EFACalculator
    from efa_calc.evaluation import error_metrics, evaluate_frames, parity_plot, predictions_to_frames

    if args.batch_size < 1:
        raise SystemExit(f"efa-calc eval: --batch-size {args.batch_size}: allowed: an integer ≥ 1")
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"efa-calc eval: FILE {str(path)!r}: no such file")
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise SystemExit(f"efa-calc eval: --out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    try:
        frames = read(str(path), index=args.index)
    except Exception as exc:  # ase raises many types for unreadable files
        raise SystemExit(f"efa-calc eval: FILE {str(path)!r}: ase.io.read cannot read it ({exc})") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise SystemExit(f"efa-calc eval: FILE {str(path)!r} holds no frames")
    for a in frames:
        a.pbc = a.pbc if args.keep_pbc else False
    models = args.model.split(",")
    calc = EFACalculator(models if len(models) > 1 else models[0], dtype=args.dtype, guard=args.guard,
                         strict=not args.no_strict)
    preds = evaluate_frames(calc, frames, batch_size=args.batch_size, progress=not args.quiet)
    if out is not None:
        write(out, predictions_to_frames(frames, preds, args.energy_key, args.forces_key), format="extxyz")
        print(f"wrote {out}: predictions for {len(frames)} frames (EFA_energy, EFA_forces, EFA_energies"
              + (", EFA_energy_std, EFA_forces_std" if calc.is_committee else "") + ")")
    n_out = sum(p["extrapolation"]["status"] == "outside" for p in preds)
    if n_out:
        print(f"{n_out} of {len(frames)} frames lie outside the training envelope (EFA_extrapolation in the output)")
    metrics = error_metrics(frames, preds, args.energy_key, args.forces_key)
    if not metrics:
        print(f"{path.name}: no reference energies or forces ({args.energy_key!r}/{args.forces_key!r}); predictions only")
        return 0
    print(f"{args.model} on {path.name} ({len(frames)} frames):")
    print(f"  {'property':28s} {'MAE':>12s} {'RMSE':>12s}  unit")
    if "energy_eV" in metrics:
        e, ea = metrics["energy_eV"], metrics["energy_per_atom_eV"]
        print(f"  {'energy':28s} {1e3 * e['mae']:12.3f} {1e3 * e['rmse']:12.3f}  meV")
        print(f"  {'energy per atom':28s} {1e3 * ea['mae']:12.3f} {1e3 * ea['rmse']:12.3f}  meV/atom")
    if "forces_eV_A" in metrics:
        f = metrics["forces_eV_A"]
        print(f"  {'forces (components)':28s} {1e3 * f['mae']:12.3f} {1e3 * f['rmse']:12.3f}  meV/Å")
        for sym, fe in metrics["forces_per_element_eV_A"].items():
            print(f"  {'forces on ' + sym:28s} {1e3 * fe['mae']:12.3f} {1e3 * fe['rmse']:12.3f}  meV/Å")
    if "stress_eV_A3" in metrics:
        st = metrics["stress_eV_A3"]
        print(f"  {'stress (Voigt components)':28s} {1e3 * st['mae']:12.4f} {1e3 * st['rmse']:12.4f}  meV/Å³")
    stem = out.with_suffix("") if out is not None else Path(path.stem)
    plot = Path(args.plot) if args.plot else stem.parent / f"{stem.name}_parity.png"
    parity_plot(frames, preds, plot, f"{args.model} on {path.name}", args.energy_key, args.forces_key)
    metrics_path = plot.with_name(plot.name.replace("_parity.png", "") + "_errors.json") if not args.plot else \
        plot.with_suffix(".json")
    metrics_path.write_text(json.dumps({"model": args.model, "file": str(path), "num_frames": len(frames),
                                        "units": {"energy": "eV", "forces": "eV/Angstrom",
                                                  "stress": "eV/Angstrom^3"}, **metrics}, indent=1))
    print(f"parity plot {plot}; errors {metrics_path}")
    return 0


def _version() -> str:
    from efa_calc import __version__

    return f"efa-calc {__version__}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="efa-calc", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("eval", help="evaluate a model on a file of structures; errors against its reference labels")
    e.add_argument("file", help="structures: any file ase.io.read understands (extxyz with energy/forces for errors)")
    e.add_argument("--model", required=True,
                   help="bundled model name or checkpoint directory (comma-separated: a committee)")
    e.add_argument("--out", help="write the frames with predictions to this extxyz file")
    e.add_argument("--plot", help="parity plot PNG (default: <out or file stem>_parity.png)")
    e.add_argument("--batch-size", type=int, default=16, help="structures per XLA call (default 16)")
    e.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    e.add_argument("--index", default=":", help="frames to read, ase.io.read syntax (default ':' = all)")
    e.add_argument("--energy-key", default="energy", help="reference energy key (default: energy)")
    e.add_argument("--forces-key", default="forces", help="reference forces key (default: forces)")
    e.add_argument("--guard", default="warn", choices=["warn", "error", "off"], help="extrapolation guard")
    e.add_argument("--no-strict", action="store_true", help="warn instead of failing beyond max_length")
    e.add_argument("--keep-pbc", action="store_true", help="keep periodic flags of the file (default: pbc=False)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_eval)

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
    i.add_argument("--guard", default="warn", choices=["warn", "error", "off"],
                   help="extrapolation guard: warn (default), error or off when a structure leaves the training envelope")
    i.set_defaults(func=_cmd_ipi)

    lm = sub.add_parser("lammps", help="run a LAMMPS input with the model in its 'fix ID all external pf/callback 1 1'")
    lm.add_argument("input", metavar="IN", help="LAMMPS input file (units metal; type i is element i of --elements)")
    lm.add_argument("--model", required=True, help="bundled model name or checkpoint directory")
    lm.add_argument("--elements", required=True, help="chemical symbol of each LAMMPS atom type, in order: C,H")
    lm.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    lm.add_argument("--fix-id", default="efa", help="ID of the fix external in the input (default: efa)")
    lm.add_argument("--guard", default="warn", choices=["warn", "error", "off"], help="extrapolation guard")
    lm.add_argument("--log", default="log.lammps", help="LAMMPS log file (default log.lammps; 'none': no log)")
    lm.add_argument("--var", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="define a LAMMPS index variable, as lmp -var NAME VALUE (repeatable)")
    lm.set_defaults(func=_cmd_lammps)

    m = sub.add_parser("models", help="list the models found by name (bundled and EFA_CALC_MODEL_PATH)")
    m.set_defaults(func=_cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
