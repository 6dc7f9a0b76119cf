"""Periodic EFA (float64, random parameters): the lattice sum of the damped EFA kernel on the
reciprocal lattice — periodicity, supercells, rotations, stress, agreement with the direct
real-space image sum, continuity when G vectors enter the set, the open-space limit, and the
errors for input it cannot take."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from ase import Atoms

from efa_calc import EFACalculator, InputError
from efa_calc.checkpoint import Checkpoint
from efa_calc.graphs.padding import pad_graphs
from efa_calc.nn.config import EFAConfig, ModelConfig
from efa_calc.nn.energy_model import init_params
from efa_calc.nn.long_range import reciprocal as rec
from periodic_checks import assert_joint_rotation_changes_nothing

LAMBDA = 1.5  # Å


@pytest.fixture(autouse=True)
def x64():
    """The pure functions run in float64 (the calculator sets its own precision)."""
    with jax.enable_x64(True):
        yield


def efa_config(**kw) -> EFAConfig:
    base = dict(iterations=(0, 1), lebedev_num=50, max_frequency=np.pi, max_length=6.0, qk_features=8, v_features=8,
                periodic_smoothing=LAMBDA)
    return EFAConfig(**{**base, **kw})


def make_model(lr: EFAConfig, periodic: bool = True) -> Checkpoint:
    cfg = ModelConfig(num_features=8, num_iterations=2, cutoff=3.0, mp_max_degree=1, num_basis_functions=6,
                      output_is_zero_at_init=False, long_range=lr)
    z = np.array([11, 17, 11, 17])
    pos = np.array([[0.0, 0, 0], [2.6, 0, 0], [0, 2.6, 0], [2.6, 2.6, 0.3]])
    dst, src = np.nonzero(~np.eye(4, dtype=bool))
    batch = pad_graphs([z], [pos], [(dst, src)], 8, 16, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(7), batch))
    bias = params["params"]["element_bias"].copy()
    bias[11], bias[17] = -1.1, -0.6
    params["params"]["element_bias"] = bias
    return Checkpoint(cfg, params, ["Na", "Cl"], name="random-periodic-efa", periodic=periodic)


@pytest.fixture(scope="module")
def model() -> Checkpoint:
    return make_model(efa_config())


def crystal(seed: int = 0) -> Atoms:
    """A rattled triclinic Na/Cl cell of 6 ions (~81 Å³)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.3, 0.0, 0.0], [0.9, 4.1, 0.0], [-0.6, 0.7, 4.6]])
    atoms = Atoms([11, 11, 11, 17, 17, 17], cell=cell, pbc=True, scaled_positions=rng.uniform(0, 1, (6, 3)))
    while _min_distance(atoms) < 1.6:
        atoms.set_scaled_positions(rng.uniform(0, 1, (6, 3)))
    return atoms


def _min_distance(atoms: Atoms) -> float:
    from ase.neighborlist import neighbor_list

    return float(np.min(neighbor_list("d", atoms, 5.0)))


def evaluate(model, atoms: Atoms):
    atoms = atoms.copy()
    atoms.calc = EFACalculator(model, dtype="float64", guard="off")
    stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def test_kernel_transform_is_the_fourier_transform_of_the_damped_kernel():
    """f̂(q) = 4π ∫ r² f(r) j₀(qr) dr by quadrature, including the q → 0 and ω = 0 limits."""
    r = np.linspace(0.0, 12 * LAMBDA, 20001)
    omega = np.array([0.0, 0.4, 2.0])
    f = np.asarray(rec.damped_kernel(r, omega, LAMBDA))  # (R, C)
    for q in (0.0, 1e-7, 0.3, 1.7, 4.0):
        integrand = 4 * np.pi * r[:, None] ** 2 * f * np.sinc(q * r / np.pi)[:, None]
        want = np.trapezoid(integrand, r, axis=0)
        got = np.asarray(rec.kernel_transform(np.array(q), omega, LAMBDA))
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())


def test_reciprocal_sum_equals_direct_image_sum():
    rng = np.random.default_rng(1)
    atoms = crystal(1)
    cell, pos = atoms.cell.array, atoms.positions
    n, pd, f = len(atoms), 4, 8
    q, k, v = rng.normal(size=(n, pd, f)), rng.normal(size=(n, pd, f)), rng.normal(size=(n, 5))
    omega = np.linspace(0.0, np.pi / 6.0, f // 2)
    q_on, q_max = rec.reciprocal_cutoff(omega.max(), LAMBDA)
    idx = rec.miller_indices(cell, q_max)
    # padded with junk entries that the mask must switch off
    idx_p = np.concatenate([idx, np.ones((7, 3), np.int32)])[None]
    mask = (np.arange(len(idx) + 7) < len(idx))[None]
    y = np.asarray(rec.reciprocal_attention(q, k, v, pos, cell[None], idx_p, mask, omega, LAMBDA, q_on, q_max, 1, n))
    yd = np.asarray(rec.direct_image_attention(q, k, v, pos, cell, omega, LAMBDA, images=5))
    assert np.max(np.abs(y - yd)) <= 1e-8 * np.max(np.abs(yd))
    # the G = 0 term alone is far off: the sum over G matters
    assert np.max(np.abs(yd)) > 0.1


def test_miller_indices_are_the_half_ball():
    cell = crystal(0).cell.array
    q_max = 3.0
    half = rec.miller_indices(cell, q_max)
    assert np.array_equal(half[0], [0, 0, 0])
    b = 2 * np.pi * np.linalg.inv(cell).T
    m = np.stack(np.meshgrid(*[np.arange(-12, 13)] * 3, indexing="ij"), -1).reshape(-1, 3)
    full = m[np.linalg.norm(m @ b, axis=1) < q_max]
    assert 2 * len(half) - 1 == len(full)  # ±n folded, n = 0 once
    both = {tuple(x) for x in half} | {tuple(-x) for x in half}
    assert both == {tuple(x) for x in full}


def test_wrapping_an_atom_changes_nothing(model):
    atoms = crystal(3)
    e0, f0, s0 = evaluate(model, atoms)
    wrapped = atoms.copy()
    wrapped.positions[2] += 2 * atoms.cell[0] - atoms.cell[1] + 3 * atoms.cell[2]
    e1, f1, s1 = evaluate(model, wrapped)
    assert abs(e1 - e0) <= 1e-12 * abs(e0)
    np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-10 * np.abs(f0).max())
    np.testing.assert_allclose(s1, s0, rtol=0, atol=1e-10 * np.abs(s0).max())


def test_supercell_gives_8x_energy_same_forces_same_stress(model):
    atoms = crystal(2)
    e1, f1, s1 = evaluate(model, atoms)
    e8, f8, s8 = evaluate(model, atoms.repeat((2, 2, 2)))
    assert abs(e8 - 8 * e1) <= 1e-10 * abs(8 * e1)
    np.testing.assert_allclose(f8, np.tile(f1, (8, 1)), rtol=0, atol=1e-10 * np.abs(f1).max())
    np.testing.assert_allclose(s8, s1, rtol=0, atol=1e-10 * np.abs(s1).max())
    assert np.abs(s1).max() > 1e-4


def test_joint_rotation_of_cell_and_positions_changes_nothing(model):
    assert_joint_rotation_changes_nothing(lambda a: evaluate(model, a), crystal(4), angle=0.9)


def test_stress_is_the_strain_derivative_of_the_energy(model):
    atoms = crystal(5)
    _, _, stress = evaluate(model, atoms)
    volume, h = atoms.get_volume(), 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h
            es = []
            for sign in (1, -1):
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                es.append(evaluate(model, strained)[0])
            fd[a, b] = fd[b, a] = (es[0] - es[1]) / (2 * h * volume)
    np.testing.assert_allclose(stress, fd, rtol=0, atol=1e-6)
    assert np.abs(stress).max() > 1e-4


def entering_path(atoms: Atoms, lr: EFAConfig, steps: int = 21, h: float = 1e-6):
    """Isotropic scale factors s around s₀ where a reciprocal vector crosses q_max (|G| ∝ 1/s)."""
    q_max = lr.reciprocal_cutoff[1]
    b = 2 * np.pi * np.linalg.inv(atoms.cell.array).T
    m = np.stack(np.meshgrid(*[np.arange(-6, 7)] * 3, indexing="ij"), -1).reshape(-1, 3)
    g = np.linalg.norm(m @ b, axis=1)
    s0 = g[np.argmin(np.abs(g - 1.02 * q_max))] / q_max  # a vector just outside the set at s = 1
    return s0 + h * (np.arange(steps) - steps // 2)


@pytest.mark.slow
def test_energy_is_continuous_where_reciprocal_vectors_enter_the_set():
    # a coarse tolerance puts the switch where the weights are still ~1e-3: a hard cutoff would jump
    lr = efa_config(reciprocal_tolerance=1e-3)
    model = make_model(lr)
    atoms = crystal(6)
    energies, counts = [], []
    for s in entering_path(atoms, lr):
        a = atoms.copy()
        a.set_cell(atoms.cell.array * s, scale_atoms=True)
        energies.append(evaluate(model, a)[0])
        counts.append(len(rec.miller_indices(a.cell.array, lr.reciprocal_cutoff[1])))
    e = np.array(energies)
    assert counts[0] != counts[-1]  # vectors do enter the set along the path
    second = np.abs(e[2:] - 2 * e[1:-1] + e[:-2])
    assert second.max() <= 1e-10 * np.abs(e).max()


@pytest.mark.slow
def test_open_space_limit_of_a_growing_box(model):
    mol = Atoms([11, 17, 11, 17], positions=[[0, 0, 0], [2.5, 0.2, 0], [0.3, 2.6, 0.1], [2.4, 2.2, 1.9]])
    e_mol = evaluate(model, mol)[0]
    errors = []
    for side in (7.0, 9.0, 11.0, 13.0):
        box = mol.copy()
        box.cell, box.pbc = np.eye(3) * side, True
        box.center()
        errors.append(abs(evaluate(model, box)[0] - e_mol))
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[0] > 1e3 * errors[-1] and errors[-1] < 1e-8 * abs(e_mol)


def test_molecular_efa_config_is_unchanged():
    lr = efa_config(periodic_smoothing=None)
    assert not lr.periodic and lr.invariance_length == 6.0
    assert not {"periodic_smoothing", "reciprocal_tolerance", "max_reciprocal_vectors"} & set(lr.to_dict())
    assert efa_config().periodic and efa_config().to_dict()["periodic_smoothing"] == LAMBDA


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.01, float("nan"), "2"])
def test_bad_smoothing_is_refused(bad):
    with pytest.raises(ValueError, match="periodic_smoothing"):
        efa_config(periodic_smoothing=bad)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_budget_is_refused(bad):
    with pytest.raises(ValueError, match="max_reciprocal_vectors"):
        efa_config(max_reciprocal_vectors=bad)


def test_cell_beyond_the_budget_is_refused_before_xla():
    model = make_model(efa_config(max_reciprocal_vectors=100))
    atoms = crystal(0)
    calc = EFACalculator(model, dtype="float64", guard="off")
    atoms.calc = calc
    with pytest.raises(InputError, match="max_reciprocal_vectors = 100"):
        atoms.get_potential_energy()
    assert calc.potentials[0].fn_stress._cache_size() == 0  # nothing was compiled


def test_periodic_structure_for_a_molecular_efa_checkpoint_is_refused():
    molecular = make_model(efa_config(periodic_smoothing=None), periodic=True)
    assert not molecular.evaluates_cells
    atoms = crystal(0)
    atoms.calc = EFACalculator(molecular, dtype="float64", guard="off")
    with pytest.raises(InputError, match="periodic"):
        atoms.get_potential_energy()


def test_partial_pbc_is_refused(model):
    atoms = crystal(0)
    atoms.pbc = (True, True, False)
    atoms.calc = EFACalculator(model, dtype="float64", guard="off")
    with pytest.raises(InputError, match="all three directions"):
        atoms.get_potential_energy()


def test_bucket_grows_with_a_logged_message(model, caplog):
    calc = EFACalculator(model, dtype="float64", guard="off")
    atoms = crystal(0)
    atoms.calc = calc
    atoms.get_potential_energy()
    first = calc.potentials[0].reciprocal_slots.slots
    big = atoms.repeat((2, 1, 1))
    big.calc = calc
    with caplog.at_level("INFO", logger="efa_calc"):
        big.get_potential_energy()
    assert calc.potentials[0].reciprocal_slots.slots > first
    assert "reciprocal bucket" in caplog.text


@pytest.mark.slow
def test_training_batches_carry_the_reciprocal_sets(model):
    """BatchSampler batches of periodic data for a periodic-EFA model give the calculator's energies."""
    from efa_calc.checkpoint import EnergyShift
    from efa_calc.data.batches import BatchSampler
    from efa_calc.data.dataset import Dataset
    from efa_calc.nn.energy_model import energy_forces_stress

    from ase.calculators.singlepoint import SinglePointCalculator

    frames = [crystal(s) for s in (0, 1)]
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=0.0, forces=np.zeros((len(a), 3)))
    ds = Dataset.from_atoms(frames)
    sampler = BatchSampler(ds, model.config.cutoff, EnergyShift(), 2, model_config=model.config)
    batch = sampler.unsharded([0, 1])
    assert batch.reciprocal_indices is not None and batch.reciprocal_mask.sum(axis=1).min() > 10
    b64 = batch.replace(positions=np.asarray(batch.positions, np.float64),
                        cells=np.asarray(batch.cells, np.float64), cell_shifts=np.asarray(batch.cell_shifts, np.float64))
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), model.params)
    e, *_ = energy_forces_stress(params, model.config, b64)
    want = [evaluate(model, a)[0] for a in frames]
    np.testing.assert_allclose(np.asarray(e), want, rtol=1e-6)


def test_periodic_efa_dataclass_replace_keeps_validation():
    with pytest.raises(ValueError, match="reciprocal_tolerance"):
        dataclasses.replace(efa_config(), reciprocal_tolerance=0.5)
