"""The mathematics, one concept per module: Lebedev grids (``lebedev``), ERoPE (``erope``),
long-range blocks (``long_range/``: EFA, all-to-all attention), the MARA edge gate
(``mara``), radial basis (``radial``), tensor products (``tensor``), the energy model
(``energy_model``).

Names are imported lazily, so that :mod:`efa_calc.config` can import the block configs
from :mod:`efa_calc.nn.long_range` without importing the energy model first.
"""

import importlib

_EXPORTS = {
    "BLOCKS": "efa_calc.nn.long_range",
    "EuclideanFastAttention": "efa_calc.nn.long_range.efa",
    "AllToAllAttention": "efa_calc.nn.long_range.all_to_all",
    "MARAGate": "efa_calc.nn.mara",
    "Batch": "efa_calc.nn.energy_model",
    "EnergyModel": "efa_calc.nn.energy_model",
    "atomic_energies": "efa_calc.nn.energy_model",
    "energy_and_forces": "efa_calc.nn.energy_model",
    "init_params": "efa_calc.nn.energy_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'efa_calc.nn' has no attribute {name!r}")
