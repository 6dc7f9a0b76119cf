"""Datasets I/O, energy shifts, and the trainer: loss goes down, exact resume, data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from efa_calc.config import EFAConfig, ModelConfig
from efa_calc.data import Dataset, fit_energy_shift, read_dataset, split_indices, write_dataset
from efa_calc.train import TrainConfig, Trainer, TrainingOptions

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import morse_dataset  # noqa: E402

TINY = ModelConfig(num_features=16, num_iterations=2, cutoff=4.0, mp_max_degree=1, num_basis_functions=16,
                   long_range=EFAConfig(iterations=(0, 1), lebedev_num=50, max_frequency=np.pi, max_length=10.0,
                                        max_degree=1, qk_features=8, v_features=8))


def _config(steps=60, devices=1, **kw) -> TrainConfig:
    opts = TrainingOptions(**{"steps": steps, "graphs_per_batch": 8, "learning_rate": 5e-3, "final_learning_rate": 1e-3,
                              "eval_every": 10, "checkpoint_every": 5, "ema_decay": 0.9, "num_devices": devices, **kw})
    return TrainConfig("tiny", Path("synthetic"), (48, 16, -1), 0, TINY, opts, None,
                       {"model": TINY.to_dict(), "training": {"steps": steps}})


@pytest.fixture(scope="module")
def dataset():
    return morse_dataset(72)


@pytest.mark.parametrize("suffix", [".extxyz", ".db", ".npz"])
def test_dataset_round_trip(tmp_path, dataset, suffix):
    path = tmp_path / f"ds{suffix}"
    write_dataset(dataset, path)
    back = read_dataset(path)
    assert len(back) == len(dataset)
    np.testing.assert_allclose(back.energy, dataset.energy, rtol=1e-12)
    for a, b in zip(dataset.numbers, back.numbers):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(dataset.forces, back.forces):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)  # extxyz keeps 8 decimals


def test_reads_reference_npz_layout(shared):
    ds = read_dataset(shared / "datasets" / "3D_cluster_16_atoms_radius_2point5.npz")
    assert len(ds) == 2500 and ds.species == ["H"] and ds.numbers[0].dtype.kind == "i"


def test_energy_shift_recovers_atomic_energies(dataset):
    shift = fit_energy_shift(dataset)
    # the synthetic energies are -13.6 eV per H and -1030 eV per C plus O(1 eV) pair terms
    assert abs(shift.per_element["H"] + 13.6) < 1.0 and abs(shift.per_element["C"] + 1030.0) < 1.0
    residual = dataset.energy - np.array([shift.atomic(z).sum() for z in dataset.numbers])
    assert np.abs(residual).max() < 5.0


def test_split_is_disjoint_and_seeded():
    a = split_indices(100, [60, 20, -1], seed=3)
    b = split_indices(100, [60, 20, -1], seed=3)
    assert [len(x) for x in a] == [60, 20, 20]
    assert len(set(np.concatenate(a))) == 100
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], split_indices(100, [60, 20, -1], seed=4)[0])


def test_training_lowers_the_loss_and_exports(tmp_path, dataset):
    cfg = _config(steps=60)
    tr = Trainer(cfg, tmp_path / "run", dataset=dataset, progress=False)
    first = tr.evaluate(tr._fresh_state()["params"], tr.valid_sampler)
    state = tr.run()
    summary = tr.finish(state)
    last = state["history"][-1]
    assert last["valid_forces_mae_eV_A"] < 0.7 * first["forces_mae_eV_A"]
    assert (tmp_path / "run" / "best" / "config.json").is_file()
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 10_000
    assert summary["test"]["forces_mae_eV_A"] > 0


def test_resume_after_kill_is_identical(tmp_path, dataset):
    cfg = _config()  # the same options as the other tests: one compiled train step
    full = Trainer(cfg, tmp_path / "full", dataset=dataset, progress=False).run(steps=14)
    part = Trainer(cfg, tmp_path / "part", dataset=dataset, progress=False)
    part.run(steps=14, max_steps_this_call=7)  # "killed" after step 7 (state saved at 5 and 7)
    resumed = Trainer(cfg, tmp_path / "part", dataset=dataset, progress=False).run(steps=14)
    assert resumed["step"] == full["step"] == 14
    for a, b in zip(jax.tree_util.tree_leaves(full["params"]), jax.tree_util.tree_leaves(resumed["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]


def test_resume_refuses_a_different_config(tmp_path, dataset):
    Trainer(_config(), tmp_path / "r", dataset=dataset, progress=False).run(steps=5)
    other = _config(learning_rate=1e-2)
    other = TrainConfig(other.name, other.data_path, other.split, other.split_seed, other.model, other.training,
                        None, {"model": TINY.to_dict(), "training": {"learning_rate": 1e-2}})
    with pytest.raises(ValueError, match="different config"):
        Trainer(other, tmp_path / "r", dataset=dataset, progress=False).run(steps=5)


_DP_SCRIPT = r"""
import sys, json, numpy as np, jax
sys.path.insert(0, {tests!r})
from test_training import _config
from synthetic import morse_dataset
from efa_calc.train import Trainer
assert len(jax.devices()) == 2
out = {{}}
for d in (1, 2):
    tr = Trainer(_config(devices=d), {tmp!r} + f"/dp{{d}}", dataset=morse_dataset(72), progress=False)
    st = tr.run(steps=3)
    out[d] = [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(st["params"])]
print(json.dumps(out))
"""


def test_data_parallel_step_equals_single_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    script = _DP_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for a, b in zip(out["1"], out["2"]):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("zero_start", [True, False])
def test_zero_output_initialisation_is_a_saddle(dataset, zero_start):
    """With the reference's all-zero readout and MLP outputs the initial energy is a
    per-element constant (forces exactly zero) and no position-dependent parameter gets a
    gradient (the loss sits on a saddle); our training default
    (``output_is_zero_at_init=False``) starts with gradients flowing everywhere."""
    import jax.numpy as jnp
    from efa_calc.data import BatchSampler
    from efa_calc.nn.energy_model import Batch, energy_and_forces, init_params

    cfg = TINY.replace(output_is_zero_at_init=zero_start)
    shift = fit_energy_shift(dataset)
    sampler = BatchSampler(dataset, cfg.cutoff, shift, 8)
    tb = next(sampler.epoch(0))
    batch = Batch(*(jnp.asarray(a[0]) for a in tb.inputs))
    params = init_params(cfg, jax.random.PRNGKey(0), batch)

    def loss(p):
        e, f, _ = energy_and_forces(p, cfg, batch, nodes_per_graph=sampler.slots)
        return jnp.sum(((e - tb.energy[0]) * batch.graph_mask) ** 2) + jnp.sum((f - tb.forces[0]) ** 2)

    _, forces, _ = energy_and_forces(params, cfg, batch, nodes_per_graph=sampler.slots)
    assert (float(np.abs(np.asarray(forces)).max()) == 0.0) == zero_start
    grads = jax.grad(loss)(params)["params"]
    deep = {k: v for k, v in grads.items() if k.startswith(("message_pass", "long_range_0", "long_range_1"))}
    assert set(deep) >= {"message_pass_0", "long_range_0"}
    norms = {k: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(v))) for k, v in deep.items()}
    if zero_start:
        assert all(n == 0.0 for n in norms.values()), norms
    else:
        assert float(jnp.abs(grads["readout"]["kernel"]).sum()) > 0
        assert all(n > 0.0 for n in norms.values()), norms
