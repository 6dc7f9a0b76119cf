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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
    """Drop every compiled XLA executable after each test module.

    The calculator keeps its jitted functions in a process-wide cache (fast MD, shared
    compiles), so one pytest process running the whole suite accumulates hundreds of
    executables, each holding memory mappings: the process passed Linux's limit of 65 530
    mappings (vm.max_map_count) and XLA's CPU compiler aborted it in
    test_reference_reproduction.  Measured: that module alone takes the process from ~2 500 to
    ~20 000 mappings, back to ~2 500 after this fixture.  Tests within a module keep sharing."""
    yield
    import gc

    import jax

    from efa_calc.backends.single import compiled_energy_and_forces

    compiled_energy_and_forces.cache_clear()
    try:
        from efa_calc.md_jax import clear_compiled
    except ImportError:  # without the md extra
        pass
    else:
        clear_compiled()
    jax.clear_caches()
    gc.collect()
