"""Periodic MD and NPT on the ASE engine (float64, a random-parameter periodic argon model):
frames with the cell, exact resume, the MTK conserved quantity, the pressure and density
columns against independent formulas, and bad input refused before any work."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from md_protocols import protocols
from md_protocols.common import SettingError, execute
from md_protocols.engines.outputs import frames_text
from npt_model import argon_box, argon_checkpoint, write_slab


def _log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def argon(tmp_path_factory):
    root = tmp_path_factory.mktemp("argon")
    model = argon_checkpoint(root / "random-argon")
    box = root / "box.extxyz"
    write(box, argon_box(repeat=1))
    return {"model": str(model), "structure": str(box), "dtype": "float64", "progress": False}


def test_periodic_frames_are_what_ase_writes():
    rng = np.random.default_rng(1)
    atoms = argon_box(repeat=1)
    atoms.cell = atoms.cell.array + rng.normal(0, 0.3, (3, 3))
    atoms.pbc = (True, True, False)
    atoms.set_momenta(rng.normal(size=(4, 3)))
    forces, energy = rng.normal(size=(4, 3)), -1.2345678901
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    atoms.info = {"step": 7, "time_fs": 3.5}
    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    mine = frames_text(atoms.get_chemical_symbols(), atoms.positions[None], atoms.get_momenta()[None], forces[None],
                       [energy], [7], [3.5], atoms.cell.array[None], atoms.pbc)
    assert mine == buf.getvalue()


@pytest.mark.parametrize("thermostat", ["nose-hoover", "langevin"])
def test_periodic_nvt_keeps_the_cell_and_resumes_exactly(tmp_path, argon, thermostat):
    kw = dict(argon, thermostat=thermostat, temperature_K=90.0)
    execute(protocols()["nvt"], tmp_path / "one", steps=12, **kw)
    execute(protocols()["nvt"], tmp_path / "two", steps=5, **kw)
    execute(protocols()["nvt"], tmp_path / "two", steps=12, resume=True, **kw)
    for name in ("log.csv", "trajectory.extxyz"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    frames = read(tmp_path / "one" / "trajectory.extxyz", ":")
    start = read(argon["structure"])
    assert [f.info["step"] for f in frames] == list(range(13))
    assert all(f.pbc.all() and np.array_equal(f.cell.array, start.cell.array) for f in frames)
    with np.load(tmp_path / "one" / "state.npz") as z:
        assert np.array_equal(z["cell"], start.cell.array)
    rows = _log(tmp_path / "one" / "log.csv")
    mass = start.get_masses().sum() * units._amu * 1e3  # g
    assert float(rows[3]["density_g_cm3"]) == pytest.approx(mass / (start.get_volume() * 1e-24), rel=1e-7)


def _npt(argon, **kw):
    return dict(argon, temperature_K=90.0, pressure_bar=300.0, pdamp_fs=200.0, **kw)


@pytest.mark.parametrize("barostat", ["isotropic", "anisotropic"])
def test_npt_resumes_exactly_and_conserves_the_mtk_energy(tmp_path, argon, barostat):
    """An interrupted run resumed equals the uninterrupted one byte for byte (the barostat's
    chain, strain and cell momenta are in the state); the MTK conserved quantity stays
    constant while the volume and the total energy move."""
    kw = _npt(argon, barostat=barostat)
    execute(protocols()["npt"], tmp_path / "one", steps=40, **kw)
    execute(protocols()["npt"], tmp_path / "two", steps=13, **kw)
    execute(protocols()["npt"], tmp_path / "two", steps=40, resume=True, **kw)
    for name in ("log.csv", "trajectory.extxyz"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    rows = _log(tmp_path / "one" / "log.csv")
    assert list(rows[0]) == ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "econs_eV",
                             "volume_A3", "density_g_cm3", "pressure_bar"]
    col = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    assert np.ptp(col["volume_A3"]) > 0.1  # the cell moves (A^3)
    assert np.ptp(col["econs_eV"]) < 1e-3 * np.ptp(col["etot_eV"])
    frames = read(tmp_path / "one" / "trajectory.extxyz", ":")
    assert np.allclose([f.get_volume() for f in frames], col["volume_A3"], rtol=1e-7)
    if barostat == "isotropic":  # the cell keeps its shape: every frame is the start scaled
        h0 = frames[0].cell.array
        assert all(np.allclose(f.cell.array / f.cell.array[0, 0], h0 / h0[0, 0], atol=1e-12) for f in frames)


def test_npt_pressure_column_is_the_virial_pressure_of_the_frame(tmp_path, argon):
    """pressure_bar of a logged step equals −tr(σ)/3 of ASE's stress with the ideal-gas
    term (get_stress(include_ideal_gas=True)) evaluated afresh on the written frame."""
    from efa_calc import EFACalculator

    s = execute(protocols()["npt"], tmp_path / "p", steps=6, isolated_energy_eV=0.05, molecule_atoms=1,
                **_npt(argon))
    frame = read(tmp_path / "p" / "trajectory.extxyz", index=5)
    row = _log(tmp_path / "p" / "log.csv")[5]
    atoms = frame.copy()
    atoms.set_momenta(frame.get_momenta())
    atoms.calc = EFACalculator(argon["model"], dtype="float64", guard="off")
    p = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.bar
    assert float(row["pressure_bar"]) == pytest.approx(p, rel=1e-6)
    res = s["results"]
    n = len(frame)
    epot = np.mean([float(r["epot_eV"]) for r in _log(tmp_path / "p" / "log.csv")[1:]])
    assert res["mean_epot_eV_per_atom"] == pytest.approx(epot / n, rel=1e-9)
    dh = 0.05 - epot / n + units.kB * 90.0  # eV per atom ("molecule" of one atom)
    assert res["heat_of_vaporization_kJ_mol"] == pytest.approx(dh * 96.485332, rel=1e-6)
    assert s["plots"] == ["dynamics.png", "volume.png"]


def test_killed_npt_run_resumes_exactly(tmp_path, argon):
    """SIGKILL mid-run, --resume: the log and trajectory equal an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    steps = 300
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "md_protocols.cli", "run", "npt", "--structure", argon["structure"], "--model",
           argon["model"], "--dtype", "float64", "--temperature", "90", "--pressure", "300", "--pdamp", "1000",
           "--steps", str(steps), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=repo, start_new_session=True)
    log = out / "log.csv"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > 80:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 80 < len(_log(log)) < steps + 1, "the run was not killed mid-way"
    r = subprocess.run(cmd + ["--resume"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    execute(protocols()["npt"], tmp_path / "whole", steps=steps, **{**_npt(argon), "pdamp_fs": 1000.0})
    for name in ("log.csv", "trajectory.extxyz"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert [int(x["step"]) for x in _log(log)] == list(range(steps + 1))


def test_box_guard_stops_an_expanding_gas_resumably(tmp_path, argon):
    """Four weakly bound atoms at 300 bar and 90 K are a near-ideal gas whose volume swings
    past 2 × the start: the box guard stops the run at the first step outside, keeping
    every frame before it, with the state at the last good step."""
    s = execute(protocols()["npt"], tmp_path / "g", steps=400, **_npt(argon))
    rows = _log(tmp_path / "g" / "log.csv")
    v0, last = float(rows[0]["volume_A3"]), int(rows[-1]["step"])
    assert s["status"].startswith("stopped: the cell volume") and "[0.5, 2]" in s["status"]
    assert f"at step {last + 1}" in s["status"] and last < 400
    assert all(0.5 * v0 <= float(r["volume_A3"]) <= 2 * v0 for r in rows)
    assert json.loads((tmp_path / "g" / "state.json").read_text())["step"] == last
    assert len(read(tmp_path / "g" / "trajectory.extxyz", ":")) == last + 1


@pytest.mark.parametrize("change, match", [
    ({"pdamp_fs": 0.0}, "--pdamp"), ({"tdamp_fs": -5.0}, "--tdamp"), ({"timestep_fs": 0.0}, "--timestep"),
    ({"barostat": "flexible"}, "--barostat"), ({"engine": "jax"}, "--engine ase"),
    ({"nonperiodic": True}, "periodic in all three directions"),
])
def test_bad_npt_input_is_refused_before_any_work(tmp_path, argon, change, match):
    kw = _npt(argon)
    if change.pop("nonperiodic", False):
        kw["structure"] = write_slab(tmp_path, argon["structure"])
    with pytest.raises(SettingError, match=match):
        execute(protocols()["npt"], tmp_path / "x", steps=3, **{**kw, **change})
    assert not (tmp_path / "x").exists()


def test_run_dynamics_refuses_npt_without_a_cell_or_damping(tmp_path, argon):
    from efa_calc import EFACalculator
    from md_protocols.common import RunContext
    from md_protocols.dynamics import run_dynamics

    ctx = RunContext("npt", {"steps": 2, "timestep_fs": 1.0, "temperature_K": 90.0, "seed": 0}, tmp_path)
    calc = EFACalculator(argon["model"], dtype="float64")
    npt = {"pressure_bar": 1.0, "tdamp_fs": 100.0, "pdamp_fs": 0.0, "barostat": "isotropic"}
    with pytest.raises(SettingError, match="pdamp_fs"):
        run_dynamics(ctx, read(argon["structure"]), calc, "npt", npt=npt)
    molecule = read(argon["structure"])
    molecule.pbc = False
    with pytest.raises(SettingError, match="periodic in all three"):
        run_dynamics(ctx, molecule, calc, "npt", npt={**npt, "pdamp_fs": 1000.0})


def test_jax_engine_refuses_a_cell_below_twice_the_cutoff_naming_the_ase_engine(tmp_path, argon):
    """The 4-atom box (5.6 Å) is below 2 × 4 Å: the jax engine's minimum-image pair list
    cannot hold it (larger cells run there: tests/test_npt_jax.py)."""
    pytest.importorskip("jax_md")
    with pytest.raises(SettingError, match="5.600 Å is not above twice the model's cutoff.*use --engine ase"):
        execute(protocols()["nvt"], tmp_path / "x", steps=3, engine="jax", **argon)
    assert not (tmp_path / "x").exists()


def test_optimize_relax_cell_reaches_zero_stress(tmp_path, argon):
    """FrechetCellFilter: the relaxed cell's stress × volume is below fmax (eV)."""
    atoms = argon_box(repeat=1, a=4.2)  # compressed: the random model pushes the cell out or in
    write(tmp_path / "c.extxyz", atoms)
    s = execute(protocols()["optimize"], tmp_path / "o", **{**argon, "structure": str(tmp_path / "c.extxyz")},
                relax_cell=True, fmax=1e-3, max_steps=300)
    res = s["results"]
    assert res["converged"]
    assert np.abs(np.array(res["stress_eV_A3"])).max() * res["volume_A3"] < 1e-3 * 1.01
    assert res["volume_A3"] != pytest.approx(atoms.get_volume(), rel=1e-3)
    with pytest.raises(SettingError, match="--relax-cell"):
        molecule = atoms.copy()
        molecule.pbc = False
        write(tmp_path / "m.xyz", molecule)
        execute(protocols()["optimize"], tmp_path / "m", **{**argon, "structure": str(tmp_path / "m.xyz")},
                relax_cell=True)


def test_a_state_json_one_checkpoint_behind_does_not_mix_steps(tmp_path):
    """A kill between the npz and the json write leaves state.json one checkpoint behind;
    the fields (step, RNG, thermostat) come from the npz, so they match its arrays."""
    from md_protocols.engines.outputs import load_state, save_state

    numbers = np.array([18, 18])
    save_state(tmp_path, {"positions": np.zeros((2, 3)), "numbers": numbers}, {"step": 50, "thermostat": {"eta": [1.0]}})
    behind = (tmp_path / "state.json").read_text()
    save_state(tmp_path, {"positions": np.ones((2, 3)), "numbers": numbers}, {"step": 100, "thermostat": {"eta": [2.0]}})
    (tmp_path / "state.json").write_text(behind)
    fields, arrays = load_state(tmp_path, numbers)
    assert fields["step"] == 100 and fields["thermostat"] == {"eta": [2.0]} and arrays["positions"][0, 0] == 1.0
    assert "_fields" not in arrays


@pytest.mark.slow
@pytest.mark.parametrize("pressure_bar", [200.0, 600.0])
def test_npt_of_a_dilute_gas_gives_its_analytic_mean_volume(tmp_path, pressure_bar):
    """The ASE engine's NPT of 32 atoms of a dilute, weak Lennard-Jones gas (σ = 1 Å,
    ε = 5 meV: a second virial coefficient of ~2 Å³ per atom against ~60–200 Å³ per atom)
    samples exp(−β(H + PV)), whose mean volume is the ideal gas's ⟨V⟩ = (N + 1) k_B T / P
    to within 3 %; higher pressure, smaller box.  Tolerance 12 % (about four standard
    errors of ~30 barostat periods)."""
    from ase.calculators.lj import LennardJones

    from md_protocols.common import RunContext
    from md_protocols.dynamics import run_dynamics

    n, temperature = 32, 90.0
    expected = (n + 1) * units.kB * temperature / (pressure_bar * units.bar)  # Å^3
    atoms = argon_box(repeat=2, a=(expected / 8) ** (1 / 3))
    calc = LennardJones(sigma=1.0, epsilon=0.005, rc=3.0, smooth=True)
    calc.parameters["strict"], calc.max_length = True, np.inf  # what the engine asks of a calculator
    settings = {"steps": 3000, "timestep_fs": 2.0, "temperature_K": temperature, "seed": 1, "guard": "off"}
    ctx = RunContext("npt", settings, tmp_path, progress=False)
    npt = {"pressure_bar": pressure_bar, "tdamp_fs": 100.0, "pdamp_fs": 200.0, "barostat": "isotropic"}
    run_dynamics(ctx, atoms, calc, "npt", npt=npt, write_every=100)
    assert ctx.status == "completed"
    volumes = [float(r["volume_A3"]) for r in _log(tmp_path / "log.csv")[500:]]
    assert np.mean(volumes) == pytest.approx(expected, rel=0.12)


def test_write_every_and_log_every_thin_the_outputs_and_resume(tmp_path, argon):
    """--write-every 3 --log-every 2: frames at steps 0, 3, 6, log rows at 0, 2, 4, 6, 8; a
    resumed run continues the same grid (no frame lost or doubled)."""
    kw = {**_npt(argon), "write_every": 3, "log_every": 2}
    execute(protocols()["npt"], tmp_path / "t", steps=4, **kw)
    execute(protocols()["npt"], tmp_path / "t", steps=8, resume=True, **kw)
    assert [int(r["step"]) for r in _log(tmp_path / "t" / "log.csv")] == [0, 2, 4, 6, 8]
    frames = read(tmp_path / "t" / "trajectory.extxyz", index=":")
    assert len(frames) == 3 and all(f.cell.volume > 0 for f in frames)
