"""Harmonic vibrational frequencies of an optimised cumulene through phonopy's displacement
workflow (the molecule in a large vacuum box; every displaced structure evaluated in batches)."""

import numpy as np
from ase import Atoms
from ase.io import write
from ase.optimize import BFGS

from efa_calc.structures import cumulene

NAME = "cumulene-vibrations"
DESCRIPTION = "harmonic frequencies (cm^-1) of optimised C9H4 with phonopy finite displacements"
DEFAULTS = {"model": "cumulene-efa", "dtype": "float64", "n_carbons": 9, "fmax": 1e-4, "max_steps": 2000,
            "displacement_A": 0.01, "box_A": 40.0, "batch_size": 16, "near_zero_cm1": 15.0}


def to_phonopy(atoms: Atoms, box: float):
    """ase.Atoms -> PhonopyAtoms centred in a cubic box of edge ``box`` Å (our own conversion)."""
    from phonopy.structure.atoms import PhonopyAtoms

    pos = atoms.positions - atoms.positions.mean(axis=0) + box / 2
    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.eye(3) * box, positions=pos,
                        masses=atoms.get_masses())


def to_ase(cell) -> Atoms:
    """PhonopyAtoms -> non-periodic ase.Atoms (the model is non-periodic: the box is only vacuum)."""
    return Atoms(symbols=cell.symbols, positions=cell.positions, masses=cell.masses, pbc=False)


def frequencies(atoms: Atoms, calc, displacement: float = 0.01, box: float = 40.0, batch_size: int = 16):
    """Γ-point frequencies in cm⁻¹ (ascending; imaginary modes negative) and the number of
    displaced structures phonopy asked for."""
    from phonopy import Phonopy

    phonon = Phonopy(to_phonopy(atoms, box), supercell_matrix=np.eye(3, dtype=int), primitive_matrix="P")
    phonon.generate_displacements(distance=displacement, is_plusminus=True)
    displaced = [to_ase(c) for c in phonon.supercells_with_displacements]
    results = calc.evaluate_batch(displaced, batch_size=batch_size)
    phonon.forces = np.array([r["forces"] for r in results], dtype=np.float64)
    phonon.produce_force_constants()
    thz_to_cm = 33.35640951981521  # 1 THz in cm⁻¹
    return np.sort(phonon.get_frequencies([0.0, 0.0, 0.0]) * thz_to_cm), len(displaced)


def run_vibrations(ctx, atoms: Atoms, calc, title: str) -> dict:
    """Optimise ``atoms`` (BFGS to ``fmax``), then phonopy frequencies; writes optimized.extxyz,
    frequencies_cm-1.txt and spectrum.png.  Shared by ``cumulene-vibrations`` and ``vibrations``."""
    import matplotlib.pyplot as plt

    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    converged = bool(opt.run(fmax=float(ctx["fmax"]), steps=int(ctx["max_steps"])))
    write(ctx.path("optimized.extxyz"), atoms, format="extxyz")
    ctx.files["trajectory"] = "optimized.extxyz"
    freqs, ndisp = frequencies(atoms, calc, float(ctx["displacement_A"]), float(ctx["box_A"]), int(ctx["batch_size"]))
    np.savetxt(ctx.path("frequencies_cm-1.txt"), freqs, header="harmonic frequencies (cm^-1); negative = imaginary")
    ctx.files["frequencies"] = "frequencies_cm-1.txt"
    near_zero = int(np.sum(np.abs(freqs) < float(ctx["near_zero_cm1"])))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    grid = np.linspace(0, max(freqs.max() * 1.05, 100), 3000)
    spectrum = sum(np.exp(-0.5 * ((grid - f) / 10.0) ** 2) for f in freqs if f > float(ctx["near_zero_cm1"]))
    ax.plot(grid, spectrum, lw=1)
    ax.vlines(freqs[freqs > float(ctx["near_zero_cm1"])], 0, 0.25, color="C1", lw=0.8)
    ax.set(xlabel="wavenumber (cm⁻¹)", ylabel="mode density (arb. units, 10 cm⁻¹ Gaussians)",
           title=f"{title} harmonic spectrum ({ctx['model']}, phonopy)")
    fig.tight_layout()
    ctx.savefig(fig, "spectrum.png")
    if not converged:
        ctx.status = f"stopped: optimisation not converged to {ctx['fmax']} eV/Å"
    atoms.get_potential_energy()
    return {"frequencies_cm-1": [round(float(f), 3) for f in freqs], "near_zero_modes": near_zero,
            "num_displacements": ndisp, "optimization_converged": converged,
            "max_force_after_optimization_eV_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
            "extrapolation": atoms.calc.results.get("extrapolation", {})}


def run(ctx):
    n = int(ctx["n_carbons"])
    return run_vibrations(ctx, cumulene(n, 90.0 if n % 2 else 0.0), ctx.calculator(), f"C{n}H4")
