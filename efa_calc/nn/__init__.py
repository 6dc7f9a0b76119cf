"""The mathematics, one concept per module: Lebedev grids, ERoPE, EFA, radial basis, energy model."""

from efa_calc.nn.attention import LONG_RANGE_BLOCKS, EuclideanFastAttention, linear_attention
from efa_calc.nn.energy_model import Batch, EnergyModel, atomic_energies, energy_and_forces, init_params

__all__ = [
    "LONG_RANGE_BLOCKS",
    "EuclideanFastAttention",
    "linear_attention",
    "Batch",
    "EnergyModel",
    "atomic_energies",
    "energy_and_forces",
    "init_params",
]
