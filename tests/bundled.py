"""The bundled model directories under ``models/``, for tests: skip with the command that makes one if it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"


def bundled_model(name: str) -> Path:
    """``models/<name>`` if it holds a checkpoint; otherwise skip the test, naming the training command."""
    path = MODELS / name
    if not (path / "config.json").is_file():
        pytest.skip(f"{name} is not bundled (efa-calc train models/configs/{name}.toml)")
    return path
