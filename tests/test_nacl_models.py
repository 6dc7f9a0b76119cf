"""The bundled NaCl models (issue 25): periodic EFA, its local control, all_to_all and latent
Ewald, on equal terms.

Checks that the checkpoints load by name as periodic models with their block, that all four
have the same cutoff, iterations, steps, data, seed and (within 2 %) parameter count, that their model cards quote
``models/nacl_evaluation.json``, and that a held-out crystal frame is predicted close to its
LAMMPS label (an independent number: Tosi–Fumi + Ewald).  Units: eV, Å, meV/atom.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read

from efa_calc import EFACalculator, list_models
from efa_calc.checkpoint import load_checkpoint
from bundled import MODELS, bundled_model

#: bundled name -> long-range block (None: the local control)
BLOCKS = {"nacl-efa": "efa", "nacl-local": None, "nacl-all-to-all": "all_to_all", "nacl-latent-ewald": "latent_ewald"}
NAMES = tuple(BLOCKS)


def _evaluation() -> dict:
    path = MODELS / "nacl_evaluation.json"
    if not path.is_file():
        pytest.skip("models/nacl_evaluation.json missing (python models/evaluate_nacl.py)")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", NAMES)
def test_nacl_model_is_periodic_and_its_card_quotes_the_evaluation(name):
    ck = load_checkpoint(bundled_model(name))
    assert name in list_models() and ck.periodic and set(ck.species) == {"Na", "Cl"}
    assert (ck.config.long_range.kind if ck.config.long_range else None) == BLOCKS[name]
    errors = _evaluation()["models"][name]["errors"]
    card = (MODELS / name / "README.md").read_text()
    for group in ("bulk", "slab", "defect"):
        assert f"| {name} | {group} | {errors[group]['num_frames']} | {errors[group]['energy_mae_meV_atom']:.3f} |" in card


@pytest.mark.parametrize("name", [n for n in NAMES if n != "nacl-efa"])
def test_nacl_models_have_the_budget_of_nacl_efa(name):
    efa, other = (load_checkpoint(bundled_model(n)) for n in ("nacl-efa", name))
    assert efa.config.cutoff == other.config.cutoff and efa.config.num_iterations == other.config.num_iterations
    assert efa.provenance["training_steps"] == other.provenance["training_steps"]
    data = ("sha256", "num_frames", "split", "split_seed", "include")  # same file, frames and split
    assert {k: efa.provenance["data"][k] for k in data} == {k: other.provenance["data"][k] for k in data}
    assert not efa.provenance["data"].get("extra") and not other.provenance["data"].get("extra")
    budget = ("graphs_per_batch", "learning_rate", "energy_weight", "forces_weight", "stress_weight", "seed")
    assert {k: efa.provenance["training"][k] for k in budget} == {k: other.provenance["training"][k] for k in budget}
    n_efa, n_other = efa.provenance["num_parameters"], other.provenance["num_parameters"]
    assert abs(n_efa - n_other) / n_efa < 0.02, (n_efa, n_other)


@pytest.mark.parametrize("name", NAMES)
def test_nacl_model_predicts_a_held_out_crystal_near_its_lammps_label(name):
    bundled_model(name)
    path = MODELS / "data" / "nacl" / "nacl_tf_test.extxyz"
    if not path.is_file():
        pytest.skip("models/data/nacl/nacl_tf_test.extxyz missing")
    frame = next(a for a in read(path, ":") if a.info["kind"] == "crystal" and len(a) == 128)
    ref_e, ref_f = frame.get_potential_energy(), frame.get_forces()
    atoms = frame.copy()
    atoms.calc = EFACalculator(name, dtype="float64", guard="off")
    de = abs(atoms.get_potential_energy() - ref_e) / len(atoms) * 1e3
    mae = _evaluation()["models"][name]["errors"]["crystal"]
    # one frame: within 5x the crystal-group MAE (and forces within 5x), never a different scale
    assert de < 5 * mae["energy_mae_meV_atom"] + 0.5, de
    assert np.mean(np.abs(atoms.get_forces() - ref_f)) * 1e3 < 5 * mae["forces_mae_meV_A"]
    assert np.abs(ref_f).mean() > 3 * np.mean(np.abs(atoms.get_forces() - ref_f))  # learned (22 % error at 3000 steps)
