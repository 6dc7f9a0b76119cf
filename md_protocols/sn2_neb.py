"""Climbing-image NEB of an SN2 reaction (default Cl⁻ + CH3Br → ClCH3 + Br⁻) with ase.mep."""

import numpy as np
from ase.io import write
from ase.mep import NEB
from ase.optimize import FIRE

from md_protocols.systems import sn2_product_complex, sn2_reactant_complex

NAME = "sn2-neb"
DESCRIPTION = "climbing-image NEB of Cl- + CH3Br -> ClCH3 + Br- between optimised complexes (IDPP start)"
DEFAULTS = {"model": "sn2-efa", "dtype": "float32", "nucleophile": "Cl", "leaving_group": "Br", "images": 9,
            "fmax": 0.05, "max_steps": 1000, "spring_constant": 0.1}


def run(ctx):
    import matplotlib.pyplot as plt

    x, y = str(ctx["nucleophile"]), str(ctx["leaving_group"])
    reactant = sn2_reactant_complex(ctx.calculator(), x, y)
    product = sn2_product_complex(ctx.calculator(), x, y)
    n = int(ctx["images"])
    images = [reactant] + [reactant.copy() for _ in range(n - 2)] + [product]
    for im in images:  # one calculator per image; all share the compiled model
        im.calc = ctx.calculator()
    neb = NEB(images, k=float(ctx["spring_constant"]), climb=True, method="improvedtangent")
    neb.interpolate("idpp")
    opt = FIRE(neb, logfile=str(ctx.path("neb.log")))
    converged = bool(opt.run(fmax=float(ctx["fmax"]), steps=int(ctx["max_steps"])))
    energies = np.array([im.get_potential_energy() for im in images])
    forces = neb.get_forces().reshape(n - 2, len(reactant), 3)
    ci = int(np.argmax(energies[1:-1]))
    ci_fmax = float(np.linalg.norm(forces[ci], axis=1).max())
    path = np.concatenate([[0.0], np.cumsum([np.linalg.norm(images[i + 1].positions - images[i].positions)
                                             for i in range(n - 1)])])
    frames = []
    for im, e in zip(images, energies):
        f = im.copy()
        f.info = {"energy_eV": float(e)}
        frames.append(f)
    write(ctx.path("neb_band.extxyz"), frames, format="extxyz")
    ctx.files.update({"trajectory": "neb_band.extxyz", "log": "neb.log"})
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(path, energies - energies[0], "o-")
    ax.plot(path[ci + 1], energies[ci + 1] - energies[0], "r*", ms=14, label="climbing image")
    ax.set(xlabel="path length (Å)", ylabel="energy relative to reactant complex (eV)",
           title=f"{x}⁻ + CH3{y} → {x}CH3 + {y}⁻ ({ctx['model']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    ctx.savefig(fig, "neb.png")
    if not converged:
        ctx.status = f"stopped: NEB not converged to fmax {ctx['fmax']} eV/Å in {ctx['max_steps']} steps"
    return {"converged": converged, "barrier_eV": float(energies.max() - energies[0]),
            "reaction_energy_eV": float(energies[-1] - energies[0]), "climbing_image_max_force_eV_A": ci_fmax,
            "climbing_image": ci + 1, "image_energies_eV": energies.tolist(),
            "ts_C_X_distance_A": float(images[ci + 1].get_distance(0, 4)),
            "ts_C_Y_distance_A": float(images[ci + 1].get_distance(0, 5)), "optimizer_steps": int(opt.nsteps)}
