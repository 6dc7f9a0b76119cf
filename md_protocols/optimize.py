"""Geometry optimisation of your own structure (``--structure FILE``) with ASE's BFGS, LBFGS
or FIRE to ``fmax`` (eV/Å); the outputs of ``cumulene-optimize``.

:func:`run_optimization` is the shared implementation.
"""

import numpy as np
from ase.io import write

NAME = "optimize"
DESCRIPTION = "optimise your structure (--structure FILE --model M) with BFGS/LBFGS/FIRE to fmax"
DEFAULTS = {"structure": None, "model": None, "dtype": "float64", "optimizer": "BFGS", "fmax": 0.01,
            "max_steps": 500}


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

    opt = opt_cls(atoms, logfile=str(ctx.path("optimizer.log")), trajectory=None)
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
    return {"converged": converged, "energy_eV": float(energies[-1]), "max_force_eV_A": fmaxes[-1],
            "steps": int(opt.nsteps), "extrapolation": ext}, atoms


def run(ctx):
    results, _ = run_optimization(ctx, ctx.structure(), NAME)
    return results
