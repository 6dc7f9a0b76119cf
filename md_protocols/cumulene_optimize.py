"""Geometry optimisation of a cumulene with ASE's BFGS, LBFGS or FIRE."""

import numpy as np
from ase.io import write

from efa_calc.structures import cumulene, cumulene_dihedral

NAME = "cumulene-optimize"
DESCRIPTION = "optimise C9H4 from a twisted start (BFGS/LBFGS/FIRE to fmax); reports energy, max force, steps"
DEFAULTS = {"model": "cumulene-efa", "dtype": "float64", "optimizer": "BFGS", "fmax": 0.01, "max_steps": 500,
            "n_carbons": 9, "start_dihedral_deg": 60.0}


def run(ctx):
    import ase.optimize
    import matplotlib.pyplot as plt

    atoms = cumulene(int(ctx["n_carbons"]), float(ctx["start_dihedral_deg"]))
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
    ax[0].set(ylabel="E − E_final (eV)", title=f"{NAME} ({ctx['optimizer']})")
    ax[1].semilogy(fmaxes, "o-", ms=3, color="C1")
    ax[1].axhline(float(ctx["fmax"]), color="k", ls=":", lw=0.8)
    ax[1].set(xlabel="optimiser step", ylabel="max |F| (eV/Å)")
    fig.tight_layout()
    ctx.savefig(fig, "optimization.png")
    if not converged:
        ctx.status = f"stopped: not converged to fmax {ctx['fmax']} eV/Å in {ctx['max_steps']} steps"
    return {"converged": converged, "energy_eV": float(energies[-1]), "max_force_eV_A": fmaxes[-1],
            "steps": int(opt.nsteps), "final_dihedral_deg": cumulene_dihedral(atoms)}
