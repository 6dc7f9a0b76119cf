"""Comparing models with reference data: errors of scans and datasets (eV, eV/Å).

Relative energies are compared offset-free: both curves have their mean removed, so a
constant shift between model and reference does not count, the shape does.
"""

from __future__ import annotations

import numpy as np

from efa_calc.data import Dataset

__all__ = ["relative_rmse", "predict", "dataset_errors", "scan_report"]


def relative_rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """RMSE (eV) of (pred − mean pred) against (ref − mean ref)."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return float(np.sqrt(np.mean(((pred - pred.mean()) - (ref - ref.mean())) ** 2)))


def predict(calc, ds: Dataset, batch_size: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    """Model energies (eV) and forces (eV/Å) for every frame of ``ds``."""
    from ase import Atoms

    res = calc.evaluate_batch([Atoms(z, r) for z, r in zip(ds.numbers, ds.positions)], batch_size=batch_size)
    return np.array([r["energy"] for r in res]), [np.asarray(r["forces"], np.float64) for r in res]


def dataset_errors(calc, ds: Dataset) -> dict:
    """MAE/RMSE of total energies (eV per frame) and force components (eV/Å)."""
    e, f = predict(calc, ds)
    de = e - ds.energy
    df = np.concatenate([(a - b).ravel() for a, b in zip(f, ds.forces)])
    return {"energy_mae_eV": float(np.mean(np.abs(de))), "energy_rmse_eV": float(np.sqrt(np.mean(de**2))),
            "forces_mae_eV_A": float(np.mean(np.abs(df))), "forces_rmse_eV_A": float(np.sqrt(np.mean(df**2))),
            "num_frames": len(ds)}


def scan_report(calc, ds: Dataset, x: np.ndarray) -> dict:
    """Errors of one scan (frames ordered along ``x``): offset-free energy RMSE, force MAE,
    reference barrier (max − min) and the positions of both minima."""
    e, f = predict(calc, ds)
    df = np.concatenate([(a - b).ravel() for a, b in zip(f, ds.forces)])
    return {"x": np.asarray(x).tolist(), "reference_eV": ds.energy.tolist(), "model_eV": e.tolist(),
            "relative_energy_rmse_eV": relative_rmse(e, ds.energy), "forces_mae_eV_A": float(np.mean(np.abs(df))),
            "reference_span_eV": float(np.ptp(ds.energy)), "model_span_eV": float(np.ptp(e)),
            "reference_minimum_at": float(np.asarray(x)[np.argmin(ds.energy)]),
            "model_minimum_at": float(np.asarray(x)[np.argmin(e)])}
