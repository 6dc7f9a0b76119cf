"""The generic protocols on a user's structure file, the efa-md argument checks (every bad
value exits non-zero naming the argument, before any work, leaving nothing behind), the
per-protocol --help, and the MD stop when a structure leaves the training envelope."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from efa_calc import list_models
from efa_calc.checkpoint import write_config
from efa_calc.models import resolve_model
from efa_calc.structures import cumulene, sn2_complex
from md_protocols import protocols
from md_protocols.cli import main
from md_protocols.common import SettingError, execute


def _need(name):
    if name not in list_models():
        pytest.skip(f"{name} is not bundled")


@pytest.fixture
def sn2_xyz(tmp_path) -> Path:
    path = tmp_path / "complex.xyz"
    write(path, sn2_complex("Cl", "Br", 3.3, 1.95), format="xyz")
    return path


def _log_steps(path: Path) -> list[int]:
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_nvt_on_a_user_file_resumes_and_writes_the_sn2_nvt_outputs(tmp_path, sn2_xyz):
    _need("sn2-efa")
    out = tmp_path / "D"
    assert main(["run", "nvt", "--structure", str(sn2_xyz), "--model", "sn2-efa", "--steps", "30",
                 "--out", str(out), "--quiet"]) == 0
    assert main(["run", "nvt", "--structure", str(sn2_xyz), "--model", "sn2-efa", "--steps", "50",
                 "--out", str(out), "--quiet", "--resume"]) == 0
    assert _log_steps(out / "log.csv") == list(range(51))
    assert [a.info["step"] for a in read(out / "trajectory.extxyz", ":")] == list(range(51))
    ref = execute(protocols()["sn2-nvt"], tmp_path / "ref", steps=5, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["structure"] == str(sn2_xyz) and s["model"] == "sn2-efa"
    # the generic protocol's own settings: the structure file and the output thinning
    assert set(ref) - {"nucleophile", "leaving_group"} == set(s) - {"structure", "write_every", "log_every"}
    assert set(ref["results"]) == set(s["results"])


@pytest.mark.slow  # ~130 s on 2 cores: three protocols end to end
def test_nve_optimize_and_vibrations_on_a_user_file(tmp_path, sn2_xyz):
    _need("sn2-efa")
    s = execute(protocols()["nve"], tmp_path / "nve", structure=str(sn2_xyz), model="sn2-efa", steps=20,
                progress=False)
    assert s["status"] == "completed" and "drift_eV_per_atom_per_ps" in s["results"]
    s = execute(protocols()["optimize"], tmp_path / "opt", structure=str(sn2_xyz), model="sn2-efa", fmax=0.05,
                progress=False)
    assert s["results"]["converged"] and s["results"]["max_force_eV_A"] <= 0.05
    assert s["results"]["extrapolation"]["status"] == "inside"
    assert (tmp_path / "opt" / "optimization.png").is_file()
    s = execute(protocols()["vibrations"], tmp_path / "vib", structure=str(tmp_path / "opt" / "optimized.extxyz"),
                model="sn2-efa", progress=False)
    freqs = np.array(s["results"]["frequencies_cm-1"])
    # 3N = 18 modes: 6 translations/rotations plus the soft ion–molecule bend of the
    # symmetric (collinear Cl···C–Br) complex below 50 cm⁻¹; C–H stretches near 3000 cm⁻¹
    assert len(freqs) == 18 and s["results"]["near_zero_modes"] >= 5 and np.sum(np.abs(freqs) < 50) in (6, 7, 8)
    assert 2900 < freqs[-1] < 3500
    assert (tmp_path / "vib" / "spectrum.png").is_file()


def test_torsion_scan_on_a_user_cumulene_finds_the_c9h4_minimum(tmp_path):
    _need("cumulene-efa")
    from efa_calc.structures import cumulene_dihedral_atoms

    atoms = cumulene(9, 90.0)
    path = tmp_path / "c9h4.extxyz"
    write(path, atoms)
    i, j, k, l = cumulene_dihedral_atoms(atoms)
    s = execute(protocols()["torsion-scan"], tmp_path / "scan", structure=str(path), model="cumulene-efa",
                dihedral=f"{i},{j},{k},{l}", step_deg=30.0, fmax=0.1, progress=False)
    assert abs(s["results"]["minimum_dihedral_deg"] - 90.0) <= 30.0
    assert (tmp_path / "scan" / "scan.csv").is_file() and (tmp_path / "scan" / "torsion_scan.png").is_file()


def test_torsion_scan_group_is_the_k_side_of_the_bond():
    from md_protocols.torsion_scan import moving_group

    atoms = sn2_complex("Cl", "Br", 3.3, 1.95)  # C0 H1 H2 H3 Cl4 Br5; C–Br bonded
    assert moving_group(atoms, 0, 5) == [5]
    assert moving_group(atoms, 5, 0) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no chain of bonds"):
        moving_group(atoms, 0, 4)  # the ion is not bonded
    chain = cumulene(9, 90.0)  # C0..C8, H9 H10 on C0, H11 H12 on C8: the C0⋯C8 axis rotates C8's CH2
    assert moving_group(chain, 0, 8) == [8, 11, 12]


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("args, names", [
    (["--steps", "-5"], "--steps"),
    (["--steps", "2.5"], "--steps"),
    (["--timestep", "-1"], "--timestep"),
    (["--temperature", "-300"], "--temperature"),
    (["--thermostat", "warm"], "--thermostat"),
    (["--dtype", "float16"], "--dtype"),
    (["--seed", "-1"], "--seed"),
    (["--model", "no-such-model"], "--model"),
    (["--set", "n_carbons=0"], "--n-carbons"),
    (["--set", "structure=my.xyz"], "structure"),
    (["--set", "nonsense"], "--set"),
])
def test_bad_arguments_exit_nonzero_naming_the_argument(tmp_path, capsys, args, names):
    out = tmp_path / "run"
    assert main(["run", "cumulene-nvt", "--out", str(out), "--quiet", *args]) != 0
    err = capsys.readouterr().err
    assert names in err and "error" in err, err
    assert not out.exists()  # nothing left behind


def test_unwritable_out_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "cumulene-nvt", "--out", str(blocker / "run"), "--quiet", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot write there" in err and "Traceback" not in err


@pytest.mark.parametrize("args, names", [
    ([], "--structure"),
    (["--structure", "missing.xyz"], "--structure"),
    (["--structure", "{xyz}", "--dihedral", "0,1,2"], "--dihedral"),
    (["--structure", "{xyz}", "--dihedral", "0,1,2,99"], "--dihedral"),
    (["--structure", "{xyz}", "--start-deg", "90", "--stop-deg", "0", "--dihedral", "1,0,5,4"], "--stop-deg"),
])
def test_generic_protocol_arguments(tmp_path, capsys, sn2_xyz, args, names):
    args = [a.replace("{xyz}", str(sn2_xyz)) for a in args]
    out = tmp_path / "run"
    assert main(["run", "torsion-scan", "--model", "sn2-efa", "--out", str(out), *args]) == 2
    assert names in capsys.readouterr().err
    assert not out.exists()


def test_structure_with_unknown_elements_or_pbc_is_rejected(tmp_path):
    _need("sn2-efa")
    from ase import Atoms

    write(tmp_path / "water.xyz", Atoms("OH2", [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), format="xyz")
    with pytest.raises(SettingError, match="element\\(s\\) O unknown to model 'sn2-efa'"):
        execute(protocols()["nvt"], tmp_path / "x", structure=str(tmp_path / "water.xyz"), model="sn2-efa")
    periodic = sn2_complex("Cl", "Br", 3.3, 1.95)
    periodic.cell = [20, 20, 20]
    periodic.pbc = True
    write(tmp_path / "pbc.extxyz", periodic)
    with pytest.raises(SettingError, match="periodic"):
        execute(protocols()["nvt"], tmp_path / "y", structure=str(tmp_path / "pbc.extxyz"), model="sn2-efa")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_failed_run_leaves_nothing_behind(tmp_path, monkeypatch):
    _need("cumulene-efa")
    mod = protocols()["cumulene-nvt"]

    def boom(ctx):
        ctx.path("partial.txt").write_text("half")
        raise RuntimeError("boom")

    monkeypatch.setattr(mod, "run", boom)
    with pytest.raises(RuntimeError):
        execute(mod, tmp_path / "gone", steps=2, progress=False)
    assert not (tmp_path / "gone").exists()


def test_protocol_help_lists_settings_with_defaults_and_units(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "cumulene-nvt", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for piece in ("--timestep", "default 0.5 fs", "--temperature", "default 300.0 K", "--n-carbons", "default 9",
                  "--thermostat", "langevin, bussi, nose-hoover"):
        assert piece in text, piece
    with pytest.raises(SystemExit):
        main(["run", "torsion-scan", "--help"])
    text = capsys.readouterr().out
    assert "--dihedral" in text and "required" in text and "--structure" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    from efa_calc import __version__

    assert __version__ in capsys.readouterr().out


# ---------------------------------------------------------------- the envelope stops MD, resumably
def test_md_stops_resumably_when_leaving_the_envelope(tmp_path, sn2_xyz):
    """A copy of sn2-efa whose envelope is tightened to just below the start's C–H distances:
    thermal motion leaves it within a few steps; the run stops with a message, its state is
    the last step inside, and --resume with guard=warn completes the run."""
    _need("sn2-efa")
    model = tmp_path / "tight"
    shutil.copytree(resolve_model("sn2-efa"), model)
    meta = json.loads((model / "config.json").read_text())
    atoms = read(sn2_xyz)
    d_ch = min(atoms.get_distance(0, h) for h in (1, 2, 3))
    meta["envelope"]["min_distance"]["H-C"] = d_ch / 0.85 * 0.999  # start inside, by 0.1 %
    write_config(model, meta)
    out = tmp_path / "run"
    common = dict(structure=str(sn2_xyz), model=str(model), temperature_K=600.0, progress=False)
    s = execute(protocols()["nvt"], out, steps=200, **common)
    assert s["status"].startswith("stopped: the structure left the model's training envelope")
    assert "H–C distance" in s["status"] and "--set guard=warn" in s["status"]
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == s["results"]["steps_done"] == _log_steps(out / "log.csv")[-1] < 200
    s2 = execute(protocols()["nvt"], out, steps=state["step"] + 10, resume=True, guard="warn", **common)
    assert s2["status"] == "completed"
    assert _log_steps(out / "log.csv") == list(range(state["step"] + 11))


# ---------------------------------------------------------------- one word for the guard
def test_the_former_extrapolation_setting_maps_to_guard_or_names_it(tmp_path, capsys):
    """``extrapolation=stop|warn|off`` (the former name) runs as ``guard=error|warn|off``; a
    bad value, or both given, is refused naming --guard, before any work."""
    from md_protocols.settings import guard_mode, translate_legacy

    assert [translate_legacy({"extrapolation": v})["guard"] for v in ("stop", "warn", "off")] == ["error", "warn",
                                                                                                  "off"]
    assert guard_mode({"extrapolation": "stop"}) == "error" and guard_mode({}) == "error"
    assert guard_mode({"guard": "off", "extrapolation": "stop"}) == "off"
    with pytest.raises(SettingError, match="--guard"):
        translate_legacy({"extrapolation": "error"})
    with pytest.raises(SettingError, match="only --guard"):
        translate_legacy({"extrapolation": "warn", "guard": "off"})
    assert main(["run", "cumulene-nvt", "--extrapolation", "sometimes", "--out", str(tmp_path / "x")]) == 2
    assert "--guard" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["run", "cumulene-nvt", "--guard", "stop", "--out", str(tmp_path / "y")]) == 2
    assert "allowed: one of error, warn, off" in capsys.readouterr().err
