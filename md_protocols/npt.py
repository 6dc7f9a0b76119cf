"""NPT dynamics of your own periodic structure (``--structure FILE`` with a cell, pbc in all
three directions): Martyna–Tobias–Klein integrators at ``--temperature K`` and
``--pressure BAR`` — ASE's (``--engine ase``, default) or jax-md's isotropic
``npt_nose_hoover`` inside XLA (``--engine jax``; cells whose heights exceed twice the
model's cutoff; ``--tdamp``/``--pdamp`` mapped as in :mod:`md_protocols.engines.jax_engine`).

``--barostat isotropic`` (default, ``IsotropicMTKNPT``: the cell scaled uniformly) or
``anisotropic`` (``MTKNPT``: all nine cell components); Nosé–Hoover chains on the particles
(time constant ``tdamp_fs``, fs) and on the cell (``pdamp_fs``, fs; typically ~1000 time
steps).  The outputs, guards and ``--resume`` of ``nvt``
(:func:`md_protocols.dynamics.run_dynamics`); ``log.csv`` has, besides the energies, the
MTK conserved quantity ``econs_eV`` (eV), ``volume_A3`` (Å³), ``density_g_cm3`` (g/cm³) and
``pressure_bar`` (bar: P = N k_B T/V − tr(σ)/3 with the instantaneous kinetic energy,
:mod:`md_protocols.engines.cell`).  The box guard stops the run (resumably) when the volume
leaves [0.5, 2] × the starting volume.

Summary (over the logged steps after ``equilibration_steps``): the mean density (g/cm³)
and volume (Å³) with standard errors of the correlated mean
(:func:`efa_calc.timeseries.mean_and_standard_error`), the mean pressure (bar), the mean
potential energy per atom (eV) and, when ``--isolated-energy EV`` (the same model's energy
of one isolated molecule or atom, eV) is given with ``--molecule-atoms N``, the heat of
vaporization per molecule

    ΔH_vap = E_gas − ⟨E_liq⟩ / n_mol + R T,   n_mol = N_atoms / molecule_atoms,

(eV and kJ/mol; ideal gas, the liquid's P⟨V⟩ neglected: it is reported separately as
``pv_per_molecule_kJ_mol`` = P⟨V⟩/n_mol with P the target pressure, to subtract for
ΔH_vap = E_gas − ⟨E_liq⟩/n_mol + RT − P⟨V⟩/n_mol as in
``benchmarks/results/lammps_argon_npt.json``).  Plot: ``volume.png`` (volume and density
against time).
"""

from __future__ import annotations

import numpy as np
from ase import units

from md_protocols.dynamics import ENGINE_DEFAULTS, run_dynamics
from md_protocols.settings import Setting

NAME = "npt"
ENSEMBLE = "npt"
DESCRIPTION = "NPT (MTK barostat) of your periodic structure (--structure FILE --model M --pressure BAR)"
DEFAULTS = {"structure": None, "model": None, "steps": 5000, "timestep_fs": 2.0, "temperature_K": 300.0,
            "pressure_bar": 1.01325, "barostat": "isotropic", "tdamp_fs": 100.0, "pdamp_fs": 1000.0,
            "equilibration_steps": 0, "isolated_energy_eV": None, "molecule_atoms": 1, "dtype": "float32",
            "seed": 0, "guard": "error",
            "write_every": 1, "log_every": 1, **ENGINE_DEFAULTS}
SETTINGS = {
    "equilibration_steps": Setting(int, "steps left out of the summary's means (equilibration)", "", 0, 100_000_000),
    "isolated_energy_eV": Setting(float, "the model's energy of one isolated molecule (or atom), for the heat of "
                                         "vaporization", "eV", optional=True),
    "molecule_atoms": Setting(int, "atoms per molecule, for the heat of vaporization", "", 1, 100_000),
}

#: 1 eV per molecule in kJ/mol
EV_IN_KJ_MOL = units.mol / units.kJ


def npt_summary(rows: list[dict], num_atoms: int, temperature_K: float, equilibration_steps: int = 0,
                isolated_energy_eV: float | None = None, molecule_atoms: int = 1, pressure_bar: float = 0.0) -> dict:
    """The NPT results from ``log.csv`` rows (see the module docstring; units in the keys)."""
    from efa_calc.timeseries import mean_and_standard_error

    kept = [r for r in rows if int(r["step"]) > equilibration_steps]
    if len(kept) < 4:
        return {"npt_samples": len(kept)}
    col = {k: np.array([float(r[k]) for r in kept]) for k in ("density_g_cm3", "volume_A3", "pressure_bar", "epot_eV")}
    res = {"npt_samples": len(kept)}
    for key, name in (("density_g_cm3", "density_g_cm3"), ("volume_A3", "volume_A3"), ("pressure_bar", "pressure_bar"),
                      ("epot_eV", "epot_eV")):
        mean, se, g = mean_and_standard_error(col[key])
        res[f"mean_{name}"], res[f"se_{name}"] = mean, se
        if key == "density_g_cm3":
            res["statistical_inefficiency_density"] = g
    res["mean_epot_eV_per_atom"] = res["mean_epot_eV"] / num_atoms
    if isolated_energy_eV is not None:
        n_mol = num_atoms / molecule_atoms
        dh = isolated_energy_eV - res["mean_epot_eV"] / n_mol + units.kB * temperature_K
        res.update(heat_of_vaporization_eV=dh, heat_of_vaporization_kJ_mol=dh * EV_IN_KJ_MOL,
                   se_heat_of_vaporization_kJ_mol=res["se_epot_eV"] / n_mol * EV_IN_KJ_MOL,
                   pv_per_molecule_kJ_mol=pressure_bar * units.bar * res["mean_volume_A3"] / n_mol * EV_IN_KJ_MOL)
    return res


def plot_volume(ctx, rows: list[dict]) -> None:
    import matplotlib.pyplot as plt

    t = np.array([float(r["time_fs"]) for r in rows]) / 1000.0
    fig, ax = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax[0].plot(t, [float(r["volume_A3"]) for r in rows], color="C0")
    ax[0].set(ylabel="volume (Å³)", title=f"{ctx.protocol}: {ctx['pressure_bar']:g} bar, {ctx['temperature_K']:g} K")
    ax[1].plot(t, [float(r["density_g_cm3"]) for r in rows], color="C1")
    ax[1].set(xlabel="time (ps)", ylabel="density (g/cm³)")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    ctx.savefig(fig, "volume.png")


def run(ctx):
    import csv

    atoms = ctx.structure()
    npt = {k: ctx[k] for k in ("pressure_bar", "tdamp_fs", "pdamp_fs", "barostat")}
    results = run_dynamics(ctx, atoms, ctx.calculator(), "npt", npt=npt)
    with open(ctx.path("log.csv")) as f:
        rows = list(csv.DictReader(f))
    plot_volume(ctx, rows)
    results.update(npt_summary(rows, len(atoms), ctx["temperature_K"], ctx["equilibration_steps"],
                               ctx["isolated_energy_eV"], ctx["molecule_atoms"], ctx["pressure_bar"]))
    return results
