"""The model is the paper's model: it reproduces the reference code's own predictions."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from efa_calc import EFACalculator

MODELS = ["cumulene_efa", "cumulene_local", "sn2_efa", "sn2_local_rcut10", "sn2_local_rcut5",
          "cluster16_efa", "cluster16_local_T2"]
# float64: the reference code's own numbers are reproduced to ≤ 8e-14 eV and eV/Å (measured on
# all seven checkpoints); 1e-11 leaves room for another CPU's vectorisation while catching any
# kernel change that is not exact (the acceptance bound of ../shared/reference is 1e-6 / 1e-5).
TOL = {"float64": (1e-11, 1e-11), "float32": (1e-4, 1e-3)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", MODELS)
def test_reproduces_reference_predictions(name, dtype, reference_checkpoint, reference_predictions):
    calc = EFACalculator(reference_checkpoint(name), dtype=dtype)
    z = reference_predictions[f"{name}/atomic_numbers"]
    pos = reference_predictions[f"{name}/positions"]
    res = calc.evaluate_batch([Atoms(z[k], pos[k]) for k in range(len(z))], batch_size=25)
    e = np.array([r["energy"] for r in res])
    f = np.stack([r["forces"] for r in res])
    de = np.abs(e - reference_predictions[f"{name}/energy"]).max()
    df = np.abs(f - reference_predictions[f"{name}/forces"]).max()
    tol_e, tol_f = TOL[dtype]
    assert de < tol_e, f"{name} {dtype}: max |dE| = {de:.3g} eV"
    assert df < tol_f, f"{name} {dtype}: max |dF| = {df:.3g} eV/Å"
    assert f.dtype == np.dtype(dtype)


def test_single_calls_match_batched(reference_checkpoint, reference_predictions):
    """One-by-one ASE calls give the reference numbers too (another padding layout)."""
    name = "sn2_efa"
    calc = EFACalculator(reference_checkpoint(name), dtype="float64")
    z = reference_predictions[f"{name}/atomic_numbers"]
    pos = reference_predictions[f"{name}/positions"]
    for k in (0, 17, 25, 49):
        atoms = Atoms(z[k], pos[k])
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - reference_predictions[f"{name}/energy"][k]) < 1e-9
        np.testing.assert_allclose(atoms.get_forces(), reference_predictions[f"{name}/forces"][k], atol=1e-9)


def test_float32_tracks_float64_off_the_reference_frames(reference_checkpoint, reference_predictions):
    """Randomly rotated, translated and perturbed frames (not in the reference file):
    float32 stays within the acceptance bounds of float64."""
    rng = np.random.default_rng(7)
    from scipy.spatial.transform import Rotation

    for name in ("cumulene_efa", "sn2_efa"):
        z = reference_predictions[f"{name}/atomic_numbers"]
        pos = reference_predictions[f"{name}/positions"]
        frames = []
        for k in rng.choice(len(z), 8, replace=False):
            rot = Rotation.random(random_state=rng).as_matrix()
            p = pos[k] @ rot.T + rng.normal(scale=3.0, size=3) + rng.normal(scale=0.03, size=pos[k].shape)
            frames.append(Atoms(z[k], p))
        r64 = EFACalculator(reference_checkpoint(name), dtype="float64").evaluate_batch(frames)
        r32 = EFACalculator(reference_checkpoint(name), dtype="float32").evaluate_batch(frames)
        for a, b in zip(r64, r32):
            assert abs(a["energy"] - b["energy"]) < 1e-4
            assert np.abs(a["forces"] - b["forces"]).max() < 1e-3


def _energies(calc, frames):
    return np.array([r["energy"] for r in calc.evaluate_batch(frames)])


def test_cumulene_torsion_profile_efa_sees_it_local_is_flat(shared, reference_checkpoint):
    """Reference code: Pearson r = 0.9966 (EFA) against the dataset energies; the local
    model's profile is flat because no atom sees both CH2 groups."""
    with np.load(shared / "datasets" / "cumulene_profile.npz") as d:
        z, pos, e_true = d["atomic_numbers"].astype(int), d["positions"], d["energy"]
    idx = np.arange(0, len(z), 20)
    frames = [Atoms(z[k], pos[k]) for k in idx]
    e_efa = _energies(EFACalculator(reference_checkpoint("cumulene_efa"), dtype="float32"), frames)
    e_loc = _energies(EFACalculator(reference_checkpoint("cumulene_local"), dtype="float32"), frames)
    r = np.corrcoef(e_efa, e_true[idx])[0, 1]
    assert r > 0.995, r
    span_true = np.ptp(e_true[idx])
    assert np.ptp(e_efa) > 0.8 * span_true
    # local: flat to float32 rounding (< 0.1 % of the 0.74 eV barrier)
    assert np.ptp(e_loc) < 1e-3 * span_true, np.ptp(e_loc)
