"""The mathematics of the model, one concept per module; imports nothing else of efa-calc but
:mod:`efa_calc.errors`.

* ``config`` — :class:`ModelConfig`, the hyperparameters, and the long-range block registry;
* ``batch`` — :class:`Batch`, the model's one input;
* ``precision`` — :class:`Precision`, the dtype / x64 / matmul policy every backend uses;
* ``energy_model`` — the MPNN with optional long-range branches, energies and forces;
* ``tensor`` (message passing), ``radial``, ``dense``, ``lebedev``, ``erope``, ``mara``
  (the MARA edge gate) and ``long_range/`` (EFA, all-to-all attention).
"""

from efa_calc.nn.batch import Batch
from efa_calc.nn.config import LONG_RANGE_CONFIGS, AllToAllConfig, EFAConfig, MARAGateConfig, ModelConfig
from efa_calc.nn.energy_model import EnergyModel, atomic_energies, energy_and_forces, init_params
from efa_calc.nn.long_range import BLOCKS
from efa_calc.nn.long_range.all_to_all import AllToAllAttention
from efa_calc.nn.long_range.efa import EuclideanFastAttention
from efa_calc.nn.mara import MARAGate
from efa_calc.nn.precision import Precision

__all__ = [
    "BLOCKS", "LONG_RANGE_CONFIGS", "AllToAllAttention", "AllToAllConfig", "Batch", "EFAConfig", "EnergyModel",
    "EuclideanFastAttention", "MARAGate", "MARAGateConfig", "ModelConfig", "Precision", "atomic_energies",
    "energy_and_forces", "init_params",
]
