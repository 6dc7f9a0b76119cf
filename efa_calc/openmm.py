"""``efa_calc.openmm``: the OpenMM interface, :func:`make_force` (see :mod:`efa_calc.interfaces.openmm`)."""

from efa_calc.interfaces.openmm import EV_IN_KJ_PER_MOL, EFAForceComputation, make_force

__all__ = ["make_force", "EFAForceComputation", "EV_IN_KJ_PER_MOL"]
