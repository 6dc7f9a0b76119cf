"""The Lebedev grids come from SciPy's public ``lebedev_rule``; they must equal, point by
point and in the same order, e3x's tabulated grids that the reference checkpoints (and the
bundled models) were evaluated with."""

from __future__ import annotations

import io
import pkgutil

import numpy as np
import pytest

from efa_calc.nn import lebedev


def _e3x_grids():
    try:
        data = pkgutil.get_data("e3x.so3", "_lebedev_grids.npz")
    except (FileNotFoundError, OSError, ImportError):
        data = None
    if data is None:
        pytest.skip("this e3x release no longer ships _lebedev_grids.npz; nothing to compare with")
    return np.load(io.BytesIO(data))


@pytest.mark.parametrize("num", lebedev.GRID_SIZES)
def test_scipy_grid_equals_e3x_grid(num):
    grids = _e3x_grids()
    i = int(np.flatnonzero(grids["num"] == num)[0])
    u_ref, w_ref = np.asarray(grids[f"r{i}"], np.float64), np.asarray(grids[f"w{i}"], np.float64)
    u, w = lebedev.lebedev_grid(num)
    assert u.shape == u_ref.shape == (num, 3)
    np.testing.assert_allclose(u, u_ref, rtol=0, atol=1e-14)  # same points in the same order
    np.testing.assert_allclose(w, w_ref, rtol=0, atol=1e-15)


def test_grid_does_not_read_e3x(monkeypatch):
    """The grid is built without e3x's private file (any e3x release may move it)."""
    def refuse(*args, **kwargs):
        raise AssertionError("lebedev_grid read a package data file")

    monkeypatch.setattr(pkgutil, "get_data", refuse)
    lebedev.lebedev_grid.cache_clear()
    u, w = lebedev.lebedev_grid(86)
    assert u.shape == (86, 3) and abs(w.sum() - 1) < 1e-14
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-14)
