"""Exception types.  Every error efa-calc raises about user input derives from ``ValueError``."""

from __future__ import annotations

__all__ = ["EFAError", "InputError", "CheckpointError", "ExtrapolationError", "ExtrapolationWarning"]


class EFAError(ValueError):
    """Base class of efa-calc's errors about bad input."""


class InputError(EFAError):
    """A structure the model cannot evaluate (unknown element, NaN positions, periodic
    cell, empty structure, extent beyond the model's ``max_length``, ...)."""


class CheckpointError(EFAError):
    """A missing, corrupt or incompatible checkpoint."""


class ExtrapolationError(InputError):
    """A structure outside the model's training envelope, raised with ``guard="error"``."""


class ExtrapolationWarning(RuntimeWarning):
    """A structure outside the model's training envelope (the default ``guard="warn"``)."""
