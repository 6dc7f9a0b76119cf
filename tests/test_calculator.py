"""The production calculator contract: no recompiles, shared compiles, buckets, errors, batches, committees."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from efa_calc import CheckpointError, EFACalculator, InputError, list_models, save_checkpoint
from efa_calc.compile_counter import CompileCounter


@pytest.fixture(scope="module")
def cumulene(reference_predictions):
    return Atoms(reference_predictions["cumulene_efa/atomic_numbers"][10], reference_predictions["cumulene_efa/positions"][10])


def test_md_does_not_recompile(reference_checkpoint, cumulene):
    """300 VelocityVerlet steps: compiles happen only in the first steps."""
    atoms = cumulene.copy()
    atoms.calc = EFACalculator(reference_checkpoint("cumulene_efa"))
    MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(5)
    with CompileCounter() as cc:
        dyn.run(295)
    assert cc.count == 0, f"{cc.count} compilations during MD"
    # a second instance of the same model reuses the executables
    with CompileCounter() as cc2:
        other = cumulene.copy()
        other.calc = EFACalculator(reference_checkpoint("cumulene_efa"))
        other.get_forces()
    assert cc2.count <= 2, f"second instance compiled {cc2.count} programs"


def test_atom_count_change_gives_fresh_results(reference_checkpoint, cumulene):
    calc = EFACalculator(reference_checkpoint("cumulene_efa"), dtype="float64")
    atoms = cumulene.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    del atoms[5]
    e_reused = atoms.get_potential_energy()
    f_reused = atoms.get_forces()
    fresh = atoms.copy()
    fresh.calc = EFACalculator(reference_checkpoint("cumulene_efa"), dtype="float64")
    assert abs(e_reused - fresh.get_potential_energy()) < 1e-5
    np.testing.assert_allclose(f_reused, fresh.get_forces(), atol=1e-8)
    assert f_reused.shape == (12, 3)


def test_pair_list_growth_moves_to_a_bigger_bucket(reference_checkpoint, cumulene, caplog):
    calc = EFACalculator(reference_checkpoint("cumulene_efa"), dtype="float64", skin=0.0)
    atoms = cumulene.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    cap = calc._slots.num_edges
    squeezed = atoms.copy()
    squeezed.positions *= 0.3  # every atom now sees many more neighbours
    squeezed.calc = calc
    with caplog.at_level(logging.INFO, logger="efa_calc"):
        e = squeezed.get_potential_energy()
    assert calc._slots.num_edges > cap
    assert "pair bucket" in caplog.text
    ref = squeezed.copy()
    ref.calc = EFACalculator(reference_checkpoint("cumulene_efa"), dtype="float64")
    assert abs(e - ref.get_potential_energy()) < 1e-9


def test_float64_forces_are_gradients_and_float64(reference_checkpoint, cumulene):
    calc = EFACalculator(reference_checkpoint("sn2_efa"), dtype="float64")
    atoms = Atoms("CH3FCl", positions=[[0, 0, 0], [1.03, 0, 0.36], [-0.51, 0.89, 0.36], [-0.51, -0.89, 0.36],
                                       [0, 0, -2.6], [0, 0, 2.3]])
    atoms.calc = calc
    f = atoms.get_forces()
    assert f.dtype == np.float64 and atoms.get_potential_energies().dtype == np.float64
    h = 1e-4
    for i, c in [(0, 2), (4, 2), (1, 0), (5, 1)]:
        e = []
        for s in (h, -h):
            a = atoms.copy()
            a.positions[i, c] += s
            a.calc = calc
            e.append(a.get_potential_energy())
        assert abs(-(e[0] - e[1]) / (2 * h) - f[i, c]) < 1e-6
    assert abs(atoms.get_potential_energies().sum() - atoms.get_potential_energy()) < 1e-9
    assert atoms.get_potential_energy() == atoms.calc.results["free_energy"]


def test_float32_stays_float32_next_to_float64(reference_checkpoint, cumulene):
    a64 = cumulene.copy()
    a64.calc = EFACalculator(reference_checkpoint("cumulene_local"), dtype="float64")
    a32 = cumulene.copy()
    a32.calc = EFACalculator(reference_checkpoint("cumulene_local"), dtype="float32")
    assert a64.get_forces().dtype == np.float64
    assert a32.get_forces().dtype == np.float32
    assert abs(a64.get_potential_energy() - a32.get_potential_energy()) < 1e-4


def test_bad_input_errors(reference_checkpoint, cumulene):
    calc = EFACalculator(reference_checkpoint("cumulene_efa"))
    cases = []
    a = cumulene.copy(); a[0].symbol = "O"
    cases.append((a, ["O", "not trained", "H, C"]))
    a = cumulene.copy(); a.positions[3, 1] = np.nan
    cases.append((a, ["NaN or infinite"]))
    a = cumulene.copy(); a.positions[2, 0] = np.inf
    cases.append((a, ["NaN or infinite"]))
    a = cumulene.copy(); a.pbc = True; a.cell = [30, 30, 30]
    cases.append((a, ["periodic", "pbc = False"]))
    cases.append((Atoms(), ["empty"]))
    a = cumulene.copy(); a.positions[0] += [40.0, 0, 0]
    cases.append((a, ["max_length", "15.00 Å"]))
    for atoms, words in cases:
        atoms.calc = calc
        with pytest.raises(InputError) as err:
            atoms.get_potential_energy()
        assert isinstance(err.value, ValueError)
        for w in words:
            assert w in str(err.value), (w, str(err.value))


def test_max_length_warning_when_not_strict(reference_checkpoint, cumulene):
    calc = EFACalculator(reference_checkpoint("cumulene_local"), strict=False)
    calc_efa = EFACalculator(reference_checkpoint("cumulene_efa"), strict=False)
    a = cumulene.copy(); a.positions[0] += [0, 16.0, 0]
    a.calc = calc_efa
    with pytest.warns(RuntimeWarning, match="max_length"):
        a.get_potential_energy()
    a.positions[0] += [0.1, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        a.get_potential_energy()
    a.calc = calc  # a local model has no max_length
    a.get_potential_energy()


def test_incompatible_format_version(tmp_path, reference_checkpoint):
    path = save_checkpoint(reference_checkpoint("cumulene_local"), tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 2
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version") as err:
        EFACalculator(path)
    assert isinstance(err.value, ValueError)


def test_evaluate_batch_equals_single_calls(reference_checkpoint, reference_predictions):
    calc = EFACalculator(reference_checkpoint("sn2_efa"), dtype="float64")
    z = reference_predictions["sn2_efa/atomic_numbers"]
    pos = reference_predictions["sn2_efa/positions"]
    structures = [Atoms(z[k], pos[k]) for k in range(0, 50, 6)]
    structures += [Atoms(z[3][:5], pos[3][:5]), Atoms(z[40][[0, 1, 2, 3, 5]], pos[40][[0, 1, 2, 3, 5]]),
                   Atoms("HF", positions=[[0, 0, 0], [0, 0, 0.95]])]
    batched = calc.evaluate_batch(structures, batch_size=4)
    for a, r in zip(structures, batched):
        a.calc = calc
        assert abs(a.get_potential_energy() - r["energy"]) < 1e-6
        np.testing.assert_allclose(a.get_forces(), r["forces"], atol=1e-6)


def test_committee_std(reference_checkpoint, cumulene):
    same = EFACalculator([reference_checkpoint("cumulene_efa")] * 2)
    different = EFACalculator.committee([reference_checkpoint("cumulene_efa"), reference_checkpoint("cumulene_local")])
    a = cumulene.copy(); a.calc = same
    a.get_potential_energy()
    assert a.calc.results["energy_std"] == 0.0 and np.all(a.calc.results["forces_std"] == 0.0)
    b = cumulene.copy(); b.calc = different
    e = b.get_potential_energy()
    assert b.calc.results["energy_std"] > 0.0 and b.calc.results["forces_std"].max() > 0.0
    singles = []
    for name in ("cumulene_efa", "cumulene_local"):
        c = cumulene.copy(); c.calc = EFACalculator(reference_checkpoint(name)); singles.append(c.get_potential_energy())
    assert abs(e - np.mean(singles)) < 1e-5


def test_lookup_by_name_in_a_model_directory(tmp_path, monkeypatch, reference_checkpoint, cumulene):
    save_checkpoint(reference_checkpoint("cumulene_local"), tmp_path / "my-cumulene")
    monkeypatch.setenv("EFA_CALC_MODEL_PATH", str(tmp_path))
    assert "my-cumulene" in list_models()
    a = cumulene.copy()
    a.calc = EFACalculator("my-cumulene", dtype="float64")
    assert np.isfinite(a.get_potential_energy())
    with pytest.raises(CheckpointError, match="no model named 'nope'.*my-cumulene"):
        EFACalculator("nope")
