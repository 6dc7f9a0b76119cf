"""Long-range blocks in periodic cells (float64): all_to_all with minimum-image distances and
the latent_ewald block (jax-pme), through the calculator with random-parameter periodic
checkpoints, and latent_ewald's Coulomb sums of fixed charges against independent numbers
(rock-salt and simple-cubic Madelung constants, a numpy erfc image sum)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list
from scipy.special import erf, erfc
from scipy.spatial.transform import Rotation

from efa_calc import EFACalculator
from efa_calc.checkpoint import Checkpoint
from efa_calc.graphs.padding import pad_graphs
from efa_calc.nn.config import ModelConfig
from efa_calc.nn.energy_model import energy_forces_stress, init_params
from efa_calc.nn.long_range import BLOCKS, with_reciprocal_grid
from efa_calc.nn.long_range.latent_ewald import COULOMB_EV_A, LatentEwaldConfig, latent_coulomb_energies
from periodic_checks import assert_joint_rotation_changes_nothing, assert_wrapping_changes_nothing

MADELUNG_ROCKSALT = 1.747564594633  # per ion pair, nearest-neighbour distance
MADELUNG_SC = 2.837297479480  # a point charge in a simple cubic lattice with a neutralising background
A2A = {"kind": "all_to_all", "iterations": [0, 1], "max_degree": 1, "num_heads": 2, "qk_features": 8, "v_features": 8}
LES = {"kind": "latent_ewald", "iterations": [0, 1], "num_charges": 2, "smearing": 1.0, "accuracy": 1e-12}
PME = {**LES, "method": "pme", "mesh_spacing": 0.4}


def _checkpoint(long_range: dict, seed: int = 0) -> Checkpoint:
    cfg = ModelConfig.from_dict({"num_features": 8, "num_iterations": 2, "cutoff": 3.5, "mp_max_degree": 2,
                                 "num_basis_functions": 8, "output_is_zero_at_init": False, "long_range": long_range})
    z = np.array([11, 17, 11, 17])
    pos = np.array([[0.0, 0, 0], [2.8, 0, 0], [0, 2.8, 0], [2.8, 2.8, 0.3]])
    dst, src = np.nonzero(~np.eye(4, dtype=bool))
    batch = pad_graphs([z], [pos], [(dst, src)], 8, 16, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(seed), batch))
    bias = params["params"]["element_bias"].copy()
    bias[11], bias[17] = -1.3, -0.7
    params["params"]["element_bias"] = bias
    return Checkpoint(cfg, params, ["Na", "Cl"], name="random-periodic-block", periodic=True)


@pytest.fixture(scope="module", params=["all_to_all", "latent_ewald", pytest.param("latent_ewald_pme", marks=pytest.mark.slow)])
def model(request):
    return request.param, _checkpoint({"all_to_all": A2A, "latent_ewald": LES, "latent_ewald_pme": PME}[request.param])


def crystal(seed: int = 0) -> Atoms:
    """A rattled triclinic Na/Cl cell of 8 ions (no pair closer than 2 Å)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[5.6, 0.0, 0.0], [0.9, 5.4, 0.0], [-0.6, 0.7, 5.8]])
    atoms = Atoms([11, 17] * 4, cell=cell, pbc=True, scaled_positions=rng.uniform(0, 1, (8, 3)))
    while np.min(ase_neighbor_list("d", atoms, 6.0)) < 2.0:
        atoms.set_scaled_positions(rng.uniform(0, 1, (8, 3)))
    return atoms


def evaluate(ckpt, atoms: Atoms):
    atoms = atoms.copy()
    atoms.calc = EFACalculator(ckpt, dtype="float64", guard="off")
    stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def test_wrapping_and_joint_rotation_change_nothing(model):
    _, ckpt = model
    atoms = crystal(1)
    assert_wrapping_changes_nothing(lambda a: evaluate(ckpt, a), atoms, energy_rtol=1e-12, stress_atol=1e-12)
    assert_joint_rotation_changes_nothing(lambda a: evaluate(ckpt, a), atoms)


def test_stress_is_the_strain_derivative_of_the_energy(model):
    _, ckpt = model
    atoms = crystal(2)
    _, _, stress = evaluate(ckpt, atoms)
    h, fd = 1e-5, np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h
            plus, minus = atoms.copy(), atoms.copy()
            plus.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            minus.set_cell(atoms.cell.array @ (np.eye(3) - eps), scale_atoms=True)
            fd[a, b] = fd[b, a] = (evaluate(ckpt, plus)[0] - evaluate(ckpt, minus)[0]) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(stress, fd, atol=1e-6)
    assert np.abs(stress).max() > 1e-4  # a stress worth comparing


def test_molecule_in_a_large_box(model):
    """all_to_all: a box more than twice the molecule's extent gives the isolated molecule
    exactly (every minimum image is the direct pair).  latent_ewald: it tends to the
    open-space sum as the box grows (1/L: the latent charges are not neutral)."""
    name, ckpt = model
    if name == "latent_ewald_pme":
        pytest.skip("the box limit is a property of the interaction: checked with Ewald (PME adds its mesh error)")
    molecule = Atoms(crystal(3).numbers, positions=crystal(3).positions)
    e_iso, f_iso, _ = evaluate(ckpt, molecule)
    gaps = []
    for side in ((30.0, 31.0, 29.0),) if name == "all_to_all" else (12.0, 24.0):
        boxed = molecule.copy()
        boxed.set_cell(np.diag(np.broadcast_to(side, 3)))
        boxed.pbc = True
        e_box, f_box, _ = evaluate(ckpt, boxed)
        gaps.append(abs(e_box - e_iso))
    if name == "all_to_all":
        assert gaps[0] < 1e-12 * abs(e_iso)
        np.testing.assert_allclose(f_box, f_iso, atol=1e-11)
    else:
        assert 1.6 < gaps[0] / gaps[1] < 2.4, gaps  # the net-charge Madelung term −ξQ²/2L dominates


def test_supercell(model):
    """latent_ewald (Ewald): 8× energy, equal forces and stress to 1e-10.  all_to_all is
    not supercell-consistent (attention over 8 copies at other distances): only say so."""
    name, ckpt = model
    atoms = crystal(4)
    e1, f1, s1 = evaluate(ckpt, atoms)
    e8, f8, s8 = evaluate(ckpt, atoms.repeat((2, 2, 2)))
    if name == "all_to_all":
        assert abs(e8 - 8 * e1) > 1e-6 * abs(e1)
        return
    tol = 1e-10 if name == "latent_ewald" else 1e-5  # PME: its mesh is not commensurate
    assert abs(e8 - 8 * e1) <= tol * abs(8 * e1), (e8, 8 * e1)
    np.testing.assert_allclose(f8, np.tile(f1, (8, 1)), rtol=0, atol=tol * 10 * np.abs(f1).max())
    np.testing.assert_allclose(s8, s1, rtol=0, atol=tol * 10 * np.abs(s1).max())


def test_latent_ewald_molecule_forces_and_invariance():
    ckpt = _checkpoint(LES)
    rng = np.random.default_rng(5)
    atoms = Atoms([11, 17] * 3, positions=crystal(5).positions[:6])
    e0, f0, _ = evaluate(ckpt, atoms)
    rot = Rotation.random(random_state=rng).as_matrix()
    moved = Atoms(atoms.numbers, positions=atoms.positions @ rot.T + [3.0, -1.0, 7.0])
    e1, f1, _ = evaluate(ckpt, moved)
    assert abs(e1 - e0) < 1e-10 * abs(e0)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-9)
    for i, c in [(0, 0), (4, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, c] += 1e-5
        minus.positions[i, c] -= 1e-5
        fd = -(evaluate(ckpt, plus)[0] - evaluate(ckpt, minus)[0]) / 2e-5
        assert abs(fd - f0[i, c]) < 1e-6 * max(1.0, abs(f0[i, c]))


# ------------------------------------------------------ latent_ewald: fixed charges


def _coulomb(cfg: LatentEwaldConfig, charges, positions, cell=None) -> float:
    """Σ_i ½ q_i φ_i (eV) of one structure, with the static grid the backend would use."""
    n = len(charges)
    with jax.enable_x64(True):
        cells = None if cell is None else jnp.asarray(cell, jnp.float64)[None]
        grid = None if cell is None else cfg.reciprocal_grid(np.asarray(cell)[None])
        e = latent_coulomb_energies(cfg, jnp.asarray(charges, jnp.float64)[:, None], jnp.asarray(positions, jnp.float64),
                                    jnp.zeros(n, jnp.int32), jnp.ones(n, bool), 1, n, cells, grid)
        return float(jnp.sum(e))


@pytest.mark.parametrize("method,settings,tol", [("ewald", {"accuracy": 1e-12}, 1e-11),
                                                 ("pme", {"mesh_spacing": 0.1}, 1e-11),
                                                 ("p3m", {"mesh_spacing": 0.1}, 1e-4)])
def test_rock_salt_madelung_energy(method, settings, tol):
    """±1 charges on rock salt, σ = 0.25 Å ≪ 2.82 Å: the smeared interaction is 1/r to
    erfc(8) ~ 1e-29, so E = −M k_e/r₀ per ion pair, M = 1.747565."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    q = np.where(atoms.numbers == 11, 1.0, -1.0)
    e = _coulomb(LatentEwaldConfig(iterations=(0,), smearing=0.25, method=method, **settings), q, atoms.positions,
                 atoms.cell.array)
    ref = -4 * MADELUNG_ROCKSALT * COULOMB_EV_A / 2.82
    assert abs(e - ref) < tol * abs(ref), (e, ref)


def test_smeared_energy_is_madelung_minus_the_erfc_image_sum():
    """σ = 1 Å on a rattled rock-salt cell: E = E_point − ½ Σ'_{ij,n} q_i q_j erfc(r/√2σ)/r,
    E_point from σ = 0.2 Å (erfc(r/√2σ)/r < 1e-20 at r ≥ 2 Å) and the erfc sum from ase."""
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.rattle(0.15, seed=1)
    q = np.where(atoms.numbers == 11, 1.0, -1.0)
    e_point = _coulomb(LatentEwaldConfig(iterations=(0,), smearing=0.2, accuracy=1e-13), q, atoms.positions,
                       atoms.cell.array)
    e_smeared = _coulomb(LatentEwaldConfig(iterations=(0,), smearing=1.0, accuracy=1e-13), q, atoms.positions,
                         atoms.cell.array)
    i, j, d = ase_neighbor_list("ijd", atoms, 12.0)  # erfc(12/√2)/12 ~ 1e-33
    erfc_sum = 0.5 * COULOMB_EV_A * np.sum(q[i] * q[j] * erfc(d / np.sqrt(2.0)) / d)
    assert abs(e_smeared - (e_point - erfc_sum)) < 1e-10 * abs(e_point)


def test_single_charge_madelung_and_open_space_limit():
    cfg = LatentEwaldConfig(iterations=(0,), smearing=1.0, accuracy=1e-12)
    for side in (10.0, 16.0):  # one charge with a neutralising background: −ξ k_e Q²/(2L)
        e = _coulomb(cfg, [1.5], np.zeros((1, 3)), np.eye(3) * side)
        ref = -MADELUNG_SC * COULOMB_EV_A * 1.5**2 / (2 * side)
        assert abs(e - ref) < 1e-9 * abs(ref), (side, e, ref)
    rng = np.random.default_rng(2)
    pos = rng.uniform(-1.5, 1.5, (5, 3))
    q = rng.normal(size=5)
    q -= q.mean()  # neutral: the box correction falls like 1/L³ (dipole)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(5)
    open_space = 0.5 * COULOMB_EV_A * np.sum((q[:, None] * q[None] * erf(d / np.sqrt(2.0)) / d)[~np.eye(5, dtype=bool)])
    assert abs(_coulomb(cfg, q, pos) - open_space) < 1e-12 * abs(open_space)
    gaps = [abs(_coulomb(cfg, q, pos, np.eye(3) * side) - open_space) for side in (12.0, 24.0)]
    assert 5.0 < gaps[0] / gaps[1] < 11.0, gaps  # ~8 = 2³
    assert gaps[1] < 2e-3 * abs(open_space)


# ------------------------------------------------------------ registry, bad input


def test_registry_roundtrip_and_bad_input(tmp_path):
    from efa_calc.checkpoint import load_checkpoint, save_checkpoint

    assert BLOCKS["latent_ewald"].energy and not BLOCKS["all_to_all"].energy
    ckpt = _checkpoint(LES)
    assert ckpt.evaluates_cells and ModelConfig.from_dict(ckpt.config.to_dict()) == ckpt.config
    assert load_checkpoint(save_checkpoint(ckpt, tmp_path / "les")).config == ckpt.config
    bad = {"num_charges": 0, "smearing": -1.0, "method": "pppm", "accuracy": 0.5, "mesh_spacing": 0.0,
           "interpolation_nodes": 3}
    for key, value in bad.items():
        extra = {"method": "pme"} if key == "interpolation_nodes" else {}
        with pytest.raises(ValueError, match=f"latent_ewald {key}="):
            LatentEwaldConfig(iterations=(0,), **extra, **{key: value})
    with pytest.raises(ValueError, match="more than 134217728 points"):
        LatentEwaldConfig(iterations=(0,), smearing=0.1).reciprocal_grid(np.eye(3)[None] * 60.0)
    # without the static grid (a batch not built by the backend): a clear error at trace time
    from efa_calc.graphs.neighbors import neighbor_list

    atoms = crystal(6)
    p = neighbor_list(atoms.positions, ckpt.config.cutoff, atoms.cell.array, atoms.pbc)
    b = pad_graphs([atoms.numbers], [atoms.positions], [(p.dst, p.src)], 8, 1024, dtype=np.float32,
                   shifts=[p.shifts], cells=[atoms.cell.array])
    with pytest.raises(ValueError, match="needs the batch's static reciprocal_grid"):
        jax.jit(lambda p, batch: energy_forces_stress(p, ckpt.config, batch)).lower(ckpt.params, b)
    molecular = Checkpoint(ckpt.config, ckpt.params, ckpt.species, name="les-molecular")  # periodic=False
    atoms.calc = EFACalculator(molecular, dtype="float64")
    with pytest.raises(Exception, match="trained on isolated molecules only"):
        atoms.get_potential_energy()


@pytest.mark.slow
def test_segment_layout_equals_slot_layout_for_periodic_batches():
    """Two cells in one batch: arbitrary segments (nodes_per_graph=None) give the slot
    layout's numbers for both blocks (cells per row, charges of the other cell zeroed)."""
    from efa_calc.graphs.neighbors import neighbor_list

    for lr in (A2A, LES):
        ckpt = _checkpoint(lr)
        cfg = ckpt.config
        frames = [crystal(7), crystal(8).repeat((1, 1, 2))]
        pairs = [neighbor_list(a.positions, cfg.cutoff, a.cell.array, a.pbc) for a in frames]
        with jax.enable_x64(True):
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), ckpt.params)
            b = pad_graphs([a.numbers for a in frames], [a.positions for a in frames], [(p.dst, p.src) for p in pairs],
                           24, 2048, 3, dtype=np.float64, shifts=[p.shifts for p in pairs],
                           cells=[a.cell.array for a in frames])
            b = with_reciprocal_grid(b, cfg.long_range)
            fn = jax.jit(lambda p, batch: energy_forces_stress(p, cfg, batch))
            e_slot, f_slot, _, s_slot = fn(params, b)
            e_seg, f_seg, _, s_seg = fn(params, b.replace(nodes_per_graph=None))
        np.testing.assert_allclose(e_seg, e_slot, rtol=1e-12)
        np.testing.assert_allclose(f_seg, f_slot, atol=1e-10)
        np.testing.assert_allclose(s_seg, s_slot, atol=1e-12)
        assert abs(float(e_slot[2])) == 0.0


def test_training_batches_carry_one_static_grid_for_the_whole_dataset():
    """The trainer's samplers put the grid of *all* the dataset's cells on every periodic
    batch (one compile), and the grid covers the largest cell."""
    from pathlib import Path

    from ase.io import read

    from efa_calc.data import BatchSampler, Dataset, fit_energy_shift

    atoms = read(Path(__file__).resolve().parents[1] / "models" / "data" / "argon" / "argon_lj.extxyz", ":")
    ds = Dataset.from_atoms([atoms[0], atoms[-1]])
    cfg = LatentEwaldConfig(iterations=(0,), smearing=1.0, accuracy=1e-6)
    grid = cfg.reciprocal_grid(np.stack(ds.cells))
    lengths = np.linalg.norm(np.stack(ds.cells), axis=-1).max(axis=0)
    assert grid == tuple(int(g) for g in np.ceil(lengths / cfg.lr_wavelength))
    bs = BatchSampler(ds, 6.0, fit_energy_shift(ds), graphs_per_shard=2, reciprocal_grid=grid)
    assert bs.make([0]).inputs.reciprocal_grid == grid and bs.make([0, 1]).inputs.reciprocal_grid == grid


def test_unit_output_initialisation_skips_the_energy_block():
    """An energy block has no projection/MLP layers and its charges are not rescaled (a
    unit-RMS latent charge would start E_lr at ~k_e per atom)."""
    from efa_calc.train.initialisation import layer_names

    les = layer_names(_checkpoint(LES).config)
    a2a = layer_names(_checkpoint(A2A).config)
    assert not any("long_range" in n for n in les)
    assert "long_range_1/query" in a2a and "long_range_projection_1" in a2a
