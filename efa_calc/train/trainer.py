"""Training loop: optax Adam with a decaying learning rate, energy + force loss, parameter
EMA, validation, best-checkpoint keeping, exact resume, and data parallelism.

Data parallelism uses ``jax.sharding``: every batch has a leading shard axis (one shard of
molecules per device), the per-shard loss terms are computed under ``vmap`` and the
batch arrays are placed with ``NamedSharding(mesh, P('data'))`` while parameters are
replicated — XLA then runs each shard on its device and all-reduces the gradient.  The
loss is Σ squared errors / Σ counts over all shards, so D shards on D devices give the
same step as the same shards on one device.  Multi-host: call
``jax.distributed.initialize()`` before training; the mesh then spans all processes'
devices (each process must feed its own shards — not exercised here).

Resume: every ``checkpoint_every`` steps the full state (parameters, optimiser state, EMA,
step, history, best validation) is written atomically to ``<workdir>/state``; batch order
is a pure function of (seed, epoch), so a killed and resumed run reproduces an
uninterrupted one exactly.

Periodic data (every frame a periodic cell, :attr:`Dataset.is_periodic`) trains with
:func:`~efa_calc.nn.energy_model.energy_forces_stress` and adds w_S·MSE(σ) to the loss,
σ the stress (eV/Å³, ASE's sign, all nine components, graphs without a label masked);
the exported checkpoint is ``periodic=True``.  Molecular data keeps the energy + force
loss unchanged (``stress_weight`` must stay 0).  Long-range blocks must be defined in periodic cells (``LongRangeConfig.periodic``).

Units: energies eV, forces eV/Å, stress eV/Å³; losses in eV², (eV/Å)² and (eV/Å³)².
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from efa_calc.checkpoint import Checkpoint, file_sha256, git_commit, save_checkpoint
from efa_calc.data import BatchSampler, Dataset, fit_energy_shift, read_datasets, split_indices
from efa_calc.data.batches import TrainingBatch
from efa_calc.nn.batch import Batch
from efa_calc.errors import InputError
from efa_calc.nn.energy_model import energy_and_forces, energy_forces_stress, init_params
from efa_calc.nn.config import ModelConfig
from efa_calc.train.config import TrainConfig, TrainingOptions
from efa_calc.train.curves import plot_learning_curves
from efa_calc.nn.tensor import resolve_message_passing
from efa_calc.train.initialisation import rescale_to_unit_outputs

__all__ = ["Trainer", "train"]


def _schedule(o: TrainingOptions):
    decay = optax.exponential_decay(o.learning_rate, transition_steps=max(o.steps - o.warmup_steps, 1),
                                    decay_rate=o.final_learning_rate / o.learning_rate)
    if o.warmup_steps:
        warm = optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps)
        return optax.join_schedules([warm, decay], [o.warmup_steps])
    return decay


class _Steps(NamedTuple):
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    train_step: Callable
    eval_totals: Callable
    data_sharding: jax.sharding.Sharding
    replicated: jax.sharding.Sharding


@functools.lru_cache(maxsize=16)
def _compiled_steps(cfg: ModelConfig, slots: int, o: TrainingOptions, periodic: bool = False) -> _Steps:
    """Jitted train/eval steps, shared by every Trainer with the same settings (a resumed
    run in the same process, tests) so that they compile once.  ``periodic`` adds the stress
    terms (Σ Δσ², 9·graphs with a label, Σ |Δσ|) to the per-shard totals."""
    schedule = _schedule(o)
    optimizer = optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.adam(schedule))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[: o.num_devices]), ("data",))
    dat = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def shard_terms(params, inputs: Batch, e_target, f_target, s_target=None, s_mask=None):
        if periodic:
            e_g, forces, _, stress = energy_forces_stress(params, cfg, inputs)
        else:
            e_g, forces, _ = energy_and_forces(params, cfg, inputs)
        gm = inputs.graph_mask.astype(e_g.dtype)
        nm = inputs.node_mask.astype(e_g.dtype)[:, None]
        de, df = (e_g - e_target) * gm, (forces - f_target) * nm
        terms = [jnp.sum(de**2), jnp.sum(gm), jnp.sum(df**2), 3 * jnp.sum(nm), jnp.sum(jnp.abs(de)), jnp.sum(jnp.abs(df))]
        if periodic:
            ds = (stress - s_target) * s_mask[:, None, None]
            terms += [jnp.sum(ds**2), 9 * jnp.sum(s_mask), jnp.sum(jnp.abs(ds))]
        return jnp.stack(terms)

    def totals(params, tb: TrainingBatch):
        args = (tb.energy, tb.forces) + ((tb.stress, tb.stress_mask) if periodic else ())
        per_shard = jax.vmap(shard_terms, in_axes=(None, 0) + (0,) * len(args))(params, tb.inputs, *args)
        return jnp.sum(per_shard, axis=0)

    def loss_fn(params, tb):
        t = totals(params, tb)
        mse_e, mse_f = t[0] / t[1], t[2] / t[3]
        loss = o.energy_weight * mse_e + o.forces_weight * mse_f
        if periodic:  # the molecular loss stays exactly as it was
            mse_s = t[6] / jnp.maximum(t[7], 1.0)
            loss = loss + o.stress_weight * mse_s
        return loss, (mse_e, mse_f, mse_s if periodic else jnp.zeros_like(mse_e))

    def train_step(params, opt_state, ema, step, tb):
        (loss, (mse_e, mse_f, mse_s)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = jnp.minimum(o.ema_decay, (1.0 + step) / (10.0 + step))
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        return params, opt_state, ema, jnp.stack([loss, mse_e, mse_f, mse_s])

    train_step = jax.jit(train_step, in_shardings=(rep, rep, rep, rep, dat), out_shardings=(rep, rep, rep, rep),
                         donate_argnums=(0, 1, 2))
    eval_totals = jax.jit(totals, in_shardings=(rep, dat), out_shardings=rep)
    return _Steps(schedule, optimizer, train_step, eval_totals, dat, rep)


def _read_data(config: TrainConfig) -> Dataset:
    """The config's data file, with its ``extra_paths`` appended (frames in file order)."""
    return read_datasets([config.data_path, *config.extra_data_paths])


class Trainer:
    """Train one model described by a :class:`~efa_calc.train.config.TrainConfig`.

    Args:
      config: the training configuration.
      workdir: resumable run directory (state, logs, best checkpoint, plots).
      dataset: optional pre-loaded dataset (else ``config.data_path`` is read).
      progress: show a tqdm bar.
    """

    def __init__(self, config: TrainConfig, workdir: str | Path, dataset: Dataset | None = None, progress: bool = True):
        self.cfg = config
        self.opts = config.training
        self.workdir = Path(workdir)
        self.progress = progress
        self.ds = (dataset if dataset is not None else _read_data(config)).select(config.include)
        self.periodic = self._check_periodic()
        self.train_idx, self.valid_idx, self.test_idx = split_indices(len(self.ds), config.split, config.split_seed)
        train_ds = self.ds.subset(self.train_idx)
        self.species = self.ds.species
        self.shift = fit_energy_shift(train_ds, self.species)
        d = self.opts.num_devices
        if d > len(jax.devices()):
            raise ValueError(f"num_devices={d} but only {len(jax.devices())} jax devices exist")
        g = self.opts.graphs_per_batch // d
        m = config.model
        lr = m.long_range  # one static k-grid/mesh for every batch (a block that needs one)
        grid = lr.reciprocal_grid(np.stack(self.ds.cells)) if self.periodic and lr is not None else None
        kw = {"reciprocal_grid": grid, "model_config": m}
        self.train_sampler = BatchSampler(train_ds, m.cutoff, self.shift, g, d, self.opts.seed, **kw)
        self.valid_sampler = BatchSampler(self.ds.subset(self.valid_idx), m.cutoff, self.shift, g, d, **kw)
        self.test_sampler = (BatchSampler(self.ds.subset(self.test_idx), m.cutoff, self.shift, g, d, **kw)
                             if len(self.test_idx) else None)
        if len(self.train_sampler) == 0:
            raise ValueError("training split smaller than one batch")
        self.slots = self.train_sampler.slots
        mp = resolve_message_passing(self.opts.message_passing, jax.devices()[0].platform)
        fns = _compiled_steps(config.model.for_evaluation(message_passing=mp), self.slots, self.opts, self.periodic)
        self.schedule, self.optimizer = fns.schedule, fns.optimizer
        self._train_step, self._eval_totals = fns.train_step, fns.eval_totals
        self._data_sharding, self._replicated = fns.data_sharding, fns.replicated

    def _check_periodic(self) -> bool:
        """Whether the data is periodic; refuses (before any compile) what cannot be trained."""
        periodic = self.ds.is_periodic  # InputError for mixed periodic/molecular frames
        lr = self.cfg.model.long_range
        if periodic and lr is not None and not lr.periodic:
            raise InputError(f"the data is periodic but the model's {lr.kind!r} block is not defined in periodic "
                             "cells; train a local model (no [model.long_range]) or a periodic block")
        if self.opts.stress_weight and not periodic:
            raise InputError(f"stress_weight={self.opts.stress_weight} needs periodic data with stress labels; "
                             "this data is molecular (use stress_weight = 0)")
        if self.opts.stress_weight and not self.ds.has_stress:
            missing = len(self.ds) if self.ds.stress is None else sum(s is None for s in self.ds.stress)
            raise InputError(f"stress_weight={self.opts.stress_weight} but {missing} of {len(self.ds)} frames have no "
                             "stress (extxyz 'stress' or 'virial'); label them or use stress_weight = 0")
        return periodic

    def _put(self, tb: TrainingBatch) -> TrainingBatch:
        return jax.device_put(tb, self._data_sharding)

    # ------------------------------------------------------------------ state
    def _fresh_state(self) -> dict:
        # the whole first batch, unsharded: the initialisation is then the same for any device count
        first = jax.tree_util.tree_map(jnp.asarray, self.train_sampler.unsharded(self.train_sampler.first_indices()))
        params = init_params(self.cfg.model, jax.random.PRNGKey(self.opts.seed), first)
        if self.opts.init == "unit":
            # per-atom energy scale of the targets: molecule std spread over its atoms
            n_atoms = np.mean([len(z) for z in self.train_sampler.ds.numbers])
            energy_rms = float(np.std(self.train_sampler.targets) / np.sqrt(n_atoms)) or 0.1
            params = rescale_to_unit_outputs(params, self.cfg.model, first, self.slots, energy_rms=energy_rms)
        params = jax.device_put(params, self._replicated)
        return {"step": 0, "params": params, "opt_state": jax.device_put(self.optimizer.init(params), self._replicated),
                "ema": jax.tree_util.tree_map(jnp.copy, params), "history": [], "best": None}

    def _state_manager(self):
        """orbax's CheckpointManager over ``<workdir>/state``: each save is a new step directory,
        finalised atomically (a killed save is ignored on restore), and only the latest is kept."""
        import orbax.checkpoint as ocp

        legacy = self.workdir / "state" / "state.json"
        if legacy.is_file():
            raise ValueError(f"{legacy.parent} holds a training state in the format of efa-calc < 0.2 "
                             "(npz files); resume it with that version or start a new workdir")
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        return ocp.CheckpointManager((self.workdir / "state").resolve(), options=options)

    def save_state(self, state: dict) -> None:
        """Write the resumable state (parameters, optimiser and EMA arrays, history, config)."""
        import orbax.checkpoint as ocp

        arrays = {k: state[k] for k in ("params", "opt_state", "ema")}
        meta = {"step": state["step"], "history": state["history"], "best": state["best"], "config": self.cfg.source}
        with self._state_manager() as mngr:
            mngr.save(state["step"], args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                             meta=ocp.args.JsonSave(meta)), force=True)

    def load_state(self) -> dict | None:
        """The saved state, or None.  Refuses a state written for a different config."""
        import orbax.checkpoint as ocp

        with self._state_manager() as mngr:
            step = mngr.latest_step()
            if step is None:
                return None
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            src = dict(self.cfg.source)
            saved = dict(meta["config"])
            for cfg in (src, saved):
                cfg.get("training", {}).pop("steps", None)  # more steps may be asked for on resume
                cfg.get("training", {}).pop("message_passing", None)  # same numbers with either kernel
            if saved != src:
                raise ValueError(f"{self.workdir} holds a training state for a different config; use a new workdir")
            template = self._fresh_state()
            arrays = mngr.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(
                {k: template[k] for k in ("params", "opt_state", "ema")})))["arrays"]
        return {"step": meta["step"], **{k: jax.device_put(arrays[k], self._replicated) for k in arrays},
                "history": meta["history"], "best": meta["best"]}

    # ------------------------------------------------------------------ loop
    def _batches_from(self, step: int):
        epoch, k = divmod(step, len(self.train_sampler))
        while True:
            for i, tb in enumerate(self.train_sampler.epoch(epoch)):
                if i >= k:
                    yield tb
            epoch, k = epoch + 1, 0

    def evaluate(self, params, sampler: BatchSampler) -> dict:
        """MAE/RMSE of energies (eV per molecule) and forces (eV/Å) on a sampler's molecules,
        and for periodic data of the stress (eV/Å³, over all nine components)."""
        t = np.zeros(9 if self.periodic else 6)
        for _, tb in sampler.ordered():
            t += np.asarray(self._eval_totals(params, self._put(tb)), np.float64)
        out = {"energy_mae_eV": t[4] / t[1], "energy_rmse_eV": float(np.sqrt(t[0] / t[1])),
               "forces_mae_eV_A": t[5] / t[3], "forces_rmse_eV_A": float(np.sqrt(t[2] / t[3]))}
        if self.periodic and t[7]:
            out.update(stress_mae_eV_A3=t[8] / t[7], stress_rmse_eV_A3=float(np.sqrt(t[6] / t[7])))
        return out

    def run(self, steps: int | None = None, max_steps_this_call: int | None = None) -> dict:
        """Train to ``steps`` (default: the config), resuming from ``workdir`` when possible.

        ``max_steps_this_call`` stops early (tests use it to simulate a kill).
        Returns the final state dict.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        total = steps or self.opts.steps
        state = self.load_state() or self._fresh_state()
        start = state["step"]
        t0 = time.time()
        # wall time accumulates over resumed calls, so a model card can quote the whole run
        elapsed_before = state["history"][-1].get("wall_time_s", 0.0) if state["history"] else 0.0
        bar = tqdm(total=total, initial=start, desc=f"training {self.cfg.name}", unit="step", disable=not self.progress)
        batches = self._batches_from(start)
        stop = total if max_steps_this_call is None else min(total, start + max_steps_this_call)
        last_losses = None
        for step in range(start, stop):
            tb = self._put(next(batches))
            state["params"], state["opt_state"], state["ema"], losses = self._train_step(
                state["params"], state["opt_state"], state["ema"], jnp.asarray(step, jnp.float32), tb)
            state["step"] = step + 1
            done = state["step"]
            if done % self.opts.eval_every == 0 or done == total:
                last_losses = np.asarray(losses)
                metrics = self.evaluate(state["ema"], self.valid_sampler)
                record = {"step": done, "loss": float(last_losses[0]), "train_mse_energy": float(last_losses[1]),
                          "train_mse_forces": float(last_losses[2]), "learning_rate": float(self.schedule(done)),
                          **({"train_mse_stress": float(last_losses[3])} if self.periodic else {}),
                          "wall_time_s": elapsed_before + time.time() - t0, **{f"valid_{k}": float(v) for k, v in metrics.items()}}
                state["history"].append(record)
                score = self.opts.energy_weight * metrics["energy_rmse_eV"] ** 2 + self.opts.forces_weight * metrics["forces_rmse_eV_A"] ** 2
                if self.periodic and "stress_rmse_eV_A3" in metrics:
                    score += self.opts.stress_weight * metrics["stress_rmse_eV_A3"] ** 2
                if state["best"] is None or score < state["best"]["score"]:
                    state["best"] = {"step": done, "score": score, **metrics}
                    self._write_checkpoint(state["ema"], self.workdir / "best", {"best_step": done})
                bar.set_postfix(E_mae=f"{metrics['energy_mae_eV']:.4f}", F_mae=f"{metrics['forces_mae_eV_A']:.4f}")
            if done % self.opts.checkpoint_every == 0 or done == stop:
                self.save_state(state)
            bar.update(1)
        bar.close()
        self.wall_time = time.time() - t0
        plot_learning_curves(state["history"], self.cfg.name, self.workdir / "learning_curves.png")
        return state

    # ------------------------------------------------------------------ outputs
    def _provenance(self) -> dict:
        return {
            "data": {"path": str(self.cfg.data_path), "sha256": file_sha256(self.cfg.data_path) if self.cfg.data_path.is_file() else None,
                     "num_frames": len(self.ds), "split": {"train": len(self.train_idx), "valid": len(self.valid_idx),
                                                            "test": len(self.test_idx)}, "split_seed": self.cfg.split_seed,
                     "include": self.cfg.include, "periodic": self.periodic,
                     "extra": [{"path": str(p), "sha256": file_sha256(p)} for p in self.cfg.extra_data_paths]},
            "training": dataclasses.asdict(self.opts),
            "git_commit": git_commit(),
            "hardware": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores; jax {jax.__version__} "
                        f"on {jax.devices()[0].platform}",
        }

    def envelope(self):
        """The training envelope (:class:`~efa_calc.envelope.Envelope`) of the training split."""
        from efa_calc.envelope import Envelope

        if getattr(self, "_envelope", None) is None:
            self._envelope = Envelope.from_dataset(
                self.ds.subset(self.train_idx), self.cfg.model.cutoff, self.shift,
                source=f"training split ({len(self.train_idx)} frames) of {self.cfg.data_path.name}")
        return self._envelope

    def _write_checkpoint(self, params, path: Path, extra: dict) -> None:
        params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
        ck = Checkpoint(self.cfg.model, params, self.species, self.shift, {**self._provenance(), **extra}, self.cfg.name,
                        envelope=self.envelope(), periodic=self.periodic)
        save_checkpoint(ck, path, overwrite=True)

    def finish(self, state: dict) -> dict:
        """Evaluate the best checkpoint on the test split, write ``summary.json`` and export."""
        from efa_calc.checkpoint import load_checkpoint

        best = load_checkpoint(self.workdir / "best")
        params = jax.device_put(jax.tree_util.tree_map(jnp.asarray, best.params), self._replicated)
        test = self.evaluate(params, self.test_sampler) if self.test_sampler else {}
        valid = self.evaluate(params, self.valid_sampler)
        wall = state["history"][-1].get("wall_time_s") if state["history"] else None
        summary = {"name": self.cfg.name, "steps": state["step"], "best_step": state["best"]["step"],
                   "valid": valid, "test": test, "wall_time_s": wall if wall is not None else getattr(self, "wall_time", None),
                   "num_parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(best.params))),
                   **self._provenance()}
        (self.workdir / "summary.json").write_text(json.dumps(summary, indent=1))
        if self.cfg.export is not None:
            ck = Checkpoint(best.config, best.params, best.species, best.energy_shift,
                            {**best.provenance, "test_errors": test, "valid_errors": valid,
                             "training_steps": summary["steps"], "training_wall_time_s": summary["wall_time_s"],
                             "num_parameters": summary["num_parameters"]}, self.cfg.name, envelope=self.envelope(),
                            periodic=best.periodic)
            save_checkpoint(ck, self.cfg.export, overwrite=True)
            shutil.copy(self.workdir / "learning_curves.png", self.cfg.export / "learning_curves.png")
        return summary


def train(config: TrainConfig, workdir: str | Path, progress: bool = True) -> dict:
    """Train (or resume) and finish: returns the summary dict."""
    tr = Trainer(config, workdir, progress=progress)
    state = tr.run()
    return tr.finish(state)
