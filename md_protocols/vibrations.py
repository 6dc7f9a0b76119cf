"""Harmonic frequencies (cm⁻¹) of your own structure (``--structure FILE``): BFGS to ``fmax``,
then phonopy finite displacements evaluated in batches; the outputs of ``cumulene-vibrations``."""

from md_protocols.cumulene_vibrations import run_vibrations

NAME = "vibrations"
DESCRIPTION = "harmonic frequencies (cm^-1) of your structure (--structure FILE --model M) with phonopy"
DEFAULTS = {"structure": None, "model": None, "dtype": "float64", "fmax": 1e-4, "max_steps": 2000,
            "displacement_A": 0.01, "box_A": 40.0, "batch_size": 16, "near_zero_cm1": 15.0}


def run(ctx):
    atoms = ctx.structure()
    return run_vibrations(ctx, atoms, ctx.calculator(), atoms.get_chemical_formula())
