"""Write the training envelope into the bundled checkpoints' ``config.json``.

    python models/write_envelopes.py            # all four bundled models

For each model the training split is rebuilt exactly as ``efa-calc train`` made it: the
dataset of ``models/configs/<name>.toml``, its ``include`` filter, split sizes and seed (the
split sizes are checked against the checkpoint's provenance).  The envelope of that split
(:class:`efa_calc.envelope.Envelope`) is added to ``config.json`` together with
``config_sha256``, the checksum over every field; the parameters are not touched.  Newly
trained models get their envelope from the trainer itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ["cumulene-efa", "cumulene-local", "sn2-efa", "sn2-local"]


def write_envelope(name: str) -> dict:
    from efa_calc.checkpoint import write_config
    from efa_calc.data import read_dataset, split_indices
    from efa_calc.envelope import Envelope
    from efa_calc.checkpoint import EnergyShift
    from efa_calc.train import load_train_config

    cfg = load_train_config(HERE / "configs" / f"{name}.toml")
    ckpt_dir = HERE / name
    meta = json.loads((ckpt_dir / "config.json").read_text())
    ds = read_dataset(cfg.data_path).select(cfg.include)
    train, valid, test = split_indices(len(ds), cfg.split, cfg.split_seed)
    want = meta["provenance"]["data"]["split"]
    got = {"train": len(train), "valid": len(valid), "test": len(test)}
    if got != want or len(ds) != meta["provenance"]["data"]["num_frames"]:
        raise SystemExit(f"{name}: rebuilt split {got} of {len(ds)} frames differs from the checkpoint's {want}")
    shift = EnergyShift(**meta["energy_shift"])
    env = Envelope.from_dataset(ds.subset(train), meta["model"]["cutoff"], shift,
                                source=f"training split ({len(train)} frames) of {cfg.data_path.name}")
    meta["envelope"] = env.to_dict()
    write_config(ckpt_dir, meta)
    return meta["envelope"]


def main(names: list[str]) -> None:
    for name in names or MODELS:
        env = write_envelope(name)
        print(f"{name}: {json.dumps({k: env[k] for k in ('elements', 'num_atoms', 'energy_per_atom')})}")
        print(f"   min distances {env['min_distance']}  max neighbours {env['max_neighbors']}")


if __name__ == "__main__":
    main(sys.argv[1:])
