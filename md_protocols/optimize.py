"""Geometry optimisation of your own structure (``--structure FILE``) with ASE's BFGS, LBFGS
or FIRE to ``fmax`` (eV/Å); the outputs of ``cumulene-optimize``.

``--relax-cell true`` (a structure periodic in all three directions) optimises the cell
too, with ASE's ``FrechetCellFilter`` (the cell's degrees of freedom as the log of the
deformation gradient; ``fmax`` then also bounds the stress times the volume, eV, at zero
external pressure); the results add the final cell (Å), volume (Å³) and stress (Voigt,
eV/Å³, ASE's sign).

:func:`run_optimization` is the shared implementation.
"""

import numpy as np
from ase.io import write

NAME = "optimize"
DESCRIPTION = "optimise your structure (--structure FILE --model M) with BFGS/LBFGS/FIRE to fmax"
DEFAULTS = {"structure": None, "model": None, "dtype": "float64", "optimizer": "BFGS", "fmax": 0.01,
            "max_steps": 500, "relax_cell": False}


def run_optimization(ctx, atoms, title: str) -> tuple[dict, object]:
    """Optimise ``atoms`` in place; writes optimized.extxyz, optimizer.log, optimization.png.

    Returns the results (energy in eV, max force in eV/Å, steps, extrapolation verdict of the
    final structure) and the optimised atoms."""
    import ase.optimize
    import matplotlib.pyplot as plt

    atoms.calc = ctx.calculator()
    opt_cls = {"bfgs": ase.optimize.BFGS, "lbfgs": ase.optimize.LBFGS, "fire": ase.optimize.FIRE}[str(ctx["optimizer"]).lower()]
    energies, fmaxes = [], []

    def observe():
        energies.append(atoms.get_potential_energy())
        fmaxes.append(float(np.linalg.norm(atoms.get_forces(), axis=1).max()))

    relax_cell = bool(ctx.settings.get("relax_cell", False))
    if relax_cell:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms)
    else:
        target = atoms
    opt = opt_cls(target, logfile=str(ctx.path("optimizer.log")), trajectory=None)
    opt.attach(observe)
    converged = bool(opt.run(fmax=float(ctx["fmax"]), steps=int(ctx["max_steps"])))
    write(ctx.path("optimized.extxyz"), atoms, format="extxyz")
    ctx.files.update({"trajectory": "optimized.extxyz", "log": "optimizer.log"})
    fig, ax = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    ax[0].plot(np.array(energies) - energies[-1], "o-", ms=3)
    ax[0].set(ylabel="E − E_final (eV)", title=f"{title} ({ctx['optimizer']})")
    ax[1].semilogy(fmaxes, "o-", ms=3, color="C1")
    ax[1].axhline(float(ctx["fmax"]), color="k", ls=":", lw=0.8)
    ax[1].set(xlabel="optimiser step", ylabel="max |F| (eV/Å)")
    fig.tight_layout()
    ctx.savefig(fig, "optimization.png")
    if not converged:
        ctx.status = f"stopped: not converged to fmax {ctx['fmax']} eV/Å in {ctx['max_steps']} steps"
    ext = atoms.calc.results.get("extrapolation", {})
    res = {"converged": converged, "energy_eV": float(energies[-1]), "max_force_eV_A": fmaxes[-1],
           "steps": int(opt.nsteps), "extrapolation": ext}
    if relax_cell:
        res.update(cell_A=atoms.cell.array.tolist(), volume_A3=float(atoms.get_volume()),
                   stress_eV_A3=atoms.get_stress().tolist())
    return res, atoms


def run(ctx):
    results, _ = run_optimization(ctx, ctx.structure(), NAME)
    return results
