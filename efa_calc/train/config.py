"""Training configuration (TOML), e.g. ``models/configs/cumulene-efa.toml``::

    name = "cumulene-efa"
    export = "../cumulene-efa"             # final checkpoint directory (relative to this file)

    [data]
    path = "../data/cumulene_gfn2.extxyz"  # extxyz, ASE db or reference npz
    split = [2800, 350, -1]                # train, valid, test (-1: the rest)
    seed = 0
    include = { n_carbons = [3, 5, 7] }    # optional: keep frames whose info matches
    extra_paths = ["../data/more.extxyz"]  # optional: further files, appended before the split

    [model]                                # ModelConfig fields
    num_features = 32
    num_iterations = 3
    cutoff = 4.0
    [model.long_range]                     # omit for a local model
    kind = "efa"
    iterations = [0, 1, 2]
    ...

    [training]
    steps = 20000
    graphs_per_batch = 16
    learning_rate = 1e-3
    final_learning_rate = 1e-5
    energy_weight = 0.01
    forces_weight = 0.99
    stress_weight = 0.0                    # periodic data: + w_S·MSE(stress), (eV/Å³)²
    ema_decay = 0.999
    eval_every = 500
    checkpoint_every = 250
    seed = 0
    num_devices = 1
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from efa_calc.nn.config import ModelConfig

__all__ = ["TrainingOptions", "TrainConfig", "load_train_config"]


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """Optimisation settings.

    Attributes:
      steps: optimiser steps.
      graphs_per_batch: molecules per step (split evenly over ``num_devices``).
      learning_rate, final_learning_rate: exponential decay from one to the other over ``steps``.
      warmup_steps: linear warm-up from 0.
      energy_weight, forces_weight: loss = w_E·MSE(E) [eV²] + w_F·MSE(F) [(eV/Å)²].
      stress_weight: periodic data only: + w_S·MSE(σ) [(eV/Å³)²] over the nine stress
        components (σ ~ 1e-4 eV/Å³ for argon, so useful weights are ~1e3–1e5).  0 (the
        default) adds no term; molecular data must keep 0.
      ema_decay: exponential moving average of the parameters (evaluated and exported).
      grad_clip: global gradient-norm clip.
      eval_every, checkpoint_every: steps between validation / resumable state saves.
      seed: initialisation and shuffling seed.
      num_devices: data-parallel devices (``jax.devices()[:num_devices]``).
      init: ``"unit"`` rescales the fresh parameters so every layer's output has unit
        RMS per irrep on the first batch (:mod:`efa_calc.train.initialisation`; needed for
        torsion-like many-body terms to be learnable); ``"e3x"`` keeps e3x's initialisers.
      message_passing: the message-passing kernel, ``"native"``, ``"cuequivariance"`` or
        ``None`` (the device's default; :func:`efa_calc.nn.tensor.resolve_message_passing`).
        Same gradients either way; not saved with the model.
    """

    steps: int = 10000
    graphs_per_batch: int = 16
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5
    warmup_steps: int = 0
    energy_weight: float = 0.01
    forces_weight: float = 0.99
    stress_weight: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 10.0
    eval_every: int = 500
    checkpoint_every: int = 250
    seed: int = 0
    num_devices: int = 1
    init: str = "unit"
    message_passing: str | None = None  # (issue 24)

    def __post_init__(self):
        if self.stress_weight < 0:
            raise ValueError(f"stress_weight must be >= 0, got {self.stress_weight}")
        if self.init not in ("unit", "e3x"):
            raise ValueError(f"unknown init {self.init!r}; use 'unit' or 'e3x'")
        if self.message_passing is not None:  # (issue 24)
            from efa_calc.nn.tensor import check_message_passing

            check_message_passing(self.message_passing)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str
    data_path: Path
    split: tuple
    split_seed: int
    model: ModelConfig
    training: TrainingOptions
    export: Path | None = None
    _: dataclasses.KW_ONLY  # optional extras by keyword, so positional callers cannot mix them up
    include: dict | None = None
    extra_data_paths: tuple = ()
    source: dict = dataclasses.field(default_factory=dict, compare=False)


def load_train_config(path: str | Path, **overrides) -> TrainConfig:
    """Read a training TOML; paths are relative to the file.  ``overrides`` replace
    ``[training]`` options (e.g. ``steps=100`` for a quick run)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    base = path.resolve().parent
    data = raw["data"]
    training = TrainingOptions(**{**raw.get("training", {}), **overrides})
    if training.graphs_per_batch % training.num_devices:
        raise ValueError("graphs_per_batch must be divisible by num_devices")
    model = ModelConfig.from_dict(raw["model"])
    export = raw.get("export")
    return TrainConfig(
        name=raw.get("name", path.stem),
        data_path=(base / data["path"]).resolve(),
        split=tuple(data.get("split", [0.8, 0.1, -1])),
        split_seed=int(data.get("seed", 0)),
        model=model,
        training=training,
        export=(base / export).resolve() if export else None,
        include=data.get("include"),
        extra_data_paths=tuple((base / p).resolve() for p in data.get("extra_paths", [])),
        source=raw,
    )
