"""Cumulene torsion data: H2C(=C)n−2=CH2, n = 3 … 12, labelled with GFN2-xTB (tblite).

The ground state alternates with carbon parity (even n: planar CH2 groups, odd n:
perpendicular) — a delocalised-π effect no finite local cutoff can see across a long
chain.  Training frames start from the GFN2-xTB equilibrium geometry of each chain, then

* rotate the last CH2 rigidly to a random dihedral in [0°, 180°],
* scale every C=C bond by a random factor (bond-length variation, σ = 2 %),
* run a short GFN2-xTB Langevin trajectory at 300–800 K (thermal displacements);
* optionally (``torsion_frames_per_chain``) also keep torsion frames without the
  trajectory: random dihedral, bond-length variation and small Gaussian displacements
  (``torsion_displacement_A``).  Thermal energies (std ≈ 0.4 eV per frame at these
  temperatures) otherwise dwarf the torsion signal.

Test scans (:func:`plan_cumulene_scans`) are rigid rotations of the equilibrium geometry
from 0° to 180° every 15° — idealised geometries that no training frame repeats.

Units: Å, eV, eV/Å, degrees.
"""

from __future__ import annotations

import functools

import numpy as np
from ase import Atoms, units

from efa_calc.generate.runner import Label
from efa_calc.structures import cumulene, cumulene_dihedral, rotate_terminal_group

__all__ = ["DEFAULT_CUMULENE_CONFIG", "relaxed_cumulene", "plan_cumulene", "plan_cumulene_scans", "XTBLabeller"]

DEFAULT_CUMULENE_CONFIG: dict = {
    "seed": 0,
    "n_carbons": [3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    "frames_per_chain": 350,
    "bond_scale_sigma": 0.02,
    "temperatures_K": [300.0, 500.0, 800.0],
    "thermal_steps": 20,
    "thermal_timestep_fs": 0.5,
}


def _xtb(etemp: float = 300.0):
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=0, verbosity=0, electronic_temperature=etemp)


@functools.lru_cache(maxsize=None)
def _relaxed(n: int, dihedral: float) -> Atoms:
    from ase.optimize import BFGS

    a = cumulene(n, dihedral)
    a.calc = _xtb()
    BFGS(a, logfile=None).run(fmax=0.005, steps=500)
    return Atoms(a.numbers, a.positions)


def relaxed_cumulene(n: int) -> Atoms:
    """GFN2-xTB equilibrium geometry of the C_nH_4 cumulene (the lower of planar and
    perpendicular), re-centred and aligned with the chain along x."""
    cands = [_relaxed(n, 0.0), _relaxed(n, 90.0)]
    energies = []
    for c in cands:
        a = c.copy()
        a.calc = _xtb()
        energies.append(a.get_potential_energy())
    a = cands[int(np.argmin(energies))].copy()
    a.positions -= a.positions.mean(axis=0)
    return a


def _thermalise(atoms: Atoms, temperature_K: float, steps: int, timestep_fs: float, rng) -> Atoms:
    from ase.calculators.calculator import CalculationFailed
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    state = rng.bit_generator.state
    for etemp in (300.0, 3000.0):
        rng.bit_generator.state = state
        a = Atoms(atoms.numbers, atoms.positions)
        a.calc = _xtb(etemp)
        MaxwellBoltzmannDistribution(a, temperature_K=2 * temperature_K, rng=rng)
        Stationary(a)
        ZeroRotation(a)
        dyn = Langevin(a, timestep_fs * units.fs, temperature_K=temperature_K, friction=0.01 / units.fs, rng=rng)
        try:
            dyn.run(steps)
        except CalculationFailed:
            continue
        return Atoms(a.numbers, a.positions)
    raise CalculationFailed(f"GFN2-xTB thermalisation failed for {atoms.get_chemical_formula()}")


def _scale_chain(atoms: Atoms, factors: np.ndarray) -> Atoms:
    """Stretch each C=C bond k by ``factors[k]``, carrying the hydrogens with their carbon."""
    a = atoms.copy()
    n = int(np.sum(a.numbers == 6))
    c = a.positions[:n]
    bonds = np.diff(c, axis=0) * factors[:, None]
    new_c = np.vstack([c[:1], c[0] + np.cumsum(bonds, axis=0)])
    a.positions[:n] = new_c
    a.positions[n : n + 2] += new_c[0] - c[0]
    a.positions[n + 2 : n + 4] += new_c[-1] - c[-1]
    return a


def plan_cumulene(config: dict, progress: bool = True) -> list[Atoms]:
    """Deterministic list of training geometries (see the module docstring)."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(config["seed"])
    frames = []
    jobs = [(n, i) for n in config["n_carbons"] for i in range(config["frames_per_chain"])]
    for n, _ in tqdm(jobs, desc="planning cumulene frames (GFN2-xTB)", disable=not progress):
        base = relaxed_cumulene(n)
        ground = cumulene_dihedral(base)
        phi = float(rng.uniform(0.0, 180.0))
        a = rotate_terminal_group(base, phi - ground)
        a = _scale_chain(a, 1.0 + config["bond_scale_sigma"] * rng.normal(size=n - 1))
        t = float(rng.choice(config["temperatures_K"]))
        a = _thermalise(a, t, config["thermal_steps"], config["thermal_timestep_fs"], rng)
        a.info = {"kind": "thermal", "system": f"C{n}H4", "charge": 0, "n_carbons": n,
                  "dihedral_deg": cumulene_dihedral(a), "temperature_K": t}
        frames.append(a)
    # after the thermal frames, so a config without them plans the same frames as before
    for n in config["n_carbons"]:
        base = relaxed_cumulene(n)
        ground = cumulene_dihedral(base)
        for _ in range(int(config.get("torsion_frames_per_chain", 0))):
            phi = float(rng.uniform(0.0, 180.0))
            a = rotate_terminal_group(base, phi - ground)
            a = _scale_chain(a, 1.0 + config["bond_scale_sigma"] * rng.normal(size=n - 1))
            a.positions += rng.normal(0.0, config.get("torsion_displacement_A", 0.02), a.positions.shape)
            a.info = {"kind": "torsion", "system": f"C{n}H4", "charge": 0, "n_carbons": n,
                      "dihedral_deg": cumulene_dihedral(a), "temperature_K": 0.0}
            frames.append(a)
    return frames


DEFAULT_CUMULENE_TEST_CONFIG: dict = {"n_carbons": [6, 8, 9, 11], "step_deg": 15.0}


def plan_cumulene_scans(config: dict) -> list[Atoms]:
    """Rigid torsion scans 0…180° of the equilibrium chains (held-out test geometries)."""
    frames = []
    for n in config["n_carbons"]:
        base = relaxed_cumulene(n)
        ground = cumulene_dihedral(base)
        for phi in np.arange(0.0, 180.0 + 1e-9, config["step_deg"]):
            a = rotate_terminal_group(base, phi - ground)
            a.info = {"kind": "rigid_scan", "system": f"C{n}H4", "charge": 0, "n_carbons": int(n),
                      "dihedral_deg": float(phi)}
            frames.append(a)
    return frames


class XTBLabeller:
    """GFN2-xTB energies (eV) and forces (eV/Å) via tblite; SCF failures are not converged."""

    def __init__(self, threads: int = 1):
        self.threads = threads

    def __call__(self, atoms: Atoms) -> Label:
        from ase.calculators.calculator import CalculationFailed

        a = Atoms(atoms.numbers, atoms.positions)
        from tblite.ase import TBLite

        a.calc = TBLite(method="GFN2-xTB", charge=int(atoms.info.get("charge", 0)), verbosity=0)
        try:
            e = a.get_potential_energy()
            f = a.get_forces()
        except CalculationFailed as exc:
            return Label(float("nan"), np.full((len(a), 3), np.nan), False, {"error": str(exc)[:200]})
        return Label(float(e), f, True, {})
