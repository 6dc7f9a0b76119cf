"""The training envelope and the extrapolation guard: no false alarms on the held-out data
and room-temperature MD of the bundled models; a warning (or an error with
``guard="error"``) with a readable reason for the structures of issue 14 that gave silent
nonsense; the config.json checksum; calculator argument checks; the single atom."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from efa_calc import EFACalculator, list_models, load_checkpoint
from efa_calc.checkpoint import config_hash
from efa_calc.data import read_dataset, split_indices
from efa_calc.envelope import Envelope
from efa_calc.errors import CheckpointError, ExtrapolationError, ExtrapolationWarning, InputError
from efa_calc.models import resolve_model
from efa_calc.structures import cumulene

MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLED = ["cumulene-efa", "cumulene-local", "sn2-efa", "sn2-local"]


def _need(name: str):
    if name not in list_models():
        pytest.skip(f"{name} is not bundled")


def dense_cluster(n: int, seed: int = 0, spacing: float = 1.6) -> Atoms:
    """``n`` C/H atoms on a jittered cubic lattice (spacing Å): a dense, unphysical cluster."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * spacing
    pos = grid + rng.uniform(-0.2, 0.2, grid.shape)
    return Atoms(rng.choice(["C", "H"], n), pos)


# ---------------------------------------------------------------- no false alarms
@pytest.mark.parametrize("name", [pytest.param("cumulene-efa", marks=pytest.mark.slow),
                                  pytest.param("cumulene-local", marks=pytest.mark.slow), "sn2-efa",
                                  pytest.param("sn2-local", marks=pytest.mark.slow)])
def test_guard_is_silent_on_the_held_out_test_split(name):
    _need(name)
    from efa_calc.train import load_train_config

    cfg = load_train_config(MODELS / "configs" / f"{name}.toml")
    if not cfg.data_path.is_file():
        pytest.skip(f"training data {cfg.data_path.name} missing")
    ds = read_dataset(cfg.data_path).select(cfg.include)
    _, _, test = split_indices(len(ds), cfg.split, cfg.split_seed)
    sub = ds.subset(test)
    calc = EFACalculator(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        res = calc.evaluate_batch([Atoms(z, r) for z, r in zip(sub.numbers, sub.positions)])
    assert len(res) == len(test) > 100
    assert {r["extrapolation"]["status"] for r in res} == {"inside"}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_envelope_is_the_training_split(name):
    """The envelope in config.json is what the training split of the model's data gives."""
    _need(name)
    ck = load_checkpoint(resolve_model(name), check_shapes=False)
    assert ck.config_checked and ck.envelope is not None
    env = ck.envelope
    assert env.num_frames == ck.provenance["data"]["split"]["train"]
    assert set(env.elements) == set(ck.species)
    assert env.cutoff == ck.config.cutoff
    assert all(0.7 < d < 3.0 for d in env.min_distance.values())
    assert env.energy_per_atom[0] < env.energy_per_atom[1]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["cumulene-nvt", "sn2-nvt"])
def test_guard_is_silent_in_300K_nvt(tmp_path, protocol):
    """2000 steps (1 ps) of the bundled 300 K NVT protocols: not one warning, never stopped."""
    from md_protocols import protocols
    from md_protocols.common import execute

    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        s = execute(protocols()[protocol], tmp_path / protocol, progress=False)
    assert s["status"] == "completed" and s["results"]["steps_done"] == 2000


# ---------------------------------------------------------------- no silent nonsense
def test_dense_50_atom_cluster_warns_with_reasons():
    _need("cumulene-efa")
    calc = EFACalculator("cumulene-efa")
    atoms = dense_cluster(50)
    atoms.calc = calc
    with pytest.warns(ExtrapolationWarning, match="neighbours within 4 Å, the training data's maximum is"):
        atoms.get_potential_energy()
    ext = calc.results["extrapolation"]
    assert ext["status"] == "outside"
    assert any("50 atoms, the training data has 7–15" in r for r in ext["reasons"])
    assert any("predicted energy" in r and "eV/atom" in r for r in ext["reasons"])


@pytest.mark.parametrize("n", [1000, 2000])
def test_big_dense_clusters_are_errors_under_guard_error(n):
    _need("cumulene-efa")
    calc = EFACalculator("cumulene-efa", strict=False, guard="error")  # strict=False: past max_length
    atoms = dense_cluster(n)
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the max_length warning of strict=False
        with pytest.raises(ExtrapolationError, match=rf"{n} atoms, the training data has 7–15"):
            atoms.get_potential_energy()


def test_two_atoms_at_one_spot_are_always_an_error():
    _need("cumulene-efa")
    atoms = cumulene(9, 90.0)
    atoms.positions[3] = atoms.positions[2]
    for guard in ("warn", "off"):
        atoms.calc = EFACalculator("cumulene-efa", guard=guard)
        with pytest.raises(InputError, match=r"atoms 2 and 3 are 0\.000 Å apart"):
            atoms.get_potential_energy()


def test_short_distance_reason_names_pair_and_training_minimum():
    _need("cumulene-efa")
    atoms = cumulene(9, 90.0)
    d = atoms.positions[3] - atoms.positions[2]
    atoms.positions[3:] -= d * (1 - 0.62 / np.linalg.norm(d))  # C2–C3 at 0.62 Å
    atoms.calc = EFACalculator("cumulene-efa", guard="error")
    with pytest.raises(ExtrapolationError, match=r"C–C distance 0\.62 Å \(atoms 2, 3\), the training data's minimum "
                                                 r"is 1\.14 Å"):
        atoms.get_potential_energy()


def test_edited_species_list_fails_the_checksum(tmp_path):
    _need("cumulene-efa")
    dst = tmp_path / "edited"
    shutil.copytree(resolve_model("cumulene-efa"), dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["species"].append("N")
    (dst / "config.json").write_text(json.dumps(meta, indent=1))
    with pytest.raises(CheckpointError, match="config_sha256 checksum mismatch"):
        load_checkpoint(dst)
    # without the checksum (an old-style file) the envelope still knows N was never seen
    del meta["config_sha256"]
    (dst / "config.json").write_text(json.dumps(meta, indent=1))
    ck = load_checkpoint(dst)
    assert not ck.config_checked and "N" in ck.species
    chain = cumulene(9, 90.0)
    chain[4].symbol = "N"
    chain.calc = EFACalculator(str(dst))
    with pytest.warns(ExtrapolationWarning, match="element\\(s\\) N never occur in the training data"):
        chain.get_potential_energy()


def test_every_config_field_is_covered_by_the_checksum(tmp_path):
    _need("cumulene-efa")
    src = resolve_model("cumulene-efa")
    meta = json.loads((src / "config.json").read_text())
    assert meta["config_sha256"] == config_hash(meta)
    for key in meta:
        if key == "config_sha256":
            continue
        edited = json.loads(json.dumps(meta))
        edited[key] = {"edited": True} if not isinstance(meta[key], dict) else {**meta[key], "edited": 1}
        assert config_hash(edited) != meta["config_sha256"], key


def test_checkpoint_without_envelope_is_unchecked(tmp_path):
    _need("cumulene-efa")
    ck = load_checkpoint(resolve_model("cumulene-efa"))
    ck.envelope = None
    atoms = cumulene(9, 90.0)
    atoms.calc = EFACalculator(ck)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        atoms.get_potential_energy()
    assert atoms.calc.results["extrapolation"]["status"] == "unchecked"


def test_guard_off_reports_off():
    _need("cumulene-efa")
    atoms = dense_cluster(30)
    atoms.calc = EFACalculator("cumulene-efa", guard="off")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)
        atoms.get_potential_energy()
    assert atoms.calc.results["extrapolation"] == {"status": "off", "reasons": []}


def test_envelope_round_trip_and_margins():
    rng = np.random.default_rng(1)
    frames = [cumulene(5, 90.0) for _ in range(4)]
    for a in frames:
        a.positions += rng.normal(scale=0.02, size=a.positions.shape)
    env = Envelope.from_structures([a.numbers for a in frames], [a.positions for a in frames],
                                   [-100.0, -100.5, -99.8, -100.2], cutoff=4.0)
    assert Envelope.from_dict(json.loads(json.dumps(env.to_dict()))) == env
    assert env.num_atoms == [9, 9] and env.elements == ["H", "C"]
    assert env.check_structure(frames[0].numbers, frames[0].positions) == []
    lo, hi = env.energy_bounds()
    assert env.check_energy((lo + hi) / 2) == [] and env.check_energy(hi + 0.01) and env.check_energy(float("nan"))


# ---------------------------------------------------------------- calculator arguments, single atom
@pytest.mark.parametrize("kwargs, name", [({"dtyp": "float64"}, "dtyp"), ({"device_count": 4}, "device_count")])
def test_unknown_keyword_is_a_type_error_naming_it(kwargs, name):
    _need("cumulene-efa")
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
        EFACalculator("cumulene-efa", **kwargs)


@pytest.mark.parametrize("kwargs, match", [({"dtype": "float16"}, "dtype='float16'"), ({"guard": "loud"}, "guard='loud'"),
                                           ({"skin": -1.0}, "skin=-1.0")])
def test_bad_calculator_values_name_argument_and_range(kwargs, match):
    _need("cumulene-efa")
    with pytest.raises(ValueError, match=match):
        EFACalculator("cumulene-efa", **kwargs)


def test_single_atom_is_the_isolated_atom():
    """E(single atom) = the model's isolated-atom energy, F = 0.  With the local model the
    isolated-atom energies are also what two atoms far beyond the cutoff sum to."""
    _need("cumulene-local")
    calc = EFACalculator("cumulene-local", guard="off")
    e = {}
    for sym in ("C", "H"):
        atoms = Atoms(sym, [[0.3, -0.2, 1.0]])
        atoms.calc = calc
        e[sym] = atoms.get_potential_energy()
        np.testing.assert_array_equal(atoms.get_forces(), np.zeros((1, 3)))
        assert np.isfinite(e[sym])
    pair = Atoms("CH", [[0, 0, 0], [0, 0, 30.0]])
    pair.calc = EFACalculator("cumulene-local", guard="off")
    assert pair.get_potential_energy() == pytest.approx(e["C"] + e["H"], abs=1e-4)
    np.testing.assert_allclose(pair.get_forces(), 0.0, atol=1e-6)
    batch = calc.evaluate_batch([Atoms("C", [[0, 0, 0]]), Atoms("H", [[1, 2, 3]])])
    assert [b["energy"] for b in batch] == pytest.approx([e["C"], e["H"]], abs=1e-5)


def test_single_atom_efa_model_warns_about_atom_count():
    _need("cumulene-efa")
    atoms = Atoms("C", [[0, 0, 0]])
    atoms.calc = EFACalculator("cumulene-efa")
    with pytest.warns(ExtrapolationWarning, match="1 atoms, the training data has 7–15"):
        e = atoms.get_potential_energy()
    assert np.isfinite(e)
    np.testing.assert_array_equal(atoms.get_forces(), np.zeros((1, 3)))
