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
from npt_model import argon_box, argon_checkpoint


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
