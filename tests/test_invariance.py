"""Numerical invariances (float64) and exact forces."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from efa_calc import EFACalculator


@pytest.fixture(scope="module", params=["sn2_efa", "cumulene_efa"])
def setup(request, reference_checkpoint, reference_predictions):
    name = request.param
    ckpt = reference_checkpoint(name)
    z = reference_predictions[f"{name}/atomic_numbers"]
    pos = reference_predictions[f"{name}/positions"]
    frames = [(z[k], pos[k]) for k in (3, 24, 41)]
    return name, ckpt, frames


def _eval(calc, structures):
    res = calc.evaluate_batch([Atoms(z, p) for z, p in structures])
    return np.array([r["energy"] for r in res]), [r["forces"] for r in res]


def test_translation_inversion_permutation_exact(setup):
    name, ckpt, frames = setup
    calc = EFACalculator(ckpt, dtype="float64")
    rng = np.random.default_rng(0)
    e0, f0 = _eval(calc, frames)
    shift = np.array([3.1, -7.2, 11.5])
    e_t, f_t = _eval(calc, [(z, p + shift) for z, p in frames])
    e_i, f_i = _eval(calc, [(z, -p) for z, p in frames])
    perms = [rng.permutation(len(z)) for z, _ in frames]
    e_p, f_p = _eval(calc, [(z[q], p[q]) for (z, p), q in zip(frames, perms)])
    assert np.abs(e_t - e0).max() < 1e-9
    assert np.abs(e_i - e0).max() < 1e-9
    assert np.abs(e_p - e0).max() < 1e-9
    for k in range(len(frames)):
        np.testing.assert_allclose(f_t[k], f0[k], atol=1e-8)
        np.testing.assert_allclose(f_i[k], -f0[k], atol=1e-8)  # forces are vectors: they invert
        np.testing.assert_allclose(f_p[k], f0[k][perms[k]], atol=1e-8)


@pytest.mark.parametrize("reflect", [False, True])
def test_rotations_and_reflections(setup, reflect):
    """50-point grid: invariant to < 1e-5 eV (quadrature error, spec §2.3); the same
    weights on the 5810-point grid: < 1e-9 eV.  Forces rotate with the structure."""
    name, ckpt, frames = setup
    rng = np.random.default_rng(1 + reflect)
    mats = []
    for _ in frames:
        m = Rotation.random(random_state=rng).as_matrix()
        if reflect:
            m = m @ np.diag([1.0, 1.0, -1.0])  # improper: det = −1
        mats.append(m)
    rotated = [(z, p @ m.T) for (z, p), m in zip(frames, mats)]
    for grid, tol_e, tol_f in ((None, 1e-5, 2e-4), (5810, 1e-9, 1e-8)):
        calc = EFACalculator(ckpt, dtype="float64", lebedev_num=grid)
        e0, f0 = _eval(calc, frames)
        e1, f1 = _eval(calc, rotated)
        assert np.abs(e1 - e0).max() < tol_e, (grid, np.abs(e1 - e0).max())
        for k, m in enumerate(mats):
            np.testing.assert_allclose(f1[k], f0[k] @ m.T, atol=tol_f)


def test_forces_are_the_exact_negative_gradient(setup):
    """Central finite differences (h = 1e-4 Å) in float64 agree to < 1e-6 eV/Å."""
    name, ckpt, frames = setup
    calc = EFACalculator(ckpt, dtype="float64")
    z, p = frames[1]
    h = 1e-4
    displaced = []
    for i in range(len(z)):
        for c in range(3):
            for s in (+1, -1):
                q = p.copy()
                q[i, c] += s * h
                displaced.append((z, q))
    e, _ = _eval(calc, displaced)
    fd = -(e[0::2] - e[1::2]).reshape(len(z), 3) / (2 * h)
    _, (f,) = _eval(calc, [(z, p)])
    assert np.abs(fd - f).max() < 1e-6, np.abs(fd - f).max()
