"""SN2 charge-transfer data: X⁻ + CH3Y → XCH3 + Y⁻ at PBE0/def2-SVPD (PySCF).

Geometries are built cheaply and labelled expensively:

* **reaction paths** — for every unordered halogen pair {X, Y} (identity reactions
  included) the collinear backside-attack path is relaxed with GFN2-xTB (tblite) at fixed
  reaction coordinate rc = d(C–Y) − d(C–X) (``ase.constraints.FixInternals``); each path
  point is stored clean and after short thermal GFN2-xTB Langevin runs at 300–800 K.
  The clean path of pairs listed in ``heldout_clean_path_pairs`` is not stored, so a
  relaxed path of that pair can serve as a held-out test;
* **ion–molecule separations** — X⁻ placed at 3–14 Å from the carbon of a thermalised
  CH3Y, half near the backside axis and half in random directions, so that the ion is
  often far outside a 5 Å local cutoff.

Labels: PBE0/def2-SVPD with density fitting (RKS, total charge −1, singlet), def2 ECPs
for elements beyond Kr, DIIS first and a second-order (Newton) SCF fallback; frames that
still do not converge are flagged and never enter a dataset.

Units: Å, eV, eV/Å.  Atom order of every frame: C, H, H, H, X (nucleophile), Y (leaving group).
"""

from __future__ import annotations

import itertools
from typing import Iterable

import numpy as np
from ase import Atoms, units
from ase.constraints import FixInternals

from efa_calc.generate.runner import Label
from efa_calc.structures import sn2_complex

__all__ = [
    "DEFAULT_SN2_CONFIG",
    "plan_sn2",
    "plan_sn2_tests",
    "PySCFLabeller",
]

# Typical C–X bond lengths (Å) used only for starting geometries.
_CX_BOND = {"F": 1.39, "Cl": 1.79, "Br": 1.95, "I": 2.15}

DEFAULT_SN2_CONFIG: dict = {
    "seed": 0,
    "halogens": ["F", "Cl", "Br"],
    "path_rc_A": [
        -4.0, -3.5, -3.0, -2.6, -2.2, -1.9, -1.6, -1.35, -1.1, -0.9, -0.7, -0.5, -0.3, -0.15, 0.0,
        0.15, 0.3, 0.5, 0.7, 0.9, 1.1, 1.35, 1.6, 1.9, 2.2, 2.6, 3.0, 3.5, 4.0,
    ],
    "path_thermal_per_point": 4,
    "temperatures_K": [300.0, 500.0, 800.0],
    "thermal_steps": 40,
    "thermal_timestep_fs": 0.5,
    "heldout_clean_path_pairs": [["Cl", "Br"]],
    "ion_molecule_per_pair": 80,
    "ion_molecule_distance_A": [3.0, 14.0],
    "ion_molecule_backside_fraction": 0.5,
    "min_ion_distance_A": 2.0,
}


def _xtb(charge: int, electronic_temperature: float = 300.0):
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=charge, verbosity=0, electronic_temperature=electronic_temperature)


def _ion_plus_molecule(x: str, y: str, rc: float) -> Atoms:
    """Collinear point at reaction coordinate rc built from the neutral GFN2-xTB methyl
    halide and a bare ion on its backside axis (used where GFN2-xTB's SCF fails for the
    separated anion, a known weakness of the method for long-range charge transfer)."""
    if rc <= 0:
        mol = methyl_halide(y)  # C H H H Y, C–Y along +z
        d = np.linalg.norm(mol.positions[4]) - rc
        return _place_ion(mol, x, d, np.array([0.0, 0.0, -1.0]))
    mol = methyl_halide(x)
    d = np.linalg.norm(mol.positions[4]) + rc
    a = _place_ion(mol, y, d, np.array([0.0, 0.0, -1.0]))  # order C H H H Y X
    return a[[0, 1, 2, 3, 5, 4]]


def relaxed_path_point(x: str, y: str, rc: float, fmax: float = 0.01, steps: int = 400) -> Atoms:
    """GFN2-xTB relaxation of X⁻ + CH3Y at fixed rc = d(C–Y) − d(C–X) (Å).

    Falls back to :func:`_ion_plus_molecule` when the GFN2-xTB SCF does not converge.
    """
    from ase.calculators.calculator import CalculationFailed
    from ase.optimize import BFGS

    # Starting guess: the shorter bond near its equilibrium length (stretched near the
    # transition state), the longer one rc further out, umbrella interpolated.
    stretch = 0.45 * np.exp(-abs(rc) / 0.8)
    if rc <= 0:
        d_cy = _CX_BOND[y] + stretch
        d_cx = d_cy - rc
    else:
        d_cx = _CX_BOND[x] + stretch
        d_cy = d_cx + rc
    atoms = sn2_complex(x, y, d_cx, d_cy, 90.0 + 19.5 * np.tanh(-rc / 0.8))
    atoms.calc = _xtb(-1)
    atoms.set_constraint(FixInternals(bondcombos=[[rc, [[0, 5, 1.0], [0, 4, -1.0]]]]))
    try:
        BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    except CalculationFailed:
        return _ion_plus_molecule(x, y, rc)
    atoms.set_constraint()
    return Atoms(atoms.numbers, atoms.positions)


def thermalise(atoms: Atoms, temperature_K: float, steps: int, timestep_fs: float, charge: int, rng) -> Atoms:
    """Short GFN2-xTB Langevin run from ``atoms``; returns the last frame.

    Velocities start from a Maxwell–Boltzmann distribution at 2T so that after a few
    vibrational periods equipartition leaves roughly T in the vibrations.  If the
    GFN2-xTB SCF fails on the way, the run is repeated with a 3000 K electronic
    temperature (only the sampling potential changes, never the labels).
    """
    from ase.calculators.calculator import CalculationFailed
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    state = rng.bit_generator.state
    for etemp in (300.0, 3000.0):
        rng.bit_generator.state = state  # same random stream for the retry
        a = Atoms(atoms.numbers, atoms.positions)
        a.calc = _xtb(charge, etemp)
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


def methyl_halide(y: str) -> Atoms:
    """GFN2-xTB equilibrium CH3Y (atoms C, H, H, H, Y), C at the origin, C–Y along +z."""
    from ase.optimize import BFGS

    a = sn2_complex("F", y, 10.0, _CX_BOND[y], 109.5)
    a = a[[0, 1, 2, 3, 5]]
    a.calc = _xtb(0)
    BFGS(a, logfile=None).run(fmax=0.005, steps=300)
    a.positions -= a.positions[0]
    return Atoms(a.numbers, a.positions)


def _place_ion(mol: Atoms, x: str, d: float, direction: np.ndarray) -> Atoms:
    """CH3Y (C, H, H, H, Y) + ion X at distance d (Å) from C along ``direction``; order C H H H X Y."""
    c = mol.positions[0]
    xpos = c + d * direction / np.linalg.norm(direction)
    pos = np.vstack([mol.positions[:4], xpos[None], mol.positions[4:5]])
    return Atoms([6, 1, 1, 1, x, mol.numbers[4]], positions=pos)


def _pairs(halogens: Iterable[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations_with_replacement(list(halogens), 2))


def plan_sn2(config: dict, progress: bool = True) -> list[Atoms]:
    """Deterministic list of SN2 geometries (see module docstring).  Each frame's info
    holds ``kind``, ``system`` (``"X+CH3Y"``), ``charge`` (−1) and, for path frames, ``rc``."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(config["seed"])
    frames: list[Atoms] = []
    held = {tuple(sorted(p)) for p in config.get("heldout_clean_path_pairs", [])}
    temps = config["temperatures_K"]
    jobs = [(x, y, rc) for (x, y) in _pairs(config["halogens"]) for rc in config["path_rc_A"]]
    for x, y, rc in tqdm(jobs, desc="planning SN2 paths (GFN2-xTB)", disable=not progress):
        base = relaxed_path_point(x, y, rc)
        info = {"system": f"{x}+CH3{y}", "charge": -1, "rc": float(rc)}
        if tuple(sorted((x, y))) not in held:
            frames.append(Atoms(base.numbers, base.positions, info={"kind": "path", **info}))
        for _ in range(config["path_thermal_per_point"]):
            t = float(rng.choice(temps))
            a = thermalise(base, t, config["thermal_steps"], config["thermal_timestep_fs"], -1, rng)
            a.info = {"kind": "path_thermal", "temperature_K": t, **info}
            frames.append(a)
    dmin, dmax = config["ion_molecule_distance_A"]
    halos = list(config["halogens"])
    molecules = {y: methyl_halide(y) for y in halos}
    for x, y in tqdm(list(itertools.product(halos, halos)), desc="planning ion–molecule frames", disable=not progress):
        n = config["ion_molecule_per_pair"]
        for i in range(n):
            t = float(rng.choice(temps))
            mol = thermalise(molecules[y], t, config["thermal_steps"], config["thermal_timestep_fs"], 0, rng)
            axis = mol.positions[0] - mol.positions[4]  # backside: from Y through C
            axis /= np.linalg.norm(axis)
            while True:
                d = float(rng.uniform(dmin, dmax))
                if i < config["ion_molecule_backside_fraction"] * n:
                    direction = axis + 0.35 * rng.normal(size=3)  # within roughly 30° of the axis
                else:
                    direction = rng.normal(size=3)
                a = _place_ion(mol, x, d, direction)
                dists = np.linalg.norm(a.positions[:4] - a.positions[4], axis=1).tolist()
                dists.append(np.linalg.norm(a.positions[5] - a.positions[4]))
                if min(dists) >= config["min_ion_distance_A"]:
                    break
            a.info = {"kind": "ion_molecule", "system": f"{x}+CH3{y}", "charge": -1,
                      "temperature_K": t, "d_CX_A": d}
            frames.append(a)
    return frames


DEFAULT_SN2_TEST_CONFIG: dict = {
    "pair": ["Cl", "Br"],
    "relaxed_path_rc_A": [-1.2, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2],
    "relaxed_path_fmax_eV_A": 0.03,
    "relaxed_path_max_steps": 25,
    "pull_distances_A": [3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 10.5, 11.0, 11.5, 12.0],
}


def plan_sn2_tests(config: dict) -> list[Atoms]:
    """Held-out SN2 test geometries for X⁻ + CH3Y with (X, Y) = ``config['pair']``.

    * ``kind='test_relaxed_path'``: GFN2-xTB constrained path points near the transition
      state; the labeller re-relaxes them at PBE0 level at fixed rc (``info['relax_rc']``).
    * ``kind='test_pull'``: X⁻ pulled away from the GFN2-xTB equilibrium CH3Y along the
      C–X axis (backside), d(C–X) from 3.5 to 12 Å; rigid.
    """
    x, y = config["pair"]
    frames = []
    for rc in config["relaxed_path_rc_A"]:
        a = relaxed_path_point(x, y, rc)
        a.info = {"kind": "test_relaxed_path", "system": f"{x}+CH3{y}", "charge": -1, "rc": float(rc),
                  "relax_rc": float(rc), "relax_fmax": config["relaxed_path_fmax_eV_A"],
                  "relax_steps": config["relaxed_path_max_steps"]}
        frames.append(a)
    mol = methyl_halide(y)
    axis = mol.positions[0] - mol.positions[4]
    for d in config["pull_distances_A"]:
        a = _place_ion(mol, x, d, axis)
        a.info = {"kind": "test_pull", "system": f"{x}+CH3{y}", "charge": -1, "d_CX_A": float(d)}
        frames.append(a)
    return frames


class PySCFLabeller:
    """PBE0/def2-SVPD (density fitting) energies and forces with PySCF.

    Frames whose ``info`` holds ``relax_rc`` are first relaxed at this level of theory
    with the reaction coordinate d(C–Y) − d(C–X) held fixed (ASE BFGS); the relaxed
    geometry is returned in the label.

    Args:
      xc, basis: functional and orbital basis; def2 ECPs are added for elements > Kr.
      conv_tol: SCF energy tolerance in Hartree.
      max_cycle: DIIS cycles before the second-order (Newton) fallback.
      threads: PySCF/OpenMP threads.
    """

    def __init__(self, xc: str = "pbe0", basis: str = "def2-svpd", conv_tol: float = 1e-9,
                 max_cycle: int = 100, threads: int = 1):
        self.xc, self.basis, self.conv_tol, self.max_cycle = xc, basis, conv_tol, max_cycle
        self.threads = threads
        self._last: tuple[tuple, np.ndarray] | None = None  # (composition, density matrix) as SCF guess

    def _scf(self, atoms: Atoms, charge: int):
        from pyscf import dft, gto, lib

        lib.num_threads(self.threads)
        heavy = {s for s, z in zip(atoms.get_chemical_symbols(), atoms.numbers) if z > 36}
        ecp = {s: self.basis for s in heavy}  # def2 basis names carry their ECPs in PySCF
        mol = gto.M(
            atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            unit="Angstrom", basis=self.basis, ecp=ecp or None, charge=charge, spin=0, verbose=0,
        )
        mf = dft.RKS(mol, xc=self.xc).density_fit()
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        key = tuple(atoms.numbers)
        dm0 = self._last[1] if self._last is not None and self._last[0] == key else None
        mf.kernel(dm0=dm0)
        fallback = False
        if not mf.converged:
            fallback = True
            mf = mf.newton()
            mf.max_cycle = 50
            mf.kernel(dm0=mf.make_rdm1())
        return mf, fallback

    def energy_forces(self, atoms: Atoms, charge: int) -> tuple[float, np.ndarray, bool, dict]:
        """Energy (eV), forces (eV/Å), converged flag and diagnostics for one geometry."""
        mf, fallback = self._scf(atoms, charge)
        meta = {"newton_fallback": fallback}
        if not mf.converged:
            self._last = None
            return float("nan"), np.full((len(atoms), 3), np.nan), False, meta
        self._last = (tuple(atoms.numbers), mf.make_rdm1())
        grad = mf.nuc_grad_method().kernel()  # Hartree/Bohr
        energy = float(mf.e_tot) * units.Hartree
        forces = -np.asarray(grad) * units.Hartree / units.Bohr
        return energy, forces, True, meta

    def __call__(self, atoms: Atoms) -> Label:
        charge = int(atoms.info.get("charge", 0))
        if "relax_rc" in atoms.info:
            return self._relax_and_label(atoms, charge)
        e, f, ok, meta = self.energy_forces(atoms, charge)
        return Label(e, f, ok, meta)

    def _relax_and_label(self, atoms: Atoms, charge: int) -> Label:
        from ase.calculators.calculator import Calculator, all_changes
        from ase.optimize import BFGS

        labeller = self

        class _Calc(Calculator):
            implemented_properties = ["energy", "forces"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                e, f, ok, _ = labeller.energy_forces(self.atoms, charge)
                if not ok:
                    raise RuntimeError("SCF not converged during relaxation")
                self.results = {"energy": e, "forces": f}

        a = Atoms(atoms.numbers, atoms.positions)
        a.calc = _Calc()
        rc = float(atoms.info["relax_rc"])
        a.set_constraint(FixInternals(bondcombos=[[rc, [[0, 5, 1.0], [0, 4, -1.0]]]]))
        try:
            opt = BFGS(a, logfile=None)
            converged = opt.run(fmax=float(atoms.info.get("relax_fmax", 0.03)), steps=int(atoms.info.get("relax_steps", 25)))
        except RuntimeError:
            return Label(float("nan"), np.full((len(atoms), 3), np.nan), False, {"relaxed": False})
        fmax = float(np.abs(a.get_forces()).max())  # constrained forces
        a.set_constraint()
        e, f, ok, meta = self.energy_forces(a, charge)
        meta.update({"relaxed": bool(converged), "relax_fmax_reached": fmax, "relax_steps_taken": opt.nsteps})
        return Label(e, f, ok, meta, positions=a.positions.copy())
