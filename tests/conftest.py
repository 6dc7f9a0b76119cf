"""Shared fixtures.  Reference data lives in ../shared/reference (never in the repository);
tests that need it skip with a clear reason when it is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EFA_CALC_SHARED", REPO.parent / "shared")) / "reference"


def _need_shared():
    if not (SHARED / "reference_predictions.json").is_file():
        pytest.skip(f"reference data not found at {SHARED} (set EFA_CALC_SHARED to the folder holding reference/)")


@pytest.fixture(scope="session")
def shared() -> Path:
    _need_shared()
    return SHARED


@pytest.fixture(scope="session")
def reference_meta(shared) -> dict:
    return json.loads((shared / "reference_predictions.json").read_text())


@pytest.fixture(scope="session")
def reference_predictions(shared):
    with np.load(shared / "reference_predictions.npz") as z:
        return {k: z[k] for k in z.files}


_CKPT_CACHE: dict = {}


@pytest.fixture(scope="session")
def reference_checkpoint(shared, reference_meta):
    """``reference_checkpoint(name)`` -> efa-calc Checkpoint of a reference run (cached)."""
    from efa_calc.reference import checkpoint_from_reference

    def get(name: str):
        if name not in _CKPT_CACHE:
            m = reference_meta[name]
            _CKPT_CACHE[name] = checkpoint_from_reference(shared / m["checkpoint"], m["hyperparameters"], name=name)
        return _CKPT_CACHE[name]

    return get
