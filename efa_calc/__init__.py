"""efa-calc: ASE calculator, protocols and training for Euclidean-fast-attention force fields.

Units everywhere: energies in eV, lengths in Å, forces in eV/Å, time in fs, temperature in K.
"""

from efa_calc.calculator import EFACalculator
from efa_calc.checkpoint import Checkpoint, EnergyShift, load_checkpoint, save_checkpoint
from efa_calc.nn.config import AllToAllConfig, EFAConfig, MARAGateConfig, ModelConfig
from efa_calc.errors import CheckpointError, EFAError, ExtrapolationError, ExtrapolationWarning, InputError
from efa_calc.models import list_models

__version__ = "0.1.0"

__all__ = [
    "EFACalculator",
    "Checkpoint",
    "EnergyShift",
    "load_checkpoint",
    "save_checkpoint",
    "EFAConfig",
    "AllToAllConfig",
    "MARAGateConfig",
    "ModelConfig",
    "CheckpointError",
    "EFAError",
    "InputError",
    "ExtrapolationError",
    "ExtrapolationWarning",
    "list_models",
    "__version__",
]
