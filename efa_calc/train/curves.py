"""Learning curves of a training run: validation MAE and training-batch RMSE against the step."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_learning_curves(history: list[dict], name: str, path: Path) -> None:
    """Write a two-panel PNG (energy error in meV, force error in meV/Å, log scale) to ``path``.

    ``history`` rows are the trainer's evaluations: ``step``, ``valid_energy_mae_eV``,
    ``valid_forces_mae_eV_A``, ``train_mse_energy`` (eV²) and ``train_mse_forces`` ((eV/Å)²).
    Nothing is written for an empty history.
    """
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for a, (valid, train, what, unit) in zip(ax, (("valid_energy_mae_eV", "train_mse_energy", "energies", "meV"),
                                                  ("valid_forces_mae_eV_A", "train_mse_forces", "forces", "meV/Å"))):
        a.semilogy(steps, [h[valid] * 1e3 for h in history], "o-", label="validation MAE")
        a.semilogy(steps, [np.sqrt(h[train]) * 1e3 for h in history], "s--", label="train batch RMSE")
        a.set(xlabel="step", ylabel=f"{'force' if what == 'forces' else 'energy'} error ({unit})",
              title=f"{name}: {what}")
        a.grid(True, which="both", alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
