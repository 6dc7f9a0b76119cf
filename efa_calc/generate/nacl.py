"""Tosi–Fumi NaCl reference data (issue 25): LAMMPS MD frames of a rigid-ion potential with exact Ewald Coulomb.

Potential (LAMMPS ``units metal``; charges +1 e on Na, −1 e on Cl, ``atom_style charge``)::

    pair_style born/coul/long 9.0        φ_ij(r) = A exp((σ − r)/ρ) − C/r⁶ − D/r⁸ + q_i q_j e²/(4πε₀ r)
    pair_modify table 0                  (real-space Coulomb computed, not tabulated: forces = −∇E)
    kspace_style ewald 1e-6              (Coulomb: Ewald sum, relative force accuracy 1e-6)

with the Tosi–Fumi parameters (A eV, ρ Å, σ Å, C eV·Å⁶, D eV·Å⁸) of :data:`TOSI_FUMI`.  LAMMPS's
``born`` is E = A exp((σ − r)/ρ) − C/r⁶ **+** D/r⁸, so the (attractive) Tosi–Fumi dipole–quadrupole
term enters its ``pair_coeff`` as −D (checked numerically in ``tests/test_nacl_labeller.py``).
The Born part is truncated at 9 Å without shift, as ``born/coul/long`` does by default.

Frames are sampled by LAMMPS itself (Nosé–Hoover NVT, velocity Verlet) in blocks of state
points given by the config (see ``models/configs/nacl-data.toml``):

* ``crystal_nvt``: rock-salt crystals (``repeats`` of the 8-ion cubic cell) with lattice
  constants ``lattice_A`` under random symmetric strains (``max_strain``, shear included);
* ``melt_nvt``: a rock-salt crystal scaled to ``densities_g_cm3``, melted at ``premelt_K``
  for ``premelt_ps``, then NVT at each T;
* ``slab_nvt``: non-polar (001) and (110) slabs (``faces``) of one lattice constant ``lattice_A``
  (a number), ``layers`` cubic cells thick and
  ``repeats`` (2 numbers) in plane, with ``vacuum_A`` of vacuum along c: the cell stays fully
  periodic (3D Ewald with a vacuum gap, exactly what a periodic model sees);
* ``defect_nvt``: crystals with one ``vacancy_Na`` (net charge −1 e), ``vacancy_Cl`` (+1 e) or an
  ``antisite`` pair (a Na and a Cl more than 5 Å apart swapped; neutral), of one lattice constant
  ``lattice_A`` (a number).  A charged
  cell gets Ewald's uniform neutralising background (LAMMPS's default).

Each state point is equilibrated for ``equilibration_ps`` and then ``frames`` frames are kept
``spacing_ps`` apart.  The ``n``-th state point of a block uses ``repeats[n % len]``.  Cells are
stored in LAMMPS's orientation (lower-triangular, rows are lattice vectors in Å).  Labels come
from :class:`~efa_calc.generate.lammps_labeller.LammpsLabeller` with the same potential.

Frame ``info``: ``kind`` (``crystal`` | ``melt`` | ``slab`` | ``defect``), ``ensemble``,
``temperature_K``, ``source``, ``state_point``, ``num_atoms``, ``charge`` (net, e),
``density_g_cm3`` (of the cell; for slabs including the vacuum), ``lattice_A``,
``strain_voigt`` (crystals), ``face`` (``"(001)"`` | ``"(110)"``) and ``vacuum_A`` (slabs), ``defect`` (defects),
``rms_displacement_A`` (from the sites at the start of production), ``time_ps``.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.build import bulk, surface

from efa_calc.generate.lammps_labeller import LammpsLabeller, lammps_frame, rms_displacement, setup_lammps_system
from efa_calc.interfaces.lammps_runtime import new_lammps

__all__ = ["TOSI_FUMI", "SPECIES", "CHARGES", "MASSES", "nacl_pair_commands", "nacl_labeller", "density_g_cm3",
           "rocksalt", "slab", "with_defect", "plan_nacl"]

#: Tosi–Fumi NaCl: (A eV, ρ Å, σ Å, C eV·Å⁶, D eV·Å⁸) of φ = A exp((σ − r)/ρ) − C/r⁶ − D/r⁸
TOSI_FUMI = {("Na", "Na"): (0.2637, 0.317, 2.340, 1.0486, 0.4993),
             ("Na", "Cl"): (0.2110, 0.317, 2.755, 6.9906, 8.6758),
             ("Cl", "Cl"): (0.1582, 0.317, 3.170, 72.402, 145.43)}
SPECIES = ("Na", "Cl")  # LAMMPS types 1, 2
CHARGES = {"Na": 1.0, "Cl": -1.0}  # e
MASSES = {"Na": 22.98977, "Cl": 35.453}  # amu
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660
_REQUIRED = ("seed", "cutoff_A", "ewald_accuracy", "timestep_fs", "tdamp_fs", "equilibration_ps")
_BLOCKS = {
    "crystal_nvt": ("temperatures_K", "lattice_A", "repeats", "strains", "max_strain", "frames", "spacing_ps"),
    "melt_nvt": ("temperatures_K", "densities_g_cm3", "repeats", "premelt_K", "premelt_ps", "frames", "spacing_ps"),
    "slab_nvt": ("temperatures_K", "faces", "lattice_A", "repeats", "layers", "vacuum_A", "frames", "spacing_ps"),
    "defect_nvt": ("temperatures_K", "defects", "lattice_A", "repeats", "frames", "spacing_ps"),
}
_AXIS = {"crystal_nvt": "lattice_A", "melt_nvt": "densities_g_cm3", "slab_nvt": "faces", "defect_nvt": "defects"}
_FACES = {"001": (0, 0, 1), "110": (1, 1, 0)}
_DEFECTS = ("vacancy_Na", "vacancy_Cl", "antisite")
_SOLID_MAX_RMS_A = 1.0  # Å from the sites: a crystal beyond it has melted (Lindemann ~0.1 × 2.8 Å)
_MELT_MIN_RMS_A = 2.0  # Å after the production: a melt below it has frozen or never melted


def nacl_pair_commands(cutoff_A: float = 9.0, ewald_accuracy: float = 1e-6) -> list[str]:
    """LAMMPS commands of the Tosi–Fumi potential (types 1 = Na, 2 = Cl; LAMMPS's D is −D_TF)."""
    out = [f"pair_style born/coul/long {float(cutoff_A)!r}"]
    for (a, b), (amp, rho, sigma, c6, d8) in TOSI_FUMI.items():
        i, j = sorted((1 + SPECIES.index(a), 1 + SPECIES.index(b)))
        out.append(f"pair_coeff {i} {j} {amp!r} {rho!r} {sigma!r} {c6!r} {-d8!r}")
    # table 0: the real-space erfc/r computed exactly; LAMMPS's default 2¹² lookup table makes
    # the forces differ from −∇E by ~1e-3 eV/Å (measured: tests/test_nacl_labeller.py)
    return out + ["pair_modify table 0", f"kspace_style ewald {float(ewald_accuracy)!r}"]


def _pair(params: dict) -> list[str]:
    return nacl_pair_commands(float(params["cutoff_A"]), float(params["ewald_accuracy"]))


def nacl_labeller(params: dict) -> LammpsLabeller:
    """The labeller of the NaCl recipes: the sampling potential itself (``cutoff_A``, ``ewald_accuracy``)."""
    return LammpsLabeller(_pair(params), species=list(SPECIES), masses=MASSES, charges=CHARGES)


def density_g_cm3(atoms: Atoms) -> float:
    """Mass density of the cell (g/cm³), vacuum included."""
    mass = sum(MASSES[s] for s in atoms.get_chemical_symbols())
    return mass / atoms.get_volume() * AMU_PER_A3_TO_G_PER_CM3


def rocksalt(a: float, repeats) -> Atoms:
    """Rock-salt NaCl, ``repeats`` (3 ints) of the 8-ion cubic cell of edge ``a`` (Å), fully periodic."""
    return bulk("NaCl", "rocksalt", a=float(a), cubic=True).repeat(tuple(int(r) for r in repeats))


def _strained(atoms: Atoms, max_strain: float, rng) -> tuple[Atoms, np.ndarray]:
    """``atoms`` deformed by a random symmetric strain ε (|ε_ij| ≤ max_strain); (atoms, ε in Voigt order)."""
    eps = rng.uniform(-max_strain, max_strain, (3, 3))
    eps = 0.5 * (eps + eps.T)
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out, eps[(0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)]


def slab(a: float, face: str, repeats, layers: int, vacuum_A: float) -> Atoms:
    """Non-polar rock-salt slab: ``face`` '001' or '110' (of the cubic cell), ``layers`` cubic cells
    thick (2 atomic planes each), ``repeats`` (2 ints) in plane, ``vacuum_A`` Å of vacuum along c; pbc all True."""
    if face not in _FACES:
        raise ValueError(f"slab face={face!r}; allowed: {sorted(_FACES)}")
    cut = surface(bulk("NaCl", "rocksalt", a=float(a), cubic=True), _FACES[face], int(layers), vacuum=None, periodic=True)
    cut = cut.repeat((int(repeats[0]), int(repeats[1]), 1))
    cut.center(vacuum=float(vacuum_A) / 2, axis=2)  # vacuum/2 on each side: a gap of vacuum_A between images
    cut.pbc = True
    return cut


def with_defect(crystal: Atoms, defect: str, rng) -> Atoms:
    """``crystal`` with one ``vacancy_Na``, ``vacancy_Cl`` or ``antisite`` pair (Na and Cl ≥ 1 lattice constant apart)."""
    if defect not in _DEFECTS:
        raise ValueError(f"defect={defect!r}; allowed: {list(_DEFECTS)}")
    out = crystal.copy()
    symbols = np.array(out.get_chemical_symbols())
    if defect.startswith("vacancy"):
        del out[int(rng.choice(np.flatnonzero(symbols == defect.split("_")[1])))]
        return out
    na = int(rng.choice(np.flatnonzero(symbols == "Na")))
    dist = out.get_distances(na, np.flatnonzero(symbols == "Cl"), mic=True)
    far = np.flatnonzero(symbols == "Cl")[dist > 5.0]
    cl = int(rng.choice(far))
    symbols[[na, cl]] = symbols[[cl, na]]
    out.set_chemical_symbols(symbols.tolist())
    return out


def run_md(start: Atoms, params: dict, temperature: float, frames: int, spacing_ps: float, seed: int,
           premelt_K: float | None = None, premelt_ps: float = 0.0) -> list[Atoms]:
    """LAMMPS Nosé–Hoover NVT (``timestep_fs``, ``tdamp_fs``) from ``start``: optionally ``premelt_ps`` at
    ``premelt_K`` (K), ``equilibration_ps`` at ``temperature`` (K), then ``frames`` snapshots ``spacing_ps`` apart,
    each with ``info['time_ps']`` and ``info['rms_displacement_A']`` from the sites at the start of production."""
    dt = float(params["timestep_fs"])
    tdamp = float(params["tdamp_fs"]) / 1000
    steps = lambda ps: int(round(ps * 1000 / dt))  # noqa: E731
    lmp = new_lammps()
    try:
        setup_lammps_system(lmp, start, list(SPECIES), _pair(params), MASSES, CHARGES)
        lmp.commands_list(["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes", f"timestep {dt / 1000!r}",
                           "thermo 1000"])
        t0 = premelt_K if premelt_K is not None else temperature
        lmp.command(f"velocity all create {t0!r} {seed} mom yes rot no dist gaussian")
        if premelt_K is not None:
            lmp.commands_list([f"fix md all nvt temp {t0!r} {t0!r} {tdamp!r}", f"run {steps(premelt_ps)}", "unfix md",
                               f"velocity all scale {temperature!r}"])
        lmp.commands_list([f"fix md all nvt temp {temperature!r} {temperature!r} {tdamp!r}",
                           f"run {steps(float(params['equilibration_ps']))}"])
        sites = lammps_frame(lmp, len(start), SPECIES)
        out = []
        for k in range(frames):
            lmp.command(f"run {steps(spacing_ps)} pre no post no")
            frame = lammps_frame(lmp, len(start), SPECIES)
            frame.info["time_ps"] = round((k + 1) * spacing_ps, 6)
            frame.info["rms_displacement_A"] = round(rms_displacement(frame, sites), 4)
            out.append(frame)
        return out
    finally:
        lmp.close()


def _jobs(name: str, block: dict) -> list[dict]:
    """State points of one block (module docstring), each a dict of its settings."""
    axis = _AXIS[name]
    temps = block["temperatures_K"]
    jobs = []
    for i, (t, x) in enumerate(itertools.product(temps, block[axis])):
        job = {k: v for k, v in block.items() if k not in ("temperatures_K", axis, "repeats")}
        jobs.append({**job, "block": name, "temperature_K": float(t), axis: x,
                     "repeats": block["repeats"][i % len(block["repeats"])]})
    return jobs


def _starts(job: dict, rng) -> list[tuple[Atoms, dict]]:
    """Starting cells of a state point and the info each one's frames carry."""
    name = job["block"]
    if name == "crystal_nvt":
        return [(s, {"lattice_A": float(job["lattice_A"]), "strain_voigt": e.round(8)})
                for s, e in (_strained(rocksalt(job["lattice_A"], job["repeats"]), float(job["max_strain"]), rng)
                             for _ in range(int(job["strains"])))]
    if name == "melt_nvt":
        crystal = rocksalt(5.64, job["repeats"])
        crystal.set_cell(crystal.cell.array * (density_g_cm3(crystal) / float(job["densities_g_cm3"])) ** (1 / 3),
                         scale_atoms=True)
        return [(crystal, {})]
    if name == "slab_nvt":
        cut = slab(job["lattice_A"], job["faces"], job["repeats"], job["layers"], job["vacuum_A"])
        # "(001)", not "001": extxyz would read the bare digits back as the integer 1
        return [(cut, {"face": f"({job['faces']})", "lattice_A": float(job["lattice_A"]), "vacuum_A": float(job["vacuum_A"])})]
    crystal = with_defect(rocksalt(job["lattice_A"], job["repeats"]), job["defects"], rng)
    return [(crystal, {"defect": job["defects"], "lattice_A": float(job["lattice_A"])})]


def _check(job: dict, frames: list[Atoms]) -> None:
    """Refuse a state point whose phase is not the one planned (melted crystal, frozen melt)."""
    rms = [f.info["rms_displacement_A"] for f in frames]
    if job["block"] == "melt_nvt" and rms[-1] < _MELT_MIN_RMS_A:
        raise RuntimeError(f"state point {job}: RMS displacement {rms[-1]} Å < {_MELT_MIN_RMS_A} Å over the "
                           "production (not a liquid); choose another state point")
    if job["block"] in ("crystal_nvt", "defect_nvt") and max(rms) > _SOLID_MAX_RMS_A:
        raise RuntimeError(f"state point {job}: RMS displacement {max(rms)} Å > {_SOLID_MAX_RMS_A} Å "
                           "(the crystal melted); choose another state point")


def _sample(job: dict, params: dict, rng) -> list[Atoms]:
    kind = job["block"].split("_")[0]
    source = (f"LAMMPS NVT MD (Nose-Hoover, {params['timestep_fs']} fs), Tosi-Fumi NaCl, born/coul/long "
              f"{params['cutoff_A']} + ewald {params['ewald_accuracy']}")
    out = []
    for start, extra in _starts(job, rng):
        premelt = (float(job["premelt_K"]), float(job["premelt_ps"])) if kind == "melt" else (None, 0.0)
        frames = run_md(start, params, job["temperature_K"], int(job["frames"]), float(job["spacing_ps"]),
                        int(rng.integers(1, 2**30)), *premelt)
        _check(job, frames)
        for f in frames:
            charge = sum(CHARGES[s] for s in f.get_chemical_symbols())
            f.info.update({"kind": kind, "ensemble": "NVT", "temperature_K": job["temperature_K"], "source": source,
                           "system": "NaCl", "charge": int(round(charge)), "num_atoms": len(f),
                           "density_g_cm3": round(density_g_cm3(f), 6), **extra})
        out += frames
    return out


def plan_nacl(params: dict) -> list[Atoms]:
    """Deterministic list of NaCl frames (module docstring) from ``params``: the potential and MD
    settings plus the blocks ``crystal_nvt``, ``melt_nvt``, ``slab_nvt``, ``defect_nvt``."""
    from tqdm.auto import tqdm

    unknown = sorted(k for k, v in params.items() if isinstance(v, dict) and k not in _BLOCKS)
    if unknown:
        raise ValueError(f"unknown nacl blocks {unknown}; known: {list(_BLOCKS)}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ValueError(f"nacl params lack {missing} (required: {list(_REQUIRED)})")
    for name, need in _BLOCKS.items():
        lacking = [k for k in need if name in params and k not in params[name]]
        if lacking:
            raise ValueError(f"nacl block {name!r} lacks {lacking} (required: {list(need)})")
    for name in ("slab_nvt", "defect_nvt"):
        if name in params and not isinstance(params[name]["lattice_A"], (int, float)):
            raise ValueError(f"nacl block {name!r}: lattice_A must be one number (Å), got {params[name]['lattice_A']!r}")
    for key, allowed in (("faces", _FACES), ("defects", _DEFECTS)):
        block = params.get({"faces": "slab_nvt", "defects": "defect_nvt"}[key], {})
        bad = sorted(set(block.get(key, [])) - set(allowed))
        if bad:
            raise ValueError(f"nacl {key} {bad} unknown; allowed: {sorted(allowed)}")
    rng = np.random.default_rng(int(params["seed"]))
    jobs = [j for name in _BLOCKS if name in params for j in _jobs(name, params[name])]
    frames = []
    for sp, job in enumerate(tqdm(jobs, desc="sampling NaCl state points (LAMMPS MD)")):
        for f in _sample(job, params, rng):
            f.info["state_point"] = sp
            frames.append(f)
    return frames
