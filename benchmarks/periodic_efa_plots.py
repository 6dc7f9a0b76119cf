"""Two plots of periodic EFA (float64, a random-parameter Na/Cl model with λ = 1.5 Å):

* ``docs/images/periodic_efa_continuity.png``: the energy along an isotropic strain path of a
  triclinic 6-ion cell through the scale where reciprocal vectors cross q_max (with
  ``reciprocal_tolerance = 1e-3``, so the switch sits where the weights are still ~1e-3 and a
  hard cutoff would jump), the energy minus its quadratic fit, the number of G vectors, and
  the same path with a hard cutoff at q_on (the jump the switch removes; attention output
  of the block's pure function with random features).
* ``docs/images/periodic_efa_open_limit.png``: |E(box of side L) − E(molecule)| of a 4-ion
  molecule in a cubic box, against L; the molecular value is the no-cell evaluation (the
  open-space sum of the same damped kernel).

Numbers go to ``benchmarks/results/periodic_efa_plots.json``.

    python benchmarks/periodic_efa_plots.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def continuity(out: dict):
    import jax

    from efa_calc.nn.long_range import reciprocal as rec
    from test_periodic_efa import LAMBDA, crystal, efa_config, entering_path, evaluate, make_model

    lr = efa_config(reciprocal_tolerance=1e-3)
    model = make_model(lr)
    atoms = crystal(6)
    scales = entering_path(atoms, lr, steps=41, h=2e-4)
    q_on, q_max = lr.reciprocal_cutoff
    energies, counts, hard = [], [], []
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(6, 1, 8)), rng.normal(size=(6, 1, 8)), rng.normal(size=(6, 4))
    omega = np.linspace(0.0, lr.omega_max, 4)
    for s in scales:
        a = atoms.copy()
        a.set_cell(atoms.cell.array * s, scale_atoms=True)
        energies.append(evaluate(model, a)[0])
        idx = rec.miller_indices(a.cell.array, q_max)
        counts.append(len(idx))
        with jax.enable_x64(True):  # hard cutoff at q_max: switch from q_max(1 − 1e-12) to q_max
            m = np.ones((1, len(idx)), bool)
            y = rec.reciprocal_attention(q, k, v, a.positions, a.cell.array[None], idx[None], m, omega, LAMBDA,
                                         q_max * (1 - 1e-12), q_max, 1, 6)
            hard.append(float(np.asarray(y)[0, 0]))
    e = np.array(energies)
    x = scales - scales[len(scales) // 2]
    resid = e - np.polyval(np.polyfit(x, e, 2), x)
    out["continuity"] = {"scale": scales.tolist(), "energy_eV": e.tolist(), "n_G": counts,
                         "residual_of_quadratic_fit_eV": resid.tolist(), "hard_cutoff_output": hard,
                         "max_second_difference_rel": float(np.max(np.abs(np.diff(e, 2))) / np.abs(e).max()),
                         "q_on": q_on, "q_max": q_max, "tolerance": 1e-3}
    return scales, e, resid, counts, hard


def open_limit(out: dict):
    from ase import Atoms

    from test_periodic_efa import LAMBDA, efa_config, evaluate, make_model

    model = make_model(efa_config())
    mol = Atoms([11, 17, 11, 17], positions=[[0, 0, 0], [2.5, 0.2, 0], [0.3, 2.6, 0.1], [2.4, 2.2, 1.9]])
    e_mol = evaluate(model, mol)[0]
    sides = [6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0]
    errors = []
    for side in sides:
        box = mol.copy()
        box.cell, box.pbc = np.eye(3) * side, True
        box.center()
        errors.append(abs(evaluate(model, box)[0] - e_mol))
        print(f"L = {side} Å: |ΔE| = {errors[-1]:.3e} eV", flush=True)
    out["open_limit"] = {"side_A": sides, "abs_energy_difference_eV": errors, "molecule_energy_eV": e_mol,
                         "lambda_A": LAMBDA}
    return sides, errors


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict = {}
    scales, e, resid, counts, hard = continuity(out)
    sides, errors = open_limit(out)
    img = ROOT / "docs/images"
    img.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(scales, e, ".-")
    ax[0].set(xlabel="cell scale s", ylabel="energy (eV)", title="periodic EFA energy along the path")
    tw = ax[0].twinx()
    tw.step(scales, counts, where="mid", color="C3")
    tw.set_ylabel("G vectors in the set", color="C3")
    ax[1].plot(scales, resid * 1e9, ".-")
    ax[1].set(xlabel="cell scale s", ylabel="E − quadratic fit (neV)", title="smooth through the entry points")
    xs = scales - scales[len(scales) // 2]
    hard_resid = np.asarray(hard) - np.polyval(np.polyfit(xs, hard, 2), xs)
    ax[2].plot(scales, hard_resid, ".-", color="C1")
    ax[2].set(xlabel="cell scale s", ylabel="y₀₀ − quadratic fit", title="no switch (hard cutoff): jumps")
    fig.tight_layout()
    fig.savefig(img / "periodic_efa_continuity.png", dpi=120)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.semilogy(sides, errors, "o-")
    ax.set(xlabel="cubic box side L (Å)", ylabel="|E(box) − E(molecule)| (eV)",
           title=f"open-space limit, λ = {out['open_limit']['lambda_A']} Å")
    fig.tight_layout()
    fig.savefig(img / "periodic_efa_open_limit.png", dpi=120)
    (ROOT / "benchmarks/results/periodic_efa_plots.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
