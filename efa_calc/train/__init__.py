"""Training EFA+MPNN models: ``efa-calc train CONFIG.toml`` or :func:`train`."""

from efa_calc.train.config import TrainConfig, TrainingOptions, load_train_config
from efa_calc.train.trainer import Trainer, train

__all__ = ["TrainConfig", "TrainingOptions", "load_train_config", "Trainer", "train"]
