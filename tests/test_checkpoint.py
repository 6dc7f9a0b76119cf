"""Our checkpoint format, the reference import, and every error case."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms

from efa_calc import CheckpointError, EFACalculator, load_checkpoint, save_checkpoint
from efa_calc.reference import checkpoint_from_reference
from efa_calc.checkpoint import write_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory, reference_checkpoint):
    path = tmp_path_factory.mktemp("ckpt") / "sn2"
    save_checkpoint(reference_checkpoint("sn2_efa"), path)
    return path


def _copy(saved, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


def test_round_trip_identical_predictions(saved, reference_checkpoint, reference_predictions):
    z = reference_predictions["sn2_efa/atomic_numbers"]
    pos = reference_predictions["sn2_efa/positions"]
    frames = [Atoms(z[k], pos[k]) for k in range(0, 50, 7)]
    a = EFACalculator(reference_checkpoint("sn2_efa"), dtype="float64").evaluate_batch(frames)
    loaded = load_checkpoint(saved)
    b = EFACalculator(saved, dtype="float64").evaluate_batch(frames)
    for x, y in zip(a, b):
        assert x["energy"] == y["energy"]
        np.testing.assert_array_equal(x["forces"], y["forces"])
    assert loaded.species == ["H", "C", "F", "Cl", "Br", "I"]
    meta = json.loads((saved / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["units"]["energy"] == "eV"
    assert "date" in meta["provenance"] and "git_commit" in meta["provenance"]
    assert loaded.fingerprint() == reference_checkpoint("sn2_efa").fingerprint()


@pytest.mark.parametrize(
    "name,species",
    [("cumulene_efa", ["H", "C"]), ("sn2_local_rcut5", ["H", "C", "F", "Cl", "Br", "I"]), ("cluster16_efa", ["H"])],
)
def test_species_derived_from_element_bias(name, species, reference_checkpoint):
    assert reference_checkpoint(name).species == species


def test_reference_leaf_mismatch_is_refused(shared, reference_meta):
    """The cumulene EFA run needs era_max_degree=1; with 0 the reference code silently
    drops four leaves — we refuse and name them."""
    m = reference_meta["cumulene_efa"]
    hp = dict(m["hyperparameters"], era_max_degree=0)
    with pytest.raises(CheckpointError) as err:
        checkpoint_from_reference(shared / m["checkpoint"], hp)
    msg = str(err.value)
    for leaf in ("Dense_7/1-/kernel", "EuclideanRopeAttention_1/Dense_0/1-/kernel",
                 "EuclideanRopeAttention_1/Dense_1/1-/kernel", "EuclideanRopeAttention_1/Dense_2/1-/kernel"):
        assert leaf in msg
    hp = dict(m["hyperparameters"], num_iterations=4, era_use_in_iterations=[0, 1, 2, 3])
    with pytest.raises(CheckpointError, match="missing from the checkpoint: .*message_pass_3"):
        checkpoint_from_reference(shared / m["checkpoint"], hp)


def test_reference_unsupported_hyperparameters(shared, reference_meta):
    m = reference_meta["sn2_efa"]
    with pytest.raises(ValueError, match="era_tensor_integration"):
        checkpoint_from_reference(shared / m["checkpoint"], dict(m["hyperparameters"], era_tensor_integration=True))
    with pytest.raises(ValueError, match="unknown reference EnergyModel hyperparameters"):
        checkpoint_from_reference(shared / m["checkpoint"], dict(m["hyperparameters"], bogus=1))
    with pytest.raises(CheckpointError, match="no reference checkpoint"):
        checkpoint_from_reference(shared / "datasets", m["hyperparameters"])


def test_missing_files(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    d = _copy(saved, tmp_path)
    (d / "params.npz").unlink()
    with pytest.raises(CheckpointError, match="missing its parameter file params.npz"):
        load_checkpoint(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_checkpoint(d)


def test_wrong_format_version(saved, tmp_path):
    d = _copy(saved, tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["format_version"] = 99
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99.*reads format_version 1"):
        load_checkpoint(d)


def test_corrupt_bytes_and_json(saved, tmp_path):
    d = _copy(saved, tmp_path)
    raw = bytearray((d / "params.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "params.npz").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt.*checksum"):
        load_checkpoint(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is corrupt"):
        load_checkpoint(d)


def test_shape_mismatch_names_the_parameters(saved, tmp_path):
    d = _copy(saved, tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["model"]["num_features"] = 64
    write_config(d, meta)  # consistently re-hashed: the parameters no longer fit
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*embed/embedding: \(118, 1, 1, 128\) \(model expects \(118, 1, 1, 64\)\)"):
        load_checkpoint(d)


def test_invalid_species_and_hyperparameters(saved, tmp_path):
    d = _copy(saved, tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["species"] = ["H", "Xx"]
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid species"):
        load_checkpoint(d)
    meta["species"] = ["H"]
    meta["model"]["long_range"]["kind"] = "mystery"
    write_config(d, meta)
    with pytest.raises(CheckpointError, match="unknown long-range block kind"):
        load_checkpoint(d)


def test_cli_convert_reference(shared, reference_meta, reference_predictions, tmp_path):
    m = reference_meta["cumulene_local"]
    hp = tmp_path / "hp.json"
    hp.write_text(json.dumps(m["hyperparameters"]))
    out = tmp_path / "cumulene-local"
    r = subprocess.run([sys.executable, "-m", "efa_calc.cli", "convert-reference", str(shared / m["checkpoint"]),
                        "--hyperparameters", str(hp), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(out)
    assert ck.species == ["H", "C"]
    atoms = Atoms(reference_predictions["cumulene_local/atomic_numbers"][0], reference_predictions["cumulene_local/positions"][0])
    atoms.calc = EFACalculator(out, dtype="float64")
    assert abs(atoms.get_potential_energy() - reference_predictions["cumulene_local/energy"][0]) < 1e-9
