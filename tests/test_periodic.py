"""Periodic cells for the local model (float64): neighbour lists with images, stress as the
strain derivative, and the invariances a periodic energy must have."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from ase.stress import full_3x3_to_voigt_6_stress

from efa_calc import EFACalculator, InputError
from efa_calc.checkpoint import Checkpoint
from efa_calc.graphs.neighbors import periodic_pairs
from efa_calc.graphs.padding import pad_graphs
from efa_calc.nn.config import ModelConfig
from efa_calc.nn.energy_model import init_params
from periodic_checks import assert_joint_rotation_changes_nothing, assert_wrapping_changes_nothing

CUTOFF = 4.0


@pytest.fixture(scope="module")
def model() -> Checkpoint:
    """A random-parameter local model of Si and O, marked periodic."""
    import jax

    cfg = ModelConfig(num_features=8, num_iterations=2, cutoff=CUTOFF, mp_max_degree=2, num_basis_functions=8,
                      output_is_zero_at_init=False)
    z = np.array([14, 8, 8, 14])
    pos = np.array([[0.0, 0, 0], [1.6, 0, 0], [0, 1.6, 0], [1.6, 1.6, 0.3]])
    dst, src = np.nonzero(~np.eye(4, dtype=bool))
    batch = pad_graphs([z], [pos], [(dst, src)], 8, 16, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(3), batch))
    bias = params["params"]["element_bias"].copy()
    bias[14], bias[8] = -1.3, -0.7  # element-dependent, so that a lost or doubled atom shows
    params["params"]["element_bias"] = bias
    return Checkpoint(cfg, params, ["Si", "O"], name="random-periodic", periodic=True)


def crystal(seed: int = 0, repeat=(1, 1, 1)) -> Atoms:
    """A rattled triclinic Si/O cell, smaller than twice the cutoff (several images per pair)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.3, 0.0, 0.0], [0.9, 4.1, 0.0], [-0.6, 0.7, 4.6]])
    frac = rng.uniform(0, 1, (6, 3))
    atoms = Atoms([14, 14, 8, 8, 8, 8], cell=cell, pbc=True, scaled_positions=frac)
    while np.min(_all_distances(atoms)) < 1.4:
        atoms.set_scaled_positions(rng.uniform(0, 1, (6, 3)))
    return atoms.repeat(repeat)


def _all_distances(atoms: Atoms) -> np.ndarray:
    _, _, d = ase_neighbor_list("ijd", atoms, 6.0)
    return d


def evaluate(model, atoms: Atoms, dtype="float64"):
    atoms = atoms.copy()
    atoms.calc = EFACalculator(model, dtype=dtype, guard="off")
    stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (True, False, False)])
def test_pairs_equal_ase_for_small_triclinic_cells_and_atoms_outside(pbc):
    atoms = crystal(1)
    atoms.pbc = pbc
    atoms.positions[0] += atoms.cell[0] * 1.7 - atoms.cell[2] * 0.4  # outside the cell
    for cutoff in (3.0, 6.5):
        got = periodic_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        i, j, s = ase_neighbor_list("ijS", atoms, cutoff)
        order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
        assert np.array_equal(got.dst, i[order]) and np.array_equal(got.src, j[order])
        assert np.array_equal(got.shifts, s[order])
    assert np.any(np.abs(got.shifts) >= 2) == pbc[0]  # 6.5 Å reaches second images along a (4.3 Å)


def test_supercell_gives_8x_energy_same_forces_same_stress(model):
    atoms = crystal(2)
    e1, f1, s1 = evaluate(model, atoms)
    e8, f8, s8 = evaluate(model, atoms.repeat((2, 2, 2)))
    assert abs(e8 - 8 * e1) <= 1e-10 * abs(8 * e1)
    np.testing.assert_allclose(f8, np.tile(f1, (8, 1)), rtol=0, atol=1e-10 * np.abs(f1).max())
    np.testing.assert_allclose(s8, s1, rtol=0, atol=1e-10 * np.abs(s1).max())
    assert np.abs(s1).max() > 1e-4  # a stress worth comparing


def test_wrapping_and_joint_rotation_change_nothing(model):
    atoms = crystal(3)
    assert_wrapping_changes_nothing(lambda a: evaluate(model, a), atoms)
    assert_joint_rotation_changes_nothing(lambda a: evaluate(model, a), atoms)


def test_stress_is_the_strain_derivative_of_the_energy(model):
    atoms = crystal(4)
    _, _, stress = evaluate(model, atoms)
    volume = atoms.get_volume()
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h
            plus, minus = atoms.copy(), atoms.copy()
            plus.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            minus.set_cell(atoms.cell.array @ (np.eye(3) - eps), scale_atoms=True)
            fd[a, b] = (evaluate(model, plus)[0] - evaluate(model, minus)[0]) / (2 * h) / volume
    np.testing.assert_allclose(stress, fd, atol=1e-6)
    np.testing.assert_allclose(stress, stress.T, atol=1e-12)


def test_molecule_in_a_large_box_equals_the_isolated_molecule(model):
    atoms = crystal(5)
    molecule = Atoms(atoms.numbers, positions=atoms.positions)  # no images: one finite cluster
    boxed = molecule.copy()
    boxed.set_cell(np.diag([30.0, 31.0, 29.0]))
    boxed.pbc = True
    e_iso, f_iso, _ = evaluate(model, molecule)
    e_box, f_box, s_box = evaluate(model, boxed)
    assert abs(e_box - e_iso) < 1e-10 * abs(e_iso)
    np.testing.assert_allclose(f_box, f_iso, atol=1e-11)
    # no image interacts: the stress is −W/V with the molecule's virial W = Σ_i r_i ⊗ F_i
    virial = (molecule.positions.T @ f_iso + f_iso.T @ molecule.positions) / 2
    np.testing.assert_allclose(s_box, -virial / boxed.get_volume(), atol=1e-10)


def test_slab_and_float32_run(model):
    slab = crystal(6, repeat=(2, 2, 1))
    slab.pbc = (True, True, False)
    slab.cell[2] = [0.0, 0.0, 25.0]
    e64, f64, s64 = evaluate(model, slab)
    e32, f32, _ = evaluate(model, slab, "float32")
    assert abs(e32 - e64) < 1e-4 * abs(e64) and np.abs(f32 - f64).max() < 1e-3
    assert np.isfinite(s64).all()


def test_bad_periodic_input_is_refused_before_xla(model):
    good = crystal(7)
    cases = {
        "no cell": lambda a: a.set_cell(np.zeros((3, 3))),
        "singular": lambda a: a.set_cell([[4, 0, 0], [0, 4, 0], [0, 0, 0]]),
        "left-handed": lambda a: a.set_cell(-a.cell.array, scale_atoms=True),
        "not finite": lambda a: a.cell.__setitem__((0, 0), np.nan),
    }
    messages = {"no cell": "no cell", "singular": "singular cell", "left-handed": "left-handed",
                "not finite": "finite 3×3"}
    for name, spoil in cases.items():
        atoms = good.copy()
        spoil(atoms)
        atoms.calc = EFACalculator(model, dtype="float64")
        with pytest.raises(InputError, match=messages[name]):
            atoms.get_potential_energy()
    dense = good.copy()
    dense.set_cell(good.cell.array * 0.22, scale_atoms=True)  # 1.4 Å -> 0.31 Å, ~1900 neighbours
    dense.positions[1] = dense.positions[0] + [0.1, 0.1, 0.0]
    dense.calc = EFACalculator(model, dtype="float64")
    with pytest.raises(InputError, match="closer than the physical minimum"):
        dense.get_potential_energy()
    with pytest.raises(InputError, match="more than 2000 neighbours per atom"):  # before vesin allocates them
        periodic_pairs(good.positions, good.cell.array, good.pbc, 20.0)
    molecular = good.copy()
    molecular.calc = EFACalculator("cumulene-local")
    molecular.numbers[:] = 6
    with pytest.raises(InputError, match="trained on isolated molecules only"):
        molecular.get_potential_energy()


def test_sharded_evaluation_refuses_periodic_structures(model):
    atoms = crystal(8)
    atoms.calc = EFACalculator(model, dtype="float64", devices=1)
    with pytest.raises(InputError, match="devices= .* isolated structures only"):
        atoms.get_potential_energy()


def test_evaluate_batch_of_periodic_frames_equals_single_calls(model):
    frames = [crystal(9), crystal(10, repeat=(2, 1, 1))]
    calc = EFACalculator(model, dtype="float64", guard="off")
    batch = calc.evaluate_batch(frames, batch_size=4)
    for atoms, res in zip(frames, batch):
        e, f, s = evaluate(model, atoms)
        assert abs(res["energy"] - e) < 1e-10 * abs(e)
        np.testing.assert_allclose(res["forces"], f, atol=1e-10)
        np.testing.assert_allclose(res["stress"], full_3x3_to_voigt_6_stress(s), atol=1e-12)


def test_per_atom_stresses_sum_to_the_stress_and_repeat_in_a_supercell(model):
    atoms = crystal(6)
    atoms.calc = EFACalculator(model, dtype="float64", guard="off")
    stresses = atoms.get_stresses()  # (n, 6) Voigt, eV/Å³
    np.testing.assert_allclose(stresses.sum(axis=0), atoms.get_stress(), rtol=0, atol=1e-12)
    big = crystal(6, repeat=(2, 1, 2))
    big.calc = EFACalculator(model, dtype="float64", guard="off")
    # the supercell has 4× the volume: every replica's per-atom stress is a quarter of its original's
    np.testing.assert_allclose(big.get_stresses(), np.tile(stresses / 4, (4, 1)), rtol=0, atol=1e-12)


def test_per_atom_stresses_of_a_dimer_are_half_its_pair_virial(model):
    atoms = Atoms([14, 8], positions=[[5.0, 5.0, 5.0], [6.2, 5.9, 4.6]], cell=np.eye(3) * 20.0, pbc=True)
    atoms.calc = EFACalculator(model, dtype="float64", guard="off")
    r = atoms.positions[1] - atoms.positions[0]
    w = np.outer(r, -atoms.get_forces()[1])  # r ⊗ ∂E/∂r with r = r_O − r_Si
    expected = full_3x3_to_voigt_6_stress(0.5 * (w + w.T) / 2 / atoms.get_volume())
    np.testing.assert_allclose(atoms.get_stresses(), [expected, expected], rtol=1e-10, atol=1e-14)
