"""``efa-calc eval``: predictions for every frame, errors against the file's labels (equal to
the model card's test-split numbers on that split), a parity plot, --version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from efa_calc import EFACalculator, list_models, load_checkpoint
from efa_calc.cli import main
from efa_calc.data import read_dataset, split_indices, write_dataset
from efa_calc.evaluation import dataset_errors
from efa_calc.models import resolve_model

MODELS = Path(__file__).resolve().parents[1] / "models"


def _test_split(name: str, tmp_path: Path, limit: int | None = None) -> Path:
    if name not in list_models():
        pytest.skip(f"{name} is not bundled")
    from efa_calc.train import load_train_config

    cfg = load_train_config(MODELS / "configs" / f"{name}.toml")
    if not cfg.data_path.is_file():
        pytest.skip(f"training data {cfg.data_path.name} missing")
    ds = read_dataset(cfg.data_path).select(cfg.include)
    _, _, test = split_indices(len(ds), cfg.split, cfg.split_seed)
    path = tmp_path / f"{name}-test.extxyz"
    write_dataset(ds.subset(test[:limit]), path)
    return path


def test_eval_writes_predictions_errors_and_parity_plot(tmp_path, capsys):
    data = _test_split("sn2-efa", tmp_path, limit=20)
    out = tmp_path / "pred.extxyz"
    assert main(["eval", "--model", "sn2-efa", str(data), "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for piece in ("energy", "forces on Cl", "meV/Å", "parity plot"):
        assert piece in text
    frames = read(out, ":")
    assert len(frames) == 20
    calc = EFACalculator("sn2-efa")
    ref = read_dataset(data)
    for k in (0, 19):
        assert frames[k].info["EFA_energy"] == pytest.approx(frames[k].info["REF_energy"], abs=1.0)
        np.testing.assert_allclose(frames[k].arrays["REF_forces"], ref.forces[k], atol=1e-6)
        assert frames[k].info["EFA_extrapolation"] == "inside"
    metrics = json.loads((tmp_path / "pred_errors.json").read_text())
    expect = dataset_errors(calc, ref)  # the trainer's error code path
    assert metrics["energy_eV"]["mae"] == pytest.approx(expect["energy_mae_eV"], rel=1e-6)
    assert metrics["forces_eV_A"]["rmse"] == pytest.approx(expect["forces_rmse_eV_A"], rel=1e-6)
    assert set(metrics["forces_per_element_eV_A"]) <= {"H", "C", "F", "Cl", "Br"}
    assert (tmp_path / "pred_parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_without_labels_writes_predictions_only(tmp_path, capsys):
    if "cumulene-efa" not in list_models():
        pytest.skip("cumulene-efa is not bundled")
    from ase.io import write

    from efa_calc.structures import cumulene

    write(tmp_path / "plain.xyz", [cumulene(9, 90.0), cumulene(7, 90.0)], format="xyz")
    assert main(["eval", "--model", "cumulene-efa", str(tmp_path / "plain.xyz"), "--out", str(tmp_path / "p.extxyz"),
                 "--quiet"]) == 0
    assert "predictions only" in capsys.readouterr().out
    assert [len(a) for a in read(tmp_path / "p.extxyz", ":")] == [13, 11]


def test_eval_committee_writes_spreads(tmp_path):
    data = _test_split("cumulene-efa", tmp_path, limit=4)
    out = tmp_path / "c.extxyz"
    assert main(["eval", "--model", "cumulene-efa,cumulene-local", str(data), "--out", str(out), "--quiet"]) == 0
    frames = read(out, ":")
    assert all(f.info["EFA_energy_std"] > 0 and f.arrays["EFA_forces_std"].shape == (len(f), 3) for f in frames)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cumulene-efa", "sn2-efa"])
def test_eval_mae_equals_the_model_card_on_the_test_split(tmp_path, name):
    data = _test_split(name, tmp_path)
    assert main(["eval", "--model", name, str(data), "--out", str(tmp_path / "p.extxyz"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "p_errors.json").read_text())
    card = load_checkpoint(resolve_model(name), check_shapes=False).provenance["test_errors"]
    assert metrics["energy_eV"]["mae"] == pytest.approx(card["energy_mae_eV"], rel=2e-3)
    assert metrics["forces_eV_A"]["mae"] == pytest.approx(card["forces_mae_eV_A"], rel=2e-3)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    from efa_calc import __version__

    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"efa-calc {__version__}"


def test_error_metrics_report_the_signed_mean_error():
    """mean = prediction − reference averaged (a bias), next to MAE and RMSE; per atom for energies."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from efa_calc.evaluation import error_metrics

    frames, preds = [], []
    for n, offset in [(2, 0.3), (4, -0.1)]:
        a = Atoms("H" * n, positions=np.arange(3 * n, dtype=float).reshape(n, 3))
        a.calc = SinglePointCalculator(a, energy=1.0, forces=np.zeros((n, 3)))
        frames.append(a)
        preds.append({"energy": 1.0 + offset, "forces": np.full((n, 3), offset)})
    m = error_metrics(frames, preds)
    assert m["energy_eV"]["mean"] == pytest.approx(0.1) and m["energy_eV"]["mae"] == pytest.approx(0.2)
    assert m["energy_per_atom_eV"]["mean"] == pytest.approx((0.15 - 0.025) / 2)
    assert m["forces_eV_A"]["mean"] == pytest.approx((6 * 0.3 - 12 * 0.1) / 18)
