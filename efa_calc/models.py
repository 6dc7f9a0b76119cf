"""Finding models by name: bundled checkpoints and user directories of checkpoints.

A model name resolves to a checkpoint directory ``<dir>/<name>/config.json`` in, in order,

1. every directory listed in the environment variable ``EFA_CALC_MODEL_PATH``
   (``os.pathsep``-separated), then
2. the bundled models: ``efa_calc/bundled_models/`` of an installed wheel (``setup.py``
   copies them there at build time), or the ``models/`` directory of the source tree for
   an editable install.

No network access is ever made.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLED_MODELS_DIR", "model_search_path", "list_models", "resolve_model"]

_PACKAGED_MODELS = Path(__file__).resolve().parent / "bundled_models"
_SOURCE_TREE_MODELS = Path(__file__).resolve().parent.parent / "models"
BUNDLED_MODELS_DIR = _PACKAGED_MODELS if _PACKAGED_MODELS.is_dir() else _SOURCE_TREE_MODELS


def model_search_path() -> list[Path]:
    """Directories searched for named models, in order."""
    extra = [Path(p) for p in os.environ.get("EFA_CALC_MODEL_PATH", "").split(os.pathsep) if p]
    return extra + [BUNDLED_MODELS_DIR]


def list_models() -> list[str]:
    """Names of all models found on the search path (first occurrence wins)."""
    names: list[str] = []
    for d in model_search_path():
        if d.is_dir():
            for c in sorted(d.iterdir()):
                if (c / "config.json").is_file() and c.name not in names:
                    names.append(c.name)
    return names


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Checkpoint directory for a model name or a path.

    Raises:
      CheckpointError: if neither a checkpoint directory nor a known name.
    """
    from efa_calc.errors import CheckpointError

    p = Path(name_or_path)
    if p.is_dir():
        return p
    for d in model_search_path():
        if (d / str(name_or_path) / "config.json").is_file():
            return d / str(name_or_path)
    hint = ""
    recipe = _SOURCE_TREE_MODELS / "configs" / f"{name_or_path}.toml"
    if recipe.is_file():  # a planned bundled model that has not been trained in this checkout
        hint = f"; it is made by `efa-calc train models/configs/{recipe.name}`"
    raise CheckpointError(
        f"no model named {str(name_or_path)!r} and no checkpoint directory at that path; "
        f"available models: {', '.join(list_models()) or '(none)'}{hint}"
    )
