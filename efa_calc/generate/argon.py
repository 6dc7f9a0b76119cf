"""Argon reference data for ``argon-local``: LAMMPS MD frames of a shifted-force LJ potential.

Potential (units metal)::

    pair_style lj/smooth/linear 8.5      E(r) = 4ε[(σ/r)¹² − (σ/r)⁶] − E_LJ(rc) − (r − rc) E_LJ'(rc),  r < rc
    pair_coeff * * 0.010323 3.405        ε = 0.010323 eV, σ = 3.405 Å, rc = 8.5 Å; mass 39.948 amu

Frames are sampled by LAMMPS itself (Nosé–Hoover NVT or NPT, velocity Verlet) in blocks
of state points given by the config:

* ``liquid_nvt``: cubic boxes of ``num_atoms`` atoms at ``densities_g_cm3`` (g/cm³), random
  non-overlapping start (nearest distance ≥ 3 Å), energy-minimised, then NVT at each T;
* ``liquid_npt``: the same kind of start at 1.3 g/cm³, then NPT (isotropic) at
  ``pressures_bar``, so the densities are the potential's own at (T, P);
* ``solid_nvt``: fcc crystals (``repeats`` of the cubic 4-atom cell) with lattice constants
  ``lattice_A`` under random small symmetric strains (``max_strain``, shear included:
  triclinic cells), NVT at each T;
* ``liquid_slab``: a liquid of ``num_atoms`` at ``densities_g_cm3`` in a box whose c axis is
  ``vacuum_factor`` times longer (a slab with two free surfaces), NVT at each T: liquid–vapour
  interfaces, evaporated atoms and the vapour (what a cavity in the liquid looks like);
* ``gas_nvt``: random starts at low ``densities_g_cm3`` (no sanity window), NVT at each T:
  gas, and below T_c droplets and clusters (low-coordination environments).

Each state point is equilibrated for ``equilibration_ps`` and then ``frames`` frames are
kept ``spacing_ps`` apart.  The ``n``-th state point of a block (the product of its
temperatures, densities/pressures/lattices, in that order) uses ``num_atoms[n % len]``
(or ``repeats[n % len]``).  Cells are stored in LAMMPS's orientation (lower-triangular,
rows are lattice vectors in Å), fully periodic.  Labels come from
:class:`~efa_calc.generate.lammps_labeller.LammpsLabeller` with the same potential.

Frame ``info``: ``kind`` (``liquid`` | ``solid`` | ``interface`` | ``gas``), ``ensemble``, ``temperature_K``,
``source``, ``state_point``, ``num_atoms``, ``density_g_cm3`` (of the frame),
``pressure_bar`` (NPT target), ``lattice_A`` and ``strain_voigt`` (solids), ``time_ps``.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.build import bulk

from efa_calc.generate.lammps_labeller import LammpsLabeller, lammps_frame, rms_displacement, setup_lammps_system
from efa_calc.interfaces.lammps_runtime import new_lammps

__all__ = ["AMU_PER_A3_TO_G_PER_CM3", "argon_pair_commands", "plan_argon", "argon_labeller", "density_g_cm3"]

AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660
_SANE_DENSITY = (0.7, 2.0)  # g/cm³: outside, a "liquid" has boiled or cavitated
_REQUIRED = ("seed", "pair_style", "epsilon_eV", "sigma_A", "mass_amu", "timestep_fs", "tdamp_fs", "pdamp_fs",
             "equilibration_ps")
_BLOCK_KEYS = {
    "liquid_nvt": ("temperatures_K", "densities_g_cm3", "num_atoms", "frames", "spacing_ps"),
    "liquid_npt": ("temperatures_K", "pressures_bar", "num_atoms", "frames", "spacing_ps"),
    "solid_nvt": ("temperatures_K", "lattice_A", "repeats", "frames", "spacing_ps"),
    "liquid_slab": ("temperatures_K", "densities_g_cm3", "num_atoms", "vacuum_factor", "frames", "spacing_ps"),
    "gas_nvt": ("temperatures_K", "densities_g_cm3", "num_atoms", "frames", "spacing_ps"),
}
_KINDS = {"liquid_nvt": ("liquid", "NVT"), "liquid_npt": ("liquid", "NPT"), "solid_nvt": ("solid", "NVT"),
          "liquid_slab": ("interface", "NVT"), "gas_nvt": ("gas", "NVT")}
_MELTED_RMS_A = 1.0  # Å from the lattice sites; Lindemann's melting criterion is ~0.1 × 3.8 Å


def argon_pair_commands(params: dict) -> list[str]:
    """LAMMPS commands of the potential in ``params`` (``pair_style``, ``epsilon_eV``, ``sigma_A``)."""
    return [f"pair_style {params['pair_style']}", f"pair_coeff * * {params['epsilon_eV']!r} {params['sigma_A']!r}"]


def argon_labeller(params: dict) -> LammpsLabeller:
    """The labeller of the argon recipes: the sampling potential itself."""
    return LammpsLabeller(argon_pair_commands(params), species=["Ar"], masses={"Ar": float(params["mass_amu"])})


def density_g_cm3(atoms: Atoms, mass_amu: float) -> float:
    """Mass density of a one-element cell (g/cm³)."""
    return len(atoms) * mass_amu / atoms.get_volume() * AMU_PER_A3_TO_G_PER_CM3


def _random_liquid(n: int, density: float, mass: float, rng, d_min: float = 3.0) -> Atoms:
    """n atoms placed at random in a cubic box (Å) with all periodic distances ≥ d_min (sequential insertion)."""
    length = (n * mass * AMU_PER_A3_TO_G_PER_CM3 / density) ** (1 / 3)
    pos = np.empty((0, 3))
    for _ in range(200 * n):
        if len(pos) == n:
            break
        trial = rng.uniform(0.0, length, 3)
        d = pos - trial
        d -= length * np.round(d / length)
        if len(pos) == 0 or np.min(np.einsum("ij,ij->i", d, d)) >= d_min**2:
            pos = np.vstack([pos, trial])
    if len(pos) < n:
        raise RuntimeError(f"could not place {n} atoms at {density} g/cm³ with d_min {d_min} Å")
    return Atoms(f"Ar{n}", pos, cell=[length] * 3, pbc=True)


def _strained_fcc(a: float, repeats, max_strain: float, rng) -> tuple[Atoms, np.ndarray]:
    """fcc crystal (cubic cells × ``repeats``) deformed by a random symmetric strain ε (|ε_ij| ≤ max_strain)."""
    crystal = bulk("Ar", "fcc", a=a, cubic=True).repeat(tuple(int(r) for r in repeats))
    eps = rng.uniform(-max_strain, max_strain, (3, 3))
    eps = 0.5 * (eps + eps.T)
    crystal.set_cell(crystal.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return crystal, eps[(0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)]


def run_md(start: Atoms, params: dict, temperature: float, frames: int, spacing_ps: float, seed: int,
           pressure_bar: float | None = None, minimize: bool = False, track_sites: bool = False) -> list[Atoms]:
    """LAMMPS NVT (or isotropic NPT at ``pressure_bar``) from ``start``; ``frames`` snapshots ``spacing_ps`` apart.

    Nosé–Hoover with ``tdamp_fs`` / ``pdamp_fs``, ``timestep_fs``; ``equilibration_ps`` first.
    Each snapshot gets ``info['time_ps']`` (after equilibration) and, with ``track_sites``
    (NVT only), ``info['rms_displacement_A']`` from the starting sites (a melted crystal shows it).
    """
    dt = float(params["timestep_fs"])
    lmp = new_lammps()
    try:
        setup_lammps_system(lmp, start, ["Ar"], argon_pair_commands(params), {"Ar": float(params["mass_amu"])})
        lmp.commands_list(["neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes", f"timestep {dt / 1000!r}",
                           "thermo 1000"])
        if minimize:
            lmp.command("minimize 1.0e-6 1.0e-4 200 2000")
        sites = lammps_frame(lmp, len(start), ["Ar"])
        tdamp = float(params["tdamp_fs"]) / 1000
        fix = f"fix md all nvt temp {temperature!r} {temperature!r} {tdamp!r}"
        if pressure_bar is not None:
            fix = (f"fix md all npt temp {temperature!r} {temperature!r} {tdamp!r} "
                   f"iso {pressure_bar!r} {pressure_bar!r} {float(params['pdamp_fs']) / 1000!r}")
        lmp.commands_list([f"velocity all create {temperature!r} {seed} mom yes rot no dist gaussian", fix,
                           f"run {int(round(float(params['equilibration_ps']) * 1000 / dt))}"])
        out = []
        for k in range(frames):
            lmp.command(f"run {int(round(spacing_ps * 1000 / dt))} pre no post no")
            frame = lammps_frame(lmp, len(start), ["Ar"])
            frame.info["time_ps"] = round((k + 1) * spacing_ps, 6)
            if track_sites:
                frame.info["rms_displacement_A"] = round(rms_displacement(frame, sites), 4)
            out.append(frame)
        return out
    finally:
        lmp.close()


def _block_jobs(name: str, block: dict) -> list[dict]:
    """State points of one block (see the module docstring), each a dict of its settings."""
    kind, ensemble = _KINDS[name]
    axis = {"liquid_npt": "pressures_bar", "solid_nvt": "lattice_A"}.get(name, "densities_g_cm3")
    sizes = block["repeats"] if kind == "solid" else block["num_atoms"]
    jobs = []
    for i, (t, x) in enumerate(itertools.product(block["temperatures_K"], block[axis])):
        jobs.append({"kind": kind, "ensemble": ensemble, "block": name, "temperature_K": float(t), axis: float(x),
                     "size": sizes[i % len(sizes)], "frames": int(block["frames"]), "spacing_ps": float(block["spacing_ps"]),
                     "strains": int(block.get("strains", 1)), "max_strain": float(block.get("max_strain", 0.0)),
                     "vacuum_factor": float(block.get("vacuum_factor", 1.0))})
    return jobs


def _sample(job: dict, params: dict, rng) -> list[Atoms]:
    mass = float(params["mass_amu"])
    t = job["temperature_K"]
    if job["kind"] in ("interface", "gas"):
        start = _random_liquid(int(job["size"]), job["densities_g_cm3"], mass, rng)
        if job["kind"] == "interface":  # the liquid becomes a slab: c grows, the atoms stay in the bottom box
            start.set_cell(np.diag([1.0, 1.0, job["vacuum_factor"]]) @ start.cell.array, scale_atoms=False)
        frames = run_md(start, params, t, job["frames"], job["spacing_ps"], int(rng.integers(1, 2**30)), minimize=True)
        extra = [{"vacuum_factor": job["vacuum_factor"]} if job["kind"] == "interface" else {}] * len(frames)
    elif job["kind"] == "liquid":
        start = _random_liquid(int(job["size"]), float(job.get("densities_g_cm3", 1.3)), mass, rng)
        frames = run_md(start, params, t, job["frames"], job["spacing_ps"], int(rng.integers(1, 2**30)),
                        pressure_bar=job.get("pressures_bar"), minimize=True)
        extra = [{"pressure_bar": job["pressures_bar"]} if "pressures_bar" in job else {}] * len(frames)
    else:
        frames, extra = [], []
        for _ in range(job["strains"]):
            start, strain = _strained_fcc(job["lattice_A"], job["size"], job["max_strain"], rng)
            got = run_md(start, params, t, job["frames"], job["spacing_ps"], int(rng.integers(1, 2**30)), track_sites=True)
            frames += got
            extra += [{"lattice_A": job["lattice_A"], "strain_voigt": strain.round(8)}] * len(got)
    source = (f"LAMMPS {job['ensemble']} MD (Nose-Hoover, {params['timestep_fs']} fs), {params['pair_style']}, "
              f"eps {params['epsilon_eV']} eV, sigma {params['sigma_A']} A")
    for f, e in zip(frames, extra):
        rho = density_g_cm3(f, mass)
        if job["kind"] == "liquid" and not _SANE_DENSITY[0] < rho < _SANE_DENSITY[1]:
            raise RuntimeError(f"state point {job}: density {rho:.3f} g/cm³ outside {_SANE_DENSITY} "
                               "(the liquid boiled or cavitated); choose another state point")
        if job["kind"] == "solid" and f.info["rms_displacement_A"] > _MELTED_RMS_A:
            raise RuntimeError(f"state point {job}: RMS displacement {f.info['rms_displacement_A']} Å from the "
                               f"lattice sites > {_MELTED_RMS_A} Å (the crystal melted); choose another state point")
        f.info.update({"kind": job["kind"], "ensemble": job["ensemble"], "temperature_K": t, "source": source,
                       "system": "Ar", "charge": 0, "num_atoms": len(f), "density_g_cm3": round(rho, 6), **e})
    return frames


def plan_argon(params: dict) -> list[Atoms]:
    """Deterministic list of argon frames (see the module docstring) from ``params``:
    the potential and MD settings plus the blocks ``liquid_nvt``, ``liquid_npt``, ``solid_nvt``."""
    from tqdm.auto import tqdm

    known = tuple(_BLOCK_KEYS)  # new blocks go last: the earlier blocks' frames stay bit for bit
    unknown = sorted(k for k, v in params.items() if isinstance(v, dict) and k not in known)
    if unknown:
        raise ValueError(f"unknown argon blocks {unknown}; known: {list(known)}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ValueError(f"argon params lack {missing} (required: {list(_REQUIRED)})")
    for name in known:
        block = params.get(name, {})
        need = _BLOCK_KEYS[name] + (("strains", "max_strain") if name == "solid_nvt" else ())
        lacking = [k for k in need if block and k not in block]
        if lacking:
            raise ValueError(f"argon block {name!r} lacks {lacking} (required: {list(need)})")
    rng = np.random.default_rng(int(params["seed"]))
    jobs = [j for name in known if name in params for j in _block_jobs(name, params[name])]
    frames = []
    for sp, job in enumerate(tqdm(jobs, desc="sampling argon state points (LAMMPS MD)")):
        for f in _sample(job, params, rng):
            f.info["state_point"] = sp
            frames.append(f)
    return frames
