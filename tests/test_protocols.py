"""Every protocol end to end on a tiny setting, plus the acceptance physics:
energy conservation, exact resume (also after a kill), torsion barrier, phonopy vs ASE
finite differences, NEB convergence, and the blow-up guard."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from efa_calc import list_models, save_checkpoint
from md_protocols import protocols
from md_protocols.common import execute

REPO = Path(__file__).resolve().parents[1]


def _model(name: str, reference: str, reference_checkpoint, tmp_path_factory) -> str:
    """The bundled model if it exists, else the reference checkpoint converted to our format."""
    if name in list_models():
        return name
    path = tmp_path_factory.mktemp("models") / name
    save_checkpoint(reference_checkpoint(reference), path)
    return str(path)


@pytest.fixture(scope="module")
def cumulene_model(request, tmp_path_factory):
    if "cumulene-efa" in list_models():
        return "cumulene-efa"
    return _model("cumulene-efa", "cumulene_efa", request.getfixturevalue("reference_checkpoint"), tmp_path_factory)


@pytest.fixture(scope="module")
def sn2_model(request, tmp_path_factory):
    if "sn2-efa" in list_models():
        return "sn2-efa"
    return _model("sn2-efa", "sn2_efa", request.getfixturevalue("reference_checkpoint"), tmp_path_factory)


def _log(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_list_names_every_protocol():
    out = subprocess.run([sys.executable, "-m", "md_protocols.cli", "list"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for name in ("cumulene-nve", "cumulene-nvt", "cumulene-optimize", "cumulene-torsion-scan", "cumulene-vibrations",
                 "sn2-nve", "sn2-nvt", "sn2-neb"):
        assert name in out.stdout
    assert len(out.stdout.strip().splitlines()) == len(protocols())


def test_cumulene_nve_conserves_energy(tmp_path, cumulene_model):
    s = execute(protocols()["cumulene-nve"], tmp_path / "nve", model=cumulene_model, steps=200, dtype="float64",
                progress=False)
    assert s["status"] == "completed"
    for key in ("protocol", "model", "steps", "timestep_fs", "temperature_K", "dtype", "seed", "versions",
                "wall_time_s", "trajectory", "log", "plots"):
        assert key in s
    r = s["results"]
    assert r["max_energy_deviation_meV_per_atom"] < 1.0
    assert abs(r["drift_eV_per_atom_per_ps"]) < 1e-3
    rows = _log(tmp_path / "nve" / s["log"])
    assert list(rows[0])[:6] == ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
    assert [int(x["step"]) for x in rows] == list(range(201))
    frames = read(tmp_path / "nve" / s["trajectory"], index=":")
    assert len(frames) == 201 and frames[-1].info["step"] == 200
    assert _is_png(tmp_path / "nve" / "dynamics.png")


def _positions(run_dir: Path) -> np.ndarray:
    return np.array([a.positions for a in read(run_dir / "trajectory.extxyz", index=":")])


@pytest.mark.parametrize("thermostat", ["langevin", "bussi", "nose-hoover"])
def test_nvt_resume_gives_the_uninterrupted_run(tmp_path, cumulene_model, thermostat):
    mod = protocols()["cumulene-nvt"]
    common = dict(model=cumulene_model, thermostat=thermostat, progress=False)
    execute(mod, tmp_path / "full", steps=60, **common)
    execute(mod, tmp_path / "split", steps=30, **common)
    s = execute(mod, tmp_path / "split", steps=60, resume=True, **common)
    assert s["status"] == "completed" and s["results"]["steps_done"] == 60
    assert [int(r["step"]) for r in _log(tmp_path / "split" / "log.csv")] == list(range(61))
    np.testing.assert_allclose(_positions(tmp_path / "split"), _positions(tmp_path / "full"), atol=1e-6)
    with pytest.raises(FileExistsError, match="--resume"):
        execute(mod, tmp_path / "full", steps=60, **common)


def test_killed_run_resumes_without_lost_or_duplicated_frames(tmp_path, cumulene_model):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "md_protocols.cli", "run", "cumulene-nvt", "--model", cumulene_model,
           "--steps", "400", "--out", str(out), "--quiet", "--set", "n_carbons=9"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    log = out / "log.csv"
    deadline = time.time() + 600
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) > 130 and proc.poll() is None:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rows_before = len(_log(log))
    assert 100 < rows_before < 401, "the run was not killed mid-way"
    r = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [int(x["step"]) for x in _log(log)]
    assert steps == list(range(401))
    frames = read(out / "trajectory.extxyz", index=":")
    assert [f.info["step"] for f in frames] == list(range(401))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 400


def test_optimize(tmp_path, cumulene_model):
    s = execute(protocols()["cumulene-optimize"], tmp_path / "opt", model=cumulene_model, optimizer="LBFGS",
                fmax=0.02, progress=False)
    r = s["results"]
    assert r["converged"] and r["max_force_eV_A"] <= 0.02 and r["steps"] > 0
    assert abs(r["final_dihedral_deg"] - 90.0) < 10.0  # C9H4: perpendicular ground state
    assert _is_png(tmp_path / "opt" / "optimization.png")


def test_torsion_scan_c9h4_minimum_and_barrier(tmp_path, cumulene_model):
    s = execute(protocols()["cumulene-torsion-scan"], tmp_path / "scan", model=cumulene_model, step_deg=30.0,
                progress=False)
    r = s["results"]
    assert abs(r["minimum_dihedral_deg"] - 90.0) <= 10.0
    assert r["barrier_eV"] > 0.3
    rows = _log(tmp_path / "scan" / s["scan"])
    assert list(rows[0])[:2] == ["dihedral_deg", "energy_eV"] and len(rows) == 7
    e = np.array([float(x["energy_eV"]) for x in rows])
    assert abs(e[0] - e[-1]) < 0.02  # 0° and 180° are the same structure
    assert _is_png(tmp_path / "scan" / "torsion_scan.png")


def test_vibrations_phonopy_matches_ase_finite_differences(tmp_path, cumulene_model):
    from ase.io import read as ase_read
    from ase.vibrations import Vibrations

    from md_protocols.common import make_calculator

    s = execute(protocols()["cumulene-vibrations"], tmp_path / "vib", model=cumulene_model, progress=False)
    r = s["results"]
    freqs = np.array(r["frequencies_cm-1"])
    assert r["near_zero_modes"] == 6  # C9H4 is not linear: 3 translations + 3 rotations
    atoms = ase_read(tmp_path / "vib" / "optimized.extxyz")
    atoms.calc = make_calculator(cumulene_model, "float64")
    vib = Vibrations(atoms, name=str(tmp_path / "ase-vib"), delta=0.01, nfree=2)
    vib.run()
    ase_freqs = np.sort(np.real(vib.get_frequencies()) - np.imag(vib.get_frequencies()))
    high = freqs > 100.0
    assert high.sum() == len(freqs) - 6 - np.sum((freqs > 15.0) & (freqs <= 100.0))
    np.testing.assert_allclose(freqs[high], ase_freqs[high], atol=2.0)
    assert _is_png(tmp_path / "vib" / "spectrum.png")


def test_sn2_nve_collision_reacts(tmp_path, sn2_model):
    s = execute(protocols()["sn2-nve"], tmp_path / "sn2", model=sn2_model, steps=700, progress=False)
    r = s["results"]
    assert s["status"] == "completed"
    assert r["reacted"], r
    assert r["max_energy_deviation_meV_per_atom"] < 5.0


def test_sn2_nvt_runs(tmp_path, sn2_model):
    s = execute(protocols()["sn2-nvt"], tmp_path / "nvt", model=sn2_model, steps=40, progress=False)
    assert s["status"] == "completed" and s["results"]["steps_done"] == 40
    assert len(read(tmp_path / "nvt" / "trajectory.extxyz", index=":")) == 41


def test_sn2_neb_converges_with_climbing_image(tmp_path, sn2_model):
    s = execute(protocols()["sn2-neb"], tmp_path / "neb", model=sn2_model, images=7, progress=False)
    r = s["results"]
    assert r["converged"]
    assert r["climbing_image_max_force_eV_A"] < 0.05
    assert r["barrier_eV"] > 0.0 and np.isfinite(r["reaction_energy_eV"])
    assert 1.9 < r["ts_C_X_distance_A"] < 2.9 and 1.9 < r["ts_C_Y_distance_A"] < 2.9
    assert _is_png(tmp_path / "neb" / "neb.png")


def test_blow_up_guard_stops_and_keeps_frames(tmp_path, sn2_model):
    from efa_calc.structures import sn2_complex
    from md_protocols.common import RunContext, make_calculator
    from md_protocols.dynamics import initial_velocities, run_dynamics

    ctx = RunContext("guard", {"steps": 400, "timestep_fs": 0.5, "temperature_K": 300.0, "seed": 0}, tmp_path)

    def fling(atoms, rng):  # the ion leaves at 0.2 Å/fs: it soon exceeds max_length
        from ase import units

        initial_velocities(atoms, 300.0, rng)
        v = atoms.get_velocities()
        v[4] += [0.0, 0.0, -0.2 / units.fs]  # Å/fs -> ASE velocity units
        atoms.set_velocities(v)

    atoms = sn2_complex("Cl", "Br", 8.0, 1.95)
    res = run_dynamics(ctx, atoms, make_calculator(sn2_model), "nve", initial_velocities_fn=fling)
    assert ctx.status.startswith("stopped:") and "max_length" in ctx.status
    frames = read(tmp_path / "trajectory.extxyz", index=":")
    assert 0 < len(frames) == res["steps_done"] + 1 < 401
