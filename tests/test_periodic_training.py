"""Periodic training data (issue 22): stress/virial in datasets, periodic batches, the
stress term of the loss, the refusals, and the periodic training envelope.

Fast tests use a handful of the argon frames (LAMMPS labels, models/data/argon); the
training ones are ``slow``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from efa_calc.data import BatchSampler, Dataset, fit_energy_shift, read_dataset, write_dataset
from efa_calc.envelope import Envelope
from efa_calc.errors import InputError
from efa_calc.graphs.neighbors import neighbor_list
from efa_calc.nn.config import EFAConfig, ModelConfig
from efa_calc.train.config import TrainConfig, TrainingOptions
from efa_calc.train.trainer import Trainer

ARGON = Path(__file__).resolve().parents[1] / "models" / "data" / "argon"
SN2 = Path(__file__).resolve().parents[1] / "models" / "data" / "sn2_pbe0_test.extxyz"
CUTOFF = 6.0
AR_MASS_G = 39.948 * 1.66053906660e-24


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    """Six training frames of two sizes and both kinds (liquid, fcc solid)."""
    atoms = read(ARGON / "argon_lj.extxyz", ":")
    idx = [0, 1, 2, 3, len(atoms) - 2, len(atoms) - 1]
    return [atoms[i] for i in idx]


@pytest.fixture(scope="module")
def argon(frames) -> Dataset:
    return Dataset.from_atoms(frames)


# ------------------------------------------------------------------ datasets
def test_stress_is_read_from_extxyz_and_from_virial(frames, tmp_path):
    ds = Dataset.from_atoms(frames)
    assert ds.is_periodic and ds.has_stress
    for k, a in enumerate(frames):
        np.testing.assert_allclose(ds.stress[k], a.get_stress(voigt=False), rtol=0, atol=0)
        np.testing.assert_allclose(ds.cells[k], a.cell[:], atol=0)
        # the file's virial is an independent label: σ = −W / V
        np.testing.assert_allclose(ds.stress[k], -np.reshape(a.info["virial"], (3, 3)) / a.get_volume(),
                                   rtol=1e-7, atol=1e-12)
    # a file with a virial and no stress gets σ = −W / V
    only_virial = []
    for a in frames[:2]:
        b = a.copy()
        b.info["virial"] = np.reshape(a.info["virial"], (3, 3))
        b.calc = type(a.calc)(b, energy=a.get_potential_energy(), forces=a.get_forces())
        only_virial.append(b)
    write(tmp_path / "virial.extxyz", only_virial, format="extxyz")
    dv = read_dataset(tmp_path / "virial.extxyz")
    for k, a in enumerate(frames[:2]):
        np.testing.assert_allclose(dv.stress[k], a.get_stress(voigt=False), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("suffix", ["extxyz", "npz"])
def test_periodic_round_trip(argon, tmp_path, suffix):
    write_dataset(argon, tmp_path / f"a.{suffix}")
    back = read_dataset(tmp_path / f"a.{suffix}")
    assert back.is_periodic and back.has_stress
    for k in range(len(argon)):
        np.testing.assert_allclose(back.stress[k], argon.stress[k], atol=1e-15)
        np.testing.assert_allclose(back.cells[k], argon.cells[k], atol=1e-12)
        np.testing.assert_allclose(back.positions[k], argon.positions[k], atol=1e-8)
    sub = argon.subset([4, 1])
    np.testing.assert_array_equal(sub.stress[0], argon.stress[4])
    np.testing.assert_array_equal(sub.cells[1], argon.cells[1])


def test_molecular_dataset_is_unchanged():
    ds = read_dataset(SN2)
    assert ds.cells is None and ds.pbc is None and ds.stress is None
    assert not ds.is_periodic and not ds.has_stress


def test_mixed_periodic_and_molecular_frames_are_refused(frames):
    molecule = read(SN2, 0)
    ds = Dataset.from_atoms([frames[0], molecule])
    with pytest.raises(InputError, match="mixes 1 periodic and 1 non-periodic"):
        ds.is_periodic
    with pytest.raises(InputError, match="mixes"):
        BatchSampler(ds, CUTOFF, fit_energy_shift(ds), 2)


# ------------------------------------------------------------------ batches
def test_periodic_batch_has_image_pairs_stress_targets_and_zero_weight_padding(argon):
    shift = fit_energy_shift(argon)
    bs = BatchSampler(argon, CUTOFF, shift, graphs_per_shard=4)
    tb = bs.make([5, 2, 0])  # 3 frames in 4 graph slots: one padding graph
    b = tb.inputs
    assert tb.stress.shape == (1, 4, 3, 3) and tb.stress_mask.shape == (1, 4)
    np.testing.assert_array_equal(tb.stress_mask[0], [1, 1, 1, 0])
    np.testing.assert_allclose(tb.stress[0, 0], argon.stress[5], rtol=1e-6)
    assert np.all(tb.stress[0, 3] == 0)
    # every real pair is an image pair within the cutoff, and their count is the pair list's
    e = b.edge_mask[0]
    d = b.positions[0][b.src_idx[0]] - b.positions[0][b.dst_idx[0]]
    d = d + np.einsum("ed,edk->ek", b.cell_shifts[0], b.cells[0][b.batch_segments[0][b.dst_idx[0]]])
    r = np.linalg.norm(d, axis=1)[e]
    assert r.max() < CUTOFF and r.min() > 2.5
    assert e.sum() == sum(len(neighbor_list(argon.positions[i], CUTOFF, argon.cells[i], argon.pbc[i]).dst) for i in (5, 2, 0))
    # with these cells (~16–20 Å, cutoff 6 Å) an atom meets each other atom at most once,
    # so the image pair count equals ASE's
    from ase.neighborlist import neighbor_list as ase_nl

    assert len(ase_nl("i", argon.to_atoms()[0], CUTOFF)) == len(neighbor_list(argon.positions[0], CUTOFF, argon.cells[0], argon.pbc[0]).dst)


# ------------------------------------------------------------------ trainer
def _config(model: ModelConfig, **training) -> TrainConfig:
    opts = dict(steps=6, graphs_per_batch=2, learning_rate=3e-3, final_learning_rate=1e-3, eval_every=3,
                checkpoint_every=3, stress_weight=1e4, energy_weight=0.01, forces_weight=0.99, ema_decay=0.5)
    return TrainConfig("tiny-argon", ARGON / "argon_lj.extxyz", (4, 2, 0), 0, model, TrainingOptions(**{**opts, **training}))


TINY = ModelConfig(num_features=8, num_iterations=1, cutoff=CUTOFF, mp_max_degree=0, num_basis_functions=8,
                   radial_basis="basic_gaussian", output_is_zero_at_init=False)


def test_trainer_refusals_come_before_any_compile(argon, frames, tmp_path):
    lr = TINY.replace(long_range=EFAConfig(iterations=(0,), lebedev_num=50, max_frequency=1.0, max_length=20.0))
    with pytest.raises(InputError, match="not defined in periodic cells"):
        Trainer(_config(lr), tmp_path, dataset=argon, progress=False)
    mixed = Dataset.from_atoms([*frames, read(SN2, 0)])
    with pytest.raises(InputError, match="mixes"):
        Trainer(_config(TINY), tmp_path, dataset=mixed, progress=False)
    with pytest.raises(InputError, match="stress_weight=10000.0 needs periodic data"):
        Trainer(_config(TINY), tmp_path, dataset=read_dataset(SN2), progress=False)
    unlabelled = dataclasses.replace(argon, stress=[None] + argon.stress[1:])
    with pytest.raises(InputError, match="1 of 6 frames have no stress"):
        Trainer(_config(TINY), tmp_path, dataset=unlabelled, progress=False)
    with pytest.raises(ValueError, match="stress_weight must be >= 0"):
        TrainingOptions(stress_weight=-1.0)


def test_periodic_envelope(argon):
    env = Envelope.from_dataset(argon, CUTOFF)
    assert env.periodic
    dens = [len(z) * AR_MASS_G / abs(np.linalg.det(c)) * 1e24 for z, c in zip(argon.numbers, argon.cells)]
    np.testing.assert_allclose(env.density_g_cm3, [min(dens), max(dens)], rtol=1e-4)
    # image pairs: the smallest distance in these frames, as ASE finds it
    from ase.neighborlist import neighbor_list as ase_nl

    dmin = min(ase_nl("d", a, CUTOFF).min() for a in argon.to_atoms())
    assert env.min_distance["Ar-Ar"] == pytest.approx(dmin, abs=1e-4)
    assert Envelope.from_dict(env.to_dict()) == env
    a = argon.to_atoms()[0]
    pairs = neighbor_list(a.positions, CUTOFF, a.cell[:], a.pbc)
    assert env.check_structure(a.numbers, a.positions, pairs, a.cell[:]) == []
    big = a.repeat((2, 1, 1))  # a larger cell of the same liquid: in the domain of a local model
    assert env.check_structure(big.numbers, big.positions, neighbor_list(big.positions, CUTOFF, big.cell[:], big.pbc),
                               big.cell[:]) == []
    squeezed = a.copy()
    squeezed.set_cell(a.cell[:] * 0.8, scale_atoms=True)  # density × 1.95
    keys = {k for k, _ in env.check_structure(squeezed.numbers, squeezed.positions, neighbor_list(
        squeezed.positions, CUTOFF, squeezed.cell[:], squeezed.pbc), squeezed.cell[:])}
    assert {"density", "cell_height", "pair:Ar-Ar"} <= keys
    assert ("cell", "a non-periodic structure; the model was trained on periodic cells only") in \
        env.check_structure(a.numbers, a.positions)
    assert "periodic" not in Envelope.from_dataset(read_dataset(SN2), 4.0).to_dict()


@pytest.mark.slow
def test_tiny_periodic_training_lowers_the_loss_and_its_stress_term_is_the_strain_derivative(argon, tmp_path):
    import jax
    import jax.numpy as jnp

    from efa_calc.checkpoint import load_checkpoint

    tr = Trainer(_config(TINY, steps=12, eval_every=12, checkpoint_every=12), tmp_path, dataset=argon, progress=False)
    state = tr.run()
    hist = state["history"][-1]
    first = tr.evaluate(tr._fresh_state()["params"], tr.train_sampler)
    last = tr.evaluate(state["params"], tr.train_sampler)
    o = tr.opts

    def loss(m):  # the training loss on the whole training split
        return (o.energy_weight * m["energy_rmse_eV"] ** 2 + o.forces_weight * m["forces_rmse_eV_A"] ** 2
                + o.stress_weight * m["stress_rmse_eV_A3"] ** 2)

    assert loss(last) < 0.8 * loss(first)
    assert "valid_stress_mae_eV_A3" in hist and "train_mse_stress" in hist
    tr.finish(state)
    ck = load_checkpoint(tmp_path / "best")
    assert ck.periodic and ck.provenance["data"]["periodic"] and ck.envelope.periodic
    # the loss's stress term, Σ (σ − σ_LAMMPS)², evaluated by the trainer's own jitted totals in
    # float64 (float32 loses ~1e-3 of it to the virial's cancellations), against a central
    # finite difference of the energy under a symmetric strain of cell and positions
    with jax.enable_x64(True):
        to64 = (lambda x: np.asarray(x, np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating) else x)
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), state["params"])
        tb = jax.tree_util.tree_map(to64, tr.train_sampler.make([0, 1]))
        t = np.asarray(tr._eval_totals(params, tr._put(tb)), np.float64)
        from efa_calc.graphs.padding import pad_graphs
        from efa_calc.nn.energy_model import energy_and_forces

        sq, h = 0.0, 1e-5
        ds = tr.train_sampler.ds
        for i in (0, 1):
            fd = np.zeros((3, 3))
            for a in range(3):
                for b in range(3):
                    e = []
                    for sign in (1, -1):
                        eps = np.zeros((3, 3))
                        eps[a, b] += sign * h / 2
                        eps[b, a] += sign * h / 2
                        r, c = ds.positions[i] @ (np.eye(3) + eps), ds.cells[i] @ (np.eye(3) + eps)
                        p = neighbor_list(r, CUTOFF, c, ds.pbc[i])
                        bt = pad_graphs([ds.numbers[i]], [r], [p[:2]], tr.slots, len(p.dst), 1, np.float64, [p.shifts], [c])
                        e.append(float(energy_and_forces(params, TINY, jax.tree_util.tree_map(jnp.asarray, bt))[0][0]))
                    fd[a, b] = (e[0] - e[1]) / (2 * h) / abs(np.linalg.det(ds.cells[i]))
            sq += np.sum((fd - ds.stress[i]) ** 2)
        assert t[7] == 18
        assert float(t[6]) == pytest.approx(sq, rel=1e-5), (float(t[6]), sq)


def test_extra_data_paths_are_appended_before_the_split(frames, tmp_path):
    """``[data] extra_paths``: further files join the main one (in order) with cells and stress."""
    from efa_calc.train.config import load_train_config
    from efa_calc.train.trainer import _read_data

    write(tmp_path / "main.extxyz", frames[:4])
    write(tmp_path / "more.extxyz", frames[4:])
    (tmp_path / "cfg.toml").write_text('[data]\npath = "main.extxyz"\nextra_paths = ["more.extxyz"]\nsplit = [4, 2, 0]\n'
                                       '[model]\nnum_features = 8\nnum_iterations = 1\ncutoff = 6.0\n[training]\nsteps = 1\n')
    cfg = load_train_config(tmp_path / "cfg.toml")
    assert cfg.extra_data_paths == ((tmp_path / "more.extxyz").resolve(),)
    ds = _read_data(cfg)
    ref = Dataset.from_atoms(frames)
    assert len(ds) == 6 and ds.is_periodic and ds.has_stress
    np.testing.assert_array_equal(ds.energy, ref.energy)
    for k in range(6):
        np.testing.assert_allclose(ds.stress[k], ref.stress[k], rtol=0, atol=1e-15)
        np.testing.assert_allclose(ds.cells[k], ref.cells[k], rtol=0, atol=0)
