"""Periodic cells and NPT on the jax engine (float64, the random-parameter periodic argon
model of ``npt_model``, cutoff 4 Å, 32 atoms in an 11.2 Å fcc cell): the in-XLA
minimum-image model equals the calculator, periodic NVE conserves energy, jax-md's
barostat pressure is the calculator's virial pressure, NPT conserves the MTK invariant and
resumes exactly, and small cells / unsupported settings are refused before any work."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase import units
from ase.io import read, write

pytest.importorskip("jax_md", reason="the jax engine needs the md extra: pip install 'efa-calc[md]'")

from efa_calc import EFACalculator  # noqa: E402
from md_protocols import protocols  # noqa: E402
from md_protocols.common import SettingError, execute  # noqa: E402
from md_protocols.dynamics import initial_velocities  # noqa: E402
from npt_model import CUTOFF, argon_box, argon_checkpoint, write_slab  # noqa: E402


def _log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def argon(tmp_path_factory):
    root = tmp_path_factory.mktemp("argon_jax")
    model = argon_checkpoint(root / "random-argon")
    box = root / "box32.extxyz"
    write(box, argon_box(repeat=2))  # heights 11.2 Å > 2 × 4 Å
    return {"model": str(model), "structure": str(box), "dtype": "float64", "progress": False, "engine": "jax"}


def _triclinic(seed=3):
    """32 atoms in a skewed cell (heights still > 8 Å), one atom 1.3 lattice vectors outside."""
    rng = np.random.default_rng(seed)
    atoms = argon_box(repeat=2)
    atoms.positions += rng.normal(0, 0.3, atoms.positions.shape)
    atoms.set_cell(atoms.cell.array + rng.normal(0, 0.4, (3, 3)), scale_atoms=False)
    atoms.positions[0] += 1.3 * atoms.cell[0]
    return atoms


def _md(calc, atoms, ensemble="nve", **kw):
    from efa_calc.md_jax import JaxMD

    return JaxMD(calc.checkpoints[0], atoms.numbers, atoms.get_masses(), ensemble, dtype="float64", periodic=True,
                 message_passing="native", **kw)


def test_periodic_energy_forces_stress_equal_the_calculator(argon):
    """Step 0 and step 30 of a periodic NVE chunk in a triclinic cell (an atom outside it):
    energy (with the shift, eV), forces (eV/Å) and stress (eV/Å³) of the records equal
    EFACalculator's on the same structure to 1e-10."""
    calc = EFACalculator(argon["model"], dtype="float64", guard="off")
    atoms = _triclinic()
    atoms.calc = calc
    initial_velocities(atoms, 90.0, np.random.default_rng(0))
    md = _md(calc, atoms, timestep_fs=2.0)
    out = md.run_chunk(md.init(atoms.positions[None], atoms.get_momenta()[None], cells=atoms.cell.array), 30)
    assert out.steps_done == 30 and not out.overflow and out.stop is None
    ref = atoms.copy()
    ref.calc = calc
    for k in (0, 29):
        rec = {key: v[k, 0] for key, v in out.records.items()}
        ref.positions = rec["positions"]
        np.testing.assert_array_equal(rec["cell"], atoms.cell.array)
        e = ref.get_potential_energy()
        assert abs(rec["epot"] - e) <= 1e-10 * abs(e)
        np.testing.assert_allclose(rec["forces"], ref.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(rec["stress"], ref.get_stress(voigt=True), rtol=1e-10, atol=1e-16)
    assert np.abs(out.records["positions"][-1, 0] - atoms.positions).max() > 0.01  # the atoms moved


def test_periodic_nve_conserves_energy(argon):
    """200 steps of 2 fs (float64): E_pot + E_kin stays within 1e-3 of the swing of E_pot."""
    calc = EFACalculator(argon["model"], dtype="float64", guard="off")
    atoms = read(argon["structure"])
    atoms.calc = calc
    initial_velocities(atoms, 90.0, np.random.default_rng(1))
    md = _md(calc, atoms, timestep_fs=2.0)
    out = md.run_chunk(md.init(atoms.positions[None], atoms.get_momenta()[None], cells=atoms.cell.array), 200)
    epot, ekin = out.records["epot"][:, 0], out.records["ekin"][:, 0]
    assert np.ptp(epot) > 1e-3  # eV: energy moves between kinetic and potential
    assert np.ptp(epot + ekin) < 1e-3 * np.ptp(epot)


def test_jax_md_pressure_is_the_calculators_virial_pressure(argon):
    """jax-md's ``quantity.pressure`` of the energy the NPT integrator differentiates
    (:func:`efa_calc.md_jax.npt.linearised_energy`, box = cellᵀ) equals
    2E_kin/(3V) − tr(σ)/3 of the calculator's stress at the same state (1e-10 relative),
    with σ also checked against a finite difference of the energy under isotropic strain."""
    import jax
    import jax.numpy as jnp
    from jax_md import quantity

    from efa_calc.md_jax.npt import linearised_energy

    calc = EFACalculator(argon["model"], dtype="float64", guard="off")
    atoms = _triclinic(seed=7)
    atoms.calc = calc
    initial_velocities(atoms, 90.0, np.random.default_rng(2))
    md = _md(calc, atoms, "npt", timestep_fs=2.0)
    md.init(atoms.positions[None], atoms.get_momenta()[None], cells=atoms.cell.array)
    ekin, vol = atoms.get_kinetic_energy(), atoms.get_volume()
    with jax.enable_x64(True):
        energy_fn = linearised_energy(md.force_and_energy(md.capacity), md.params)
        p_jax = float(quantity.pressure(energy_fn, jnp.asarray(atoms.positions), jnp.asarray(atoms.cell.array.T),
                                        kinetic_energy=ekin))
    sigma = atoms.get_stress(voigt=False)
    p_calc = 2 * ekin / (3 * vol) - np.trace(sigma) / 3
    assert p_jax == pytest.approx(p_calc, rel=1e-10)
    assert abs(p_calc) / units.bar > 1.0  # bar: not a trivially zero pressure
    h = 1e-5  # isotropic strain: dE/dε = V tr σ
    e = []
    for s in (1 + h, 1 - h):
        a = atoms.copy()
        a.calc = calc
        a.set_cell(atoms.cell.array * s, scale_atoms=True)
        e.append(a.get_potential_energy())
    assert (e[0] - e[1]) / (2 * h) == pytest.approx(vol * np.trace(sigma), rel=1e-5)


def _npt(argon, **kw):
    return dict(argon, temperature_K=90.0, pressure_bar=300.0, pdamp_fs=200.0, **kw)


def test_npt_jax_conserves_the_invariant_and_resumes_exactly(tmp_path, argon):
    """40 steps against 20 steps then --resume to 40: byte-identical log and
    trajectory (the box and both chains are in state.npz); the MTK invariant econs_eV (with
    P V) stays constant while the volume and E_pot + E_kin move; frames carry the cell; the
    pressure column is the calculator's virial pressure of the frame."""
    kw = _npt(argon)
    execute(protocols()["npt"], tmp_path / "one", steps=40, **kw)
    execute(protocols()["npt"], tmp_path / "two", steps=20, **kw)
    s = execute(protocols()["npt"], tmp_path / "two", steps=40, resume=True, **kw)
    for name in ("log.csv", "trajectory.extxyz"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    rows = _log(tmp_path / "one" / "log.csv")
    assert list(rows[0]) == ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K", "econs_eV",
                             "volume_A3", "density_g_cm3", "pressure_bar"]
    col = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    assert np.ptp(col["volume_A3"]) > 1.0  # Å³: the box moves
    assert np.ptp(col["econs_eV"]) < 1e-3 * np.ptp(col["etot_eV"])
    frames = read(tmp_path / "one" / "trajectory.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(range(41))
    np.testing.assert_allclose([f.get_volume() for f in frames], col["volume_A3"], rtol=1e-7)
    h0 = frames[0].cell.array  # isotropic: every cell is the start scaled
    assert all(np.allclose(f.cell.array / f.cell.array[0, 0], h0 / h0[0, 0], atol=1e-12) for f in frames)
    frame = frames[30]
    atoms = frame.copy()
    atoms.set_momenta(frame.get_momenta())
    atoms.calc = EFACalculator(argon["model"], dtype="float64", guard="off")
    p = -np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.bar
    assert col["pressure_bar"][30] == pytest.approx(p, rel=1e-6)
    with np.load(tmp_path / "two" / "state.npz") as z:
        np.testing.assert_allclose(z["cell"], frames[-1].cell.array, rtol=1e-12)
        assert {"thermostat_box_position", "thermostat_barostat_chain_momentum"} <= set(z.files)
    assert s["results"]["mean_density_g_cm3"] == pytest.approx(np.mean(col["density_g_cm3"][1:]), rel=1e-6)


def test_periodic_nvt_on_the_jax_engine_keeps_the_cell(tmp_path, argon):
    s = execute(protocols()["nvt"], tmp_path / "nvt", steps=20, thermostat="langevin", temperature_K=90.0, **argon)
    assert s["status"] == "completed"
    start = read(argon["structure"])
    frames = read(tmp_path / "nvt" / "trajectory.extxyz", ":")
    assert len(frames) == 21 and all(np.array_equal(f.cell.array, start.cell.array) and f.pbc.all() for f in frames)
    rows = _log(tmp_path / "nvt" / "log.csv")
    mass = start.get_masses().sum() * units._amu * 1e3  # g
    assert float(rows[5]["density_g_cm3"]) == pytest.approx(mass / (start.get_volume() * 1e-24), rel=1e-7)


def test_a_shrinking_box_stops_at_the_cell_height_guard(argon):
    """The on-device guard: an NPT box (heights 8.4 Å) given a compressing box momentum
    stops at the first step whose smallest height is not above 2 × cutoff = 8 Å; the kept
    steps all lie above it."""
    import jax

    from efa_calc.md_jax import FLAGS
    from efa_calc.md_jax.periodic import cell_heights
    from md_protocols.engines.guards import GUARDS

    calc = EFACalculator(argon["model"], dtype="float64", guard="off")
    atoms = argon_box(repeat=2, a=4.2)
    atoms.calc = calc
    initial_velocities(atoms, 90.0, np.random.default_rng(0))
    md = _md(calc, atoms, "npt", timestep_fs=2.0, guards=[g for g in GUARDS if g.name in FLAGS])
    state = md.init(atoms.positions[None], atoms.get_momenta()[None], cells=atoms.cell.array)
    with jax.enable_x64(True):  # d(ln L)/dt = -0.1 / 100 fs: L falls below 8 Å near step 25
        state = state.set(box_momentum=-state.box_mass * 0.1 / (100 * units.fs))
    out = md.run_chunk(state, 60, stop_flags=FLAGS["cell_height"])
    assert out.stop is not None and out.stop["flags"][0] & FLAGS["cell_height"], "the box did not shrink enough"
    assert out.stop["cell_height_A"][0] <= 2 * CUTOFF
    kept = out.records["cell"][: out.steps_done, 0]
    assert 5 < out.steps_done < 59 and np.min(cell_heights(kept)) > 2 * CUTOFF


@pytest.mark.parametrize("height, fires", [(8.5, False), (8.0, True), (7.9, True), (np.nan, True)])
def test_the_cell_height_guard_means_the_same_on_host_and_device(height, fires):
    import jax.numpy as jnp

    from md_protocols.engines.guards import GUARD_BY_NAME

    g, lim = GUARD_BY_NAME["cell_height"], {"cell_height_min_A": 2 * CUTOFF}
    assert g.fires({"cell_height_A": np.float64(height)}, lim, np) == fires
    assert bool(g.predicate({"cell_height_A": jnp.asarray(height)}, lim, jnp)) == fires
    assert "--engine ase" in g.message({"cell_height_A": height}, lim, 12) and "step 12" in g.message(
        {"cell_height_A": height}, lim, 12)


@pytest.mark.parametrize("change, match", [
    ({"small_cell": True}, "twice the model's cutoff.*--engine ase"),
    ({"barostat": "anisotropic"}, "--barostat.*--engine ase"),
    ({"nonperiodic": True}, "periodic in all three directions"),
])
def test_bad_jax_npt_input_is_refused_before_any_work(tmp_path, argon, change, match):
    """Small cells, the anisotropic barostat and NPT of a slab, before any output."""
    kw = _npt(argon)
    if change.pop("small_cell", False):
        write(tmp_path / "small.extxyz", argon_box(repeat=1))  # 5.6 Å < 2 × 4 Å
        kw["structure"] = str(tmp_path / "small.extxyz")
    if change.pop("nonperiodic", False):
        kw["structure"] = write_slab(tmp_path, argon["structure"])
    with pytest.raises(SettingError, match=match):
        execute(protocols()["npt"], tmp_path / "x", steps=3, **{**kw, **change})
    assert not (tmp_path / "x").exists()


def test_a_slab_on_the_jax_engine_is_refused_naming_the_ase_engine(tmp_path, argon):
    slab = write_slab(tmp_path, argon["structure"])
    match = r"periodic in all three directions.*pbc=\[True, True, False\].*--engine ase"
    with pytest.raises(SettingError, match=match):
        execute(protocols()["nvt"], tmp_path / "x", steps=3, **{**argon, "structure": slab})
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_killed_jax_npt_run_resumes_exactly(tmp_path, argon):
    """SIGKILL after the first chunk (100 steps) has been written, --resume: the log and
    trajectory equal an uninterrupted run's byte for byte."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    steps, out = 300, tmp_path / "killed"
    cmd = [sys.executable, "-m", "md_protocols.cli", "run", "npt", "--engine", "jax", "--structure",
           argon["structure"], "--model", argon["model"], "--dtype", "float64", "--temperature", "90", "--pressure",
           "300", "--pdamp", "200", "--steps", str(steps), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=repo, start_new_session=True)
    log = out / "log.csv"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) > 101:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 101 < len(_log(log)) + 1 < steps + 1, "the run was not killed mid-way"
    r = subprocess.run(cmd + ["--resume"], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    execute(protocols()["npt"], tmp_path / "whole", steps=steps, **_npt(argon))
    for name in ("log.csv", "trajectory.extxyz"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
