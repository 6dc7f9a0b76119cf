"""The jax MD engine (jax-md inside XLA): agreement with ASE's integrators, units and
energy shift, compilations per chunk shape and per pair-list growth, the overflow redo,
the guard, replicas, resume and settings."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase import units
from ase.io import read

pytest.importorskip("jax_md", reason="the jax engine needs the md extra: pip install 'efa-calc[md]'")

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.compile_counter import CompileCounter  # noqa: E402
from efa_calc.md_jax import JaxMD, clear_compiled, dense_pairs  # noqa: E402
from efa_calc.graphs.neighbors import neighbor_pairs  # noqa: E402
from efa_calc.structures import cumulene, sn2_complex  # noqa: E402
from md_protocols import protocols  # noqa: E402
from md_protocols.common import RunContext, SettingError, execute  # noqa: E402
from md_protocols.dynamics import initial_velocities, run_dynamics  # noqa: E402


def _log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_dense_pairs_match_the_host_neighbour_list():
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 6, size=(13, 3))
    dst, src = neighbor_pairs(pos, 4.0)
    d, s, mask, count = dense_pairs(jnp.asarray(pos), 4.0, len(dst) + 7)
    assert int(count) == len(dst) and int(mask.sum()) == len(dst) and not bool(mask[len(dst):].any())
    np.testing.assert_array_equal(np.asarray(d)[: len(dst)], dst)
    np.testing.assert_array_equal(np.asarray(s)[: len(dst)], src)
    _, _, mask, count = dense_pairs(jnp.asarray(pos), 4.0, len(dst) - 1)  # too small: the count says so
    assert int(count) == len(dst) > int(mask.sum())


def test_float64_nve_reproduces_ase_velocity_verlet_on_c9h4():
    """Positions after 100 steps within 1e-6 Å of ASE's VelocityVerlet; energies (with the
    checkpoint's energy shift, eV) and forces (eV/Å) equal to the calculator's."""
    from ase.md.verlet import VelocityVerlet

    calc = EFACalculator("cumulene-efa", dtype="float64")
    atoms = cumulene(9, 90.0)
    atoms.calc = calc
    initial_velocities(atoms, 300.0, np.random.default_rng(0))
    ckpt = calc.checkpoints[0]
    md = JaxMD(ckpt, atoms.numbers, atoms.get_masses(), "nve", timestep_fs=0.5, dtype="float64")
    state = md.init(atoms.positions[None], atoms.get_momenta()[None])
    out1 = md.run_chunk(state, 50)
    out2 = md.run_chunk(out1.state, 50)  # two chunks: the state carries over
    VelocityVerlet(atoms, 0.5 * units.fs).run(100)
    assert out1.steps_done == out2.steps_done == 50 and not out2.overflow and out2.stop is None
    dx = np.abs(out2.records["positions"][-1, 0] - atoms.positions).max()
    assert dx < 1e-6, f"positions differ by {dx:.2e} Å after 100 steps"
    np.testing.assert_allclose(out2.records["momenta"][-1, 0], atoms.get_momenta(), atol=1e-6)
    assert abs(out2.records["epot"][-1, 0] - atoms.get_potential_energy()) < 1e-6
    assert abs(out2.records["ekin"][-1, 0] - atoms.get_kinetic_energy()) < 1e-6
    np.testing.assert_allclose(out2.records["forces"][-1, 0], atoms.get_forces(), atol=1e-6)


def _collision(atoms, rng, energy_eV=3.0):
    """Cl⁻ (atom 4) fired at the carbon of CH3Br with ``energy_eV`` of relative kinetic energy."""
    initial_velocities(atoms, 50.0, rng)
    m = atoms.get_masses()
    axis = atoms.positions[0] - atoms.positions[4]
    axis /= np.linalg.norm(axis)
    m_ion, m_mol = m[4], m.sum() - m[4]
    v_rel = np.sqrt(2 * energy_eV * (m_ion + m_mol) / (m_ion * m_mol))
    v = atoms.get_velocities()
    v[4] += v_rel * m_mol / (m_ion + m_mol) * axis
    v[[0, 1, 2, 3, 5]] -= v_rel * m_ion / (m_ion + m_mol) * axis
    atoms.set_velocities(v)


def _sn2_run(tmp_path, name, **options):
    clear_compiled()  # count this run's compilations only (chunks are otherwise shared process-wide)
    ctx = RunContext(name, {"steps": 120, "timestep_fs": 0.25, "temperature_K": 50.0, "seed": 0, "engine": "jax",
                            "extrapolation": "off"}, tmp_path / name, progress=False)
    ctx.out.mkdir()
    atoms = sn2_complex("Cl", "Br", 5.6, 1.95)
    with CompileCounter() as cc:
        res = run_dynamics(ctx, atoms, EFACalculator("sn2-efa", guard="off"), "nve", initial_velocities_fn=_collision,
                           chunk_steps=40, **options)
    return ctx, res, cc


def test_one_compilation_per_chunk_shape_and_one_per_pair_list_growth(tmp_path):
    """A run of 3 chunks (the last one partial) whose pair list starts full: the incoming
    ion overflows it, the chunk is redone with a larger capacity (one more compilation),
    and the trajectory is ASE's VelocityVerlet's from the same start: no step computed with
    a truncated list was kept."""
    from ase.md.verlet import VelocityVerlet

    atoms = sn2_complex("Cl", "Br", 5.6, 1.95)
    start_pairs = len(neighbor_pairs(atoms.positions, 5.0)[0])
    ctx, res, cc = _sn2_run(tmp_path, "tight", capacity=start_pairs)
    chunk_compiles = [n for n in cc.names if "md_chunk" in n]
    assert res["pair_capacity_growths"] >= 1 and res["pair_capacity"] > start_pairs
    assert len(chunk_compiles) == 1 + res["pair_capacity_growths"], cc.names
    assert ctx.status == "completed" and res["steps_done"] == 120
    frames = read(tmp_path / "tight" / "trajectory.extxyz", index=":")
    assert [f.info["step"] for f in frames] == list(range(121))
    assert min(np.linalg.norm(f.positions[4] - f.positions[0]) for f in frames) < 5.0  # the ion came within the cutoff
    atoms.calc = EFACalculator("sn2-efa", guard="off")
    _collision(atoms, np.random.default_rng(0))  # the engine's replica 0 starts the same way
    VelocityVerlet(atoms, 0.25 * units.fs).run(120)
    dx = np.abs(frames[-1].positions - atoms.positions).max()
    assert dx < 1e-3, f"{dx:.2e} Å from ASE's trajectory"


def test_guard_stops_at_the_last_good_step_with_a_resumable_state(tmp_path):
    """The ion leaves at 0.2 Å/fs: beyond max_length the run stops, keeps every frame up to
    the last good step and saves the state there."""

    def fling(atoms, rng):
        initial_velocities(atoms, 300.0, rng)
        v = atoms.get_velocities()
        v[4] += [0.0, 0.0, -0.2 / units.fs]
        atoms.set_velocities(v)

    ctx = RunContext("guard", {"steps": 400, "timestep_fs": 0.5, "temperature_K": 300.0, "seed": 0,
                               "engine": "jax"}, tmp_path, progress=False)
    res = run_dynamics(ctx, sn2_complex("Cl", "Br", 8.0, 1.95), EFACalculator("sn2-efa"), "nve",
                       initial_velocities_fn=fling, chunk_steps=50)
    assert ctx.status.startswith("stopped:") and "max_length" in ctx.status, ctx.status
    frames = read(tmp_path / "trajectory.extxyz", index=":")
    assert 0 < len(frames) == res["steps_done"] + 1 < 401
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["step"] == res["steps_done"] == frames[-1].info["step"]
    with np.load(tmp_path / "state.npz") as z:
        np.testing.assert_allclose(z["positions"], frames[-1].positions, atol=1e-7)
        from efa_calc.graphs.validation import max_pair_distance

        assert max_pair_distance(z["positions"]) <= 20.0  # the saved state is inside the valid range


@pytest.mark.parametrize("thermostat", ["langevin", pytest.param("nose-hoover", marks=pytest.mark.slow)])
def test_replicas_resume_gives_the_uninterrupted_run(tmp_path, thermostat):
    """Two replicas of cumulene-nvt: one trajectory and log per replica, different
    trajectories (own velocities and noise), and split + resume equals the straight run."""
    mod = protocols()["cumulene-nvt"]
    common = dict(engine="jax", replicas=2, thermostat=thermostat, n_carbons=5, progress=False)
    full = execute(mod, tmp_path / "full", steps=30, **common)
    execute(mod, tmp_path / "split", steps=12, **common)
    s = execute(mod, tmp_path / "split", steps=30, resume=True, **common)
    assert full["status"] == s["status"] == "completed" and s["results"]["replicas"] == 2
    traj = {}
    for run in ("full", "split"):
        for r in range(2):
            d = tmp_path / run / f"replica_{r:03d}"
            assert [int(x["step"]) for x in _log(d / "log.csv")] == list(range(31))
            frames = read(d / "trajectory.extxyz", index=":")
            assert [f.info["step"] for f in frames] == list(range(31))
            traj[run, r] = np.array([f.positions for f in frames])
    for r in range(2):
        np.testing.assert_allclose(traj["split", r], traj["full", r], atol=1e-6)
    assert np.abs(traj["full", 0][-1] - traj["full", 1][-1]).max() > 1e-3
    if thermostat == "nose-hoover":
        assert "econs_eV" in _log(tmp_path / "full" / "replica_000" / "log.csv")[0]


def test_engine_settings_are_checked_before_any_work(tmp_path):
    mod = protocols()["cumulene-nvt"]
    with pytest.raises(SettingError, match="bussi.*jax engine"):
        execute(mod, tmp_path / "a", engine="jax", thermostat="bussi", progress=False)
    with pytest.raises(SettingError, match="replicas.*--engine jax"):
        execute(mod, tmp_path / "b", replicas=4, progress=False)
    with pytest.raises(SettingError, match="engine"):
        execute(mod, tmp_path / "c", engine="lammps", progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_killed_jax_run_resumes_without_lost_or_duplicated_frames(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "md_protocols.cli", "run", "cumulene-nvt", "--engine", "jax", "--replicas", "2",
           "--steps", "400", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=repo, start_new_session=True)
    log = out / "replica_001" / "log.csv"
    deadline = time.time() + 900
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) > 150 and proc.poll() is None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 150 < len(_log(log)) < 401, "the run was not killed mid-way"
    r = subprocess.run(cmd + ["--resume"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for rep in ("replica_000", "replica_001"):
        assert [int(x["step"]) for x in _log(out / rep / "log.csv")] == list(range(401))
        frames = read(out / rep / "trajectory.extxyz", index=":")
        assert [f.info["step"] for f in frames] == list(range(401))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["results"]["replicas"] == 2


@pytest.mark.slow
def test_nose_hoover_conserves_its_extended_energy(tmp_path):
    s = execute(protocols()["cumulene-nvt"], tmp_path / "nh", engine="jax", thermostat="nose-hoover", steps=1000,
                dtype="float64", progress=False)
    rows = _log(tmp_path / "nh" / "log.csv")
    econs = np.array([float(r["econs_eV"]) for r in rows])
    temps = np.array([float(r["temperature_K"]) for r in rows])
    assert s["status"] == "completed" and np.abs(econs - econs[0]).max() < 5e-3
    assert 150 < temps[200:].mean() < 450
