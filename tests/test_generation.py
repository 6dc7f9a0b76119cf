"""Resumable data generation: a killed run finishes with no frame lost or duplicated, and
non-converged frames never reach a dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms

from efa_calc.data import read_dataset
from efa_calc.generate.runner import Label, _spread_order, collect, generation_status, label_plan, write_plan

CHUNK = 3


def _plan(n: int = 11) -> list[Atoms]:
    rng = np.random.default_rng(7)
    return [Atoms("CH3Cl", rng.normal(size=(5, 3)) * 1.5, info={"charge": -1, "kind": "test"}) for _ in range(n)]


class PairLabeller:
    """E = Σ_{i<j} |r_i − r_j|² / 2 (eV), exact forces; frames in ``fail`` do not converge."""

    def __init__(self, fail=()):
        self.fail = set(fail)
        self.calls: list[int] = []

    def __call__(self, atoms: Atoms) -> Label:
        fid = int(atoms.info["frame_id"])
        self.calls.append(fid)
        if fid in self.fail:
            return Label(float("nan"), np.full((len(atoms), 3), np.nan), False, {"cycles": 100})
        r = atoms.positions
        d = r[:, None] - r[None]
        energy = 0.25 * float(np.sum(d**2))
        forces = -np.sum(d, axis=1) * 1.0  # −∂E/∂r_i = −Σ_j (r_i − r_j)
        return Label(energy, forces, True, {"cycles": 7})


def _generate(tmp_path, name, fail=(), kill_after=None):
    work = tmp_path / name
    write_plan(work, _plan(), {"recipe": "test"})
    first = PairLabeller(fail)
    if kill_after is not None:
        assert label_plan(work, first, CHUNK, progress=False, max_chunks=kill_after) == kill_after
        done, total = generation_status(work, CHUNK)
        assert done == kill_after < total
        with pytest.raises(RuntimeError, match="incomplete"):
            collect(work, tmp_path / f"{name}.extxyz", CHUNK, {})
    second = PairLabeller(fail)
    label_plan(work, second, CHUNK, progress=False)
    prov = collect(work, tmp_path / f"{name}.extxyz", CHUNK, {"method": "pair test"})
    return prov, first.calls, second.calls


def test_killed_generation_resumes_without_loss_or_duplicates(tmp_path):
    prov_a, _, calls_a = _generate(tmp_path, "straight")
    prov_b, killed, resumed = _generate(tmp_path, "killed", kill_after=2)
    # the resumed run labels exactly the frames the killed one had not written
    assert len(killed) == 2 * CHUNK and not set(killed) & set(resumed)
    assert sorted(killed + resumed) == list(range(11)) == sorted(calls_a)
    a, b = read_dataset(tmp_path / "straight.extxyz"), read_dataset(tmp_path / "killed.extxyz")
    assert [i["frame_id"] for i in a.info] == [i["frame_id"] for i in b.info] == list(range(11))
    np.testing.assert_array_equal(a.energy, b.energy)
    for fa, fb in zip(a.forces, b.forces):
        np.testing.assert_array_equal(fa, fb)
    assert prov_a["num_kept"] == prov_b["num_kept"] == 11


def test_resume_ignores_a_chunk_torn_by_a_kill(tmp_path):
    work = tmp_path / "torn"
    write_plan(work, _plan(), {"recipe": "test"})
    (work / "chunks").mkdir()
    (work / "chunks" / "chunk_00001.extxyz.tmp").write_text("3\ntruncated")  # killed mid-write
    label_plan(work, PairLabeller(), CHUNK, progress=False)
    assert collect(work, tmp_path / "torn.extxyz", CHUNK, {})["num_kept"] == 11


def test_nonconverged_frames_are_rejected_and_recorded(tmp_path):
    prov, *_ = _generate(tmp_path, "fails", fail=(4, 9))
    ds = read_dataset(tmp_path / "fails.extxyz")
    assert [i["frame_id"] for i in ds.info] == [i for i in range(11) if i not in (4, 9)]
    assert np.all(np.isfinite(ds.energy))
    assert prov["num_rejected_nonconverged"] == 2 and prov["rejected_frame_ids"] == [4, 9]
    on_disk = json.loads((tmp_path / "fails.json").read_text())
    assert on_disk["rejected_frame_ids"] == [4, 9] and on_disk["units"]["energy"] == "eV"


def test_plan_mismatch_is_refused(tmp_path):
    write_plan(tmp_path / "p", _plan(), {"recipe": "test"})
    with pytest.raises(ValueError, match="different config"):
        write_plan(tmp_path / "p", _plan(), {"recipe": "other"})
    moved = _plan()
    moved[3].positions += 0.1
    with pytest.raises(ValueError, match="different config"):
        write_plan(tmp_path / "p", moved, {"recipe": "test"})


def test_spread_order_samples_every_block_early():
    total = 196
    order = _spread_order(range(total), total)
    assert sorted(order) == list(range(total))
    first = order[: total // 4]
    # every eighth of the plan (a block of reactions / frame kinds) is touched in the first quarter
    assert {c * 8 // total for c in first} == set(range(8))


def test_pyscf_labeller_flags_nonconvergence():
    pytest.importorskip("pyscf", reason="PySCF (the 'data' extra) is not installed")
    from efa_calc.generate.sn2 import PySCFLabeller

    ion = Atoms("F", [[0.0, 0.0, 0.0]], info={"charge": -1, "frame_id": 0})
    ok = PySCFLabeller(xc="pbe", basis="def2-svp")(ion)
    assert ok.converged and np.isfinite(ok.energy) and np.allclose(ok.forces, 0.0, atol=1e-6)
    # an unreachable tolerance: neither DIIS nor the Newton fallback converges
    bad = PySCFLabeller(xc="pbe", basis="def2-svp", conv_tol=1e-30, max_cycle=2)(ion)
    assert not bad.converged and np.isnan(bad.energy) and np.all(np.isnan(bad.forces))
    assert bad.meta["newton_fallback"] is True


def test_cumulene_torsion_frames_extend_the_plan_without_changing_it():
    """Torsion frames (no thermal run) come after the thermal ones, so adding them keeps
    every earlier frame (up to tblite's last-bit threading noise); they carry their dihedral and small displacements."""
    pytest.importorskip("tblite")
    from efa_calc.generate.cumulene import DEFAULT_CUMULENE_CONFIG, plan_cumulene, relaxed_cumulene
    from efa_calc.structures import cumulene_dihedral

    base = {**DEFAULT_CUMULENE_CONFIG, "n_carbons": [3], "frames_per_chain": 2, "thermal_steps": 2}
    plain = plan_cumulene(base, progress=False)
    more = plan_cumulene({**base, "torsion_frames_per_chain": 3, "torsion_displacement_A": 0.02}, progress=False)
    assert len(plain) == 2 and len(more) == 5
    for a, b in zip(plain, more):
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)
    ref = relaxed_cumulene(3)
    for a in more[2:]:
        assert a.info["kind"] == "torsion" and a.info["dihedral_deg"] == pytest.approx(cumulene_dihedral(a))
        shift = np.abs(a.positions - ref.positions).max()
        assert 0.0 < shift < 2.5  # rotated H (≤ 1.9 Å) and stretched bonds, not a thermal trajectory
