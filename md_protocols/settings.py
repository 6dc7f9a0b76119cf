"""Protocol settings: their types and ranges, the checks run before any work, and the engines.

Every setting is validated before any work starts (:func:`validate_settings`): its type
and allowed range come from :data:`SETTINGS` (or a protocol's own ``SETTINGS``), and a bad
value is a :class:`SettingError` naming the setting, the value and the allowed range.  The
model must resolve, a ``structure`` file must be readable and hold only the model's
elements, and the MD engine must offer the thermostat and replicas asked for
(:func:`check_engine`).  Units: eV, Å, fs, K, cm⁻¹, as the key names say.

This module imports nothing else of ``md_protocols`` but the engine table
(:mod:`md_protocols.engines`), so both the protocols' plumbing and the engines import it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

__all__ = ["SettingError", "Setting", "SETTINGS", "option_name", "setting_spec", "read_structure",
           "validate_settings", "check_engine", "GUARD_MODES", "guard_mode", "translate_legacy"]


class SettingError(ValueError):
    """A protocol setting (command-line argument) with a bad value."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """Type, allowed range and meaning of a protocol setting.

    ``kind`` is ``int``, ``float``, ``str``, ``bool``, ``"path"``, ``"model"`` or
    ``"indices"`` (comma-separated atom indices); ``lo``/``hi`` bound numbers (``lo_open``:
    strictly above ``lo``); ``choices`` lists allowed strings; ``count`` fixes the number of
    indices; ``optional`` marks a setting whose ``None`` default means "not given".
    """

    kind: Any
    help: str
    unit: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple = ()
    count: int | None = None
    optional: bool = False  # a None default means "not given" (not "required")

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind == "indices":
            return f"{self.count} comma-separated atom indices (0-based), e.g. " + ",".join(map(str, range(self.count or 1)))
        if self.kind in (int, float):
            what = "an integer" if self.kind is int else "a number"
            fmt = (lambda v: f"{int(v):,}".replace(",", " ")) if self.kind is int else (lambda v: f"{v:g}")
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '≥'} {fmt(self.lo)}"
            hi = "" if self.hi is None else f"≤ {fmt(self.hi)}"
            rng = " and ".join(x for x in (lo, hi) if x)
            return f"{what}{' ' + rng if rng else ''}{' ' + self.unit if self.unit else ''}"
        if self.kind is bool:
            return "true or false"
        if self.kind == "path":
            return "a readable structure file (any format ase.io.read understands, e.g. .xyz, .extxyz, .pdb)"
        if self.kind == "model":
            return "a bundled model name (efa-calc models) or a checkpoint directory"
        return "a string"


#: Settings shared by the protocols (a protocol's own ``SETTINGS`` adds to or overrides these).
SETTINGS: dict[str, Setting] = {
    "model": Setting("model", "bundled model name or checkpoint directory"),
    "structure": Setting("path", "starting structure: any file ase.io.read understands (the last frame is used)"),
    "steps": Setting(int, "MD steps in total (also when resuming)", "", 1, 100_000_000),
    "timestep_fs": Setting(float, "time step", "fs", 0, 10, lo_open=True),
    "temperature_K": Setting(float, "temperature (NVT target; NVE: of the initial Maxwell–Boltzmann velocities)",
                             "K", 0, 10_000, lo_open=True),
    "thermostat": Setting(str, "NVT thermostat", choices=("langevin", "bussi", "nose-hoover")),
    "engine": Setting(str, "MD engine: ase (ASE's integrators, one step per call; every thermostat) or jax "
                           "(jax-md inside XLA, many steps and replicas per call; langevin or nose-hoover; "
                           "needs pip install 'efa-calc[md]')", choices=("ase", "jax")),
    "replicas": Setting(int, "independent trajectories (own velocities and noise) run together in one batched "
                             "call; jax engine only; outputs in replica_000/ ...", "", 1, 4096),
    "dtype": Setting(str, "floating-point precision of the model", choices=("float32", "float64")),
    "message_passing": Setting(str, "message-passing kernel: auto (native on CPUs, the GPU default on GPUs), native, "
                                    "or cuequivariance (needs pip install 'efa-calc[cuequivariance]' or "
                                    "'efa-calc[gpu]')", choices=("auto", "native", "cuequivariance")),
    "seed": Setting(int, "random seed (velocities, Langevin noise)", "", 0, 2**32 - 1),
    "guard": Setting(str, "when a structure leaves the model's training envelope: error (the run stops, "
                          "resumably), warn and go on, or off (no check); the calculator's guard values",
                     choices=("error", "warn", "off")),
    "pressure_bar": Setting(float, "NPT target pressure (1 atm = 1.01325 bar)", "bar", -100_000, 10_000_000),
    "barostat": Setting(str, "NPT barostat: isotropic (ASE IsotropicMTKNPT, the cell scaled uniformly) or "
                             "anisotropic (ASE MTKNPT, all nine cell components)", choices=("isotropic", "anisotropic")),
    "tdamp_fs": Setting(float, "NPT thermostat time constant (Nosé–Hoover chain)", "fs", 0, 1e7, lo_open=True),
    "pdamp_fs": Setting(float, "NPT barostat time constant (MTK cell chain; ~1000 time steps)", "fs", 0, 1e8,
                        lo_open=True),
    "write_every": Setting(int, "write a trajectory frame every N steps", "", 1, 100_000_000),
    "log_every": Setting(int, "write a log.csv row every N steps", "", 1, 100_000_000),
    "relax_cell": Setting(bool, "optimise the cell too (ASE FrechetCellFilter; periodic structures only)"),
    "fmax": Setting(float, "force convergence threshold", "eV/Å", 0, 100, lo_open=True),
    "max_steps": Setting(int, "largest number of optimiser steps", "", 1, 10_000_000),
    "optimizer": Setting(str, "ASE optimiser", choices=("BFGS", "LBFGS", "FIRE", "bfgs", "lbfgs", "fire")),
    "n_carbons": Setting(int, "number of carbon atoms of the cumulene CnH4", "", 2, 40),
    "displacement_A": Setting(float, "finite displacement of phonopy", "Å", 0, 0.5, lo_open=True),
    "box_A": Setting(float, "edge of the vacuum box handed to phonopy", "Å", 0, 10_000, lo_open=True),
    "batch_size": Setting(int, "structures per XLA call", "", 1, 4096),
    "near_zero_cm1": Setting(float, "frequencies below this count as translations/rotations", "cm⁻¹", 0, 1000),
    "start_deg": Setting(float, "first dihedral of the scan", "degrees", -360, 360),
    "stop_deg": Setting(float, "last dihedral of the scan", "degrees", -360, 360),
    "step_deg": Setting(float, "dihedral increment", "degrees", 0, 360, lo_open=True),
    "start_dihedral_deg": Setting(float, "CH2–CH2 dihedral of the starting structure", "degrees", -360, 360),
    "dihedral": Setting("indices", "the four atoms i,j,k,l of the scanned dihedral (the k side rotates)", count=4),
    "images": Setting(int, "NEB images including the end points", "", 3, 200),
    "spring_constant": Setting(float, "NEB spring constant", "eV/Å²", 0, 100, lo_open=True),
    "nucleophile": Setting(str, "the incoming halide X⁻", choices=("F", "Cl", "Br")),
    "leaving_group": Setting(str, "the leaving halide Y", choices=("F", "Cl", "Br")),
    "distance_A": Setting(float, "starting C···X distance", "Å", 0.5, 50),
    "collision_energy_eV": Setting(float, "relative kinetic energy of the collision", "eV", 0, 100),
}

#: Command-line spellings of settings whose option name differs from the key.
_OPTION_NAMES = {"timestep_fs": "timestep", "temperature_K": "temperature", "pressure_bar": "pressure",
                 "tdamp_fs": "tdamp", "pdamp_fs": "pdamp", "isolated_energy_eV": "isolated-energy"}


def option_name(key: str) -> str:
    """``--timestep`` for ``timestep_fs``, ``--n-carbons`` for ``n_carbons``, ..."""
    return "--" + _OPTION_NAMES.get(key, key.replace("_", "-"))


def setting_spec(module, key: str) -> Setting:
    """The :class:`Setting` of ``key`` for protocol ``module`` (inferred from the default if unlisted)."""
    own = getattr(module, "SETTINGS", {})
    if key in own:
        return own[key]
    if key in SETTINGS:
        return SETTINGS[key]
    default = module.DEFAULTS.get(key)
    kind = type(default) if isinstance(default, (bool, int, float)) else str
    return Setting(kind, key.replace("_", " "))


def _convert(key: str, value, spec: Setting, module):
    name = f"{option_name(key)} ({key})" if option_name(key)[2:] != key else option_name(key)

    def bad(extra: str = ""):
        return SettingError(f"{name} = {value!r}{extra}: not allowed for protocol {module.NAME}; allowed: {spec.allowed()}")

    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise bad()
    if spec.kind in (int, float):
        if isinstance(value, bool):
            raise bad()
        try:
            v = float(value) if spec.kind is float else (int(value) if not isinstance(value, float) or value.is_integer()
                                                          else None)
            if v is None:
                raise ValueError
            if spec.kind is int and isinstance(value, str):
                v = int(value.strip())
        except (TypeError, ValueError):
            raise bad() from None
        if not math.isfinite(v):
            raise bad()
        if spec.lo is not None and (v < spec.lo or (spec.lo_open and v == spec.lo)):
            raise bad()
        if spec.hi is not None and v > spec.hi:
            raise bad()
        return v
    if spec.kind == "indices":
        parts = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
        try:
            idx = [int(p) for p in parts]
        except (TypeError, ValueError):
            raise bad() from None
        if (spec.count and len(idx) != spec.count) or len(set(idx)) != len(idx) or min(idx) < 0:
            raise bad()
        return idx
    value = str(value)
    if spec.choices and value not in spec.choices:
        raise bad()
    return value


def read_structure(path: str | Path):
    """The last frame of any file ``ase.io.read`` understands, non-periodic, with its cell kept."""
    from ase.io import read

    atoms = read(str(path), index=-1)
    return atoms


def validate_settings(module, settings: dict) -> dict:
    """Convert and check every setting of ``module``; returns the converted settings.

    Raises:
      SettingError: naming the setting, its value and the allowed range.
    """
    out = {}
    for key, value in settings.items():
        spec = setting_spec(module, key)
        if value is None:
            if spec.kind in ("path", "indices", "model"):
                raise SettingError(f"protocol {module.NAME} needs {option_name(key)}: {spec.help} "
                                   f"(allowed: {spec.allowed()})")
            out[key] = None
            continue
        out[key] = _convert(key, value, spec, module)
        if spec.kind == "path":
            if not Path(out[key]).is_file():
                raise SettingError(f"{option_name(key)} = {out[key]!r}: no such file; allowed: {spec.allowed()}")
            out[key] = str(Path(out[key]).resolve())  # summary.json and --resume from anywhere
    if "model" in out:
        from efa_calc.checkpoint import load_checkpoint
        from efa_calc.errors import CheckpointError
        from efa_calc.models import resolve_model

        try:
            ckpt = load_checkpoint(resolve_model(out["model"]), check_shapes=False)
        except CheckpointError as exc:
            raise SettingError(f"--model = {out['model']!r}: {exc}") from None
        species = set(ckpt.species)
        model_periodic = ckpt.evaluates_cells
    else:
        species, model_periodic = None, False
    if out.get("structure") is not None:
        path = Path(out["structure"])
        if not path.is_file():
            raise SettingError(f"--structure = {str(path)!r}: no such file; allowed: {SETTINGS['structure'].allowed()}")
        try:
            atoms = read_structure(path)
        except Exception as exc:  # ase raises many types for unreadable files
            raise SettingError(f"--structure = {str(path)!r}: ase.io.read cannot read it ({exc})") from None
        if len(atoms) == 0:
            raise SettingError(f"--structure = {str(path)!r}: the structure has no atoms")
        periodic = bool(atoms.pbc.any())
        if periodic and not model_periodic:
            raise SettingError(f"--structure = {str(path)!r}: the structure is periodic (pbc={atoms.pbc.tolist()}); "
                               f"model {out['model']!r} is for isolated molecules (only a local model trained on "
                               "periodic data evaluates cells): write it without periodic boundaries or choose such "
                               "a model")
        if out.get("relax_cell") and not atoms.pbc.all():
            raise SettingError(f"--relax-cell = true: the structure {str(path)!r} has no cell periodic in all three "
                               f"directions (pbc={atoms.pbc.tolist()}); allowed: --relax-cell false")
        if getattr(module, "ENSEMBLE", None) == "npt" and not atoms.pbc.all():
            raise SettingError(f"--structure = {str(path)!r}: NPT needs a cell periodic in all three directions "
                               f"(pbc={atoms.pbc.tolist()}); write the structure with a cell and pbc=True")
        unknown = sorted(set(atoms.get_chemical_symbols()) - species) if species is not None else []
        if unknown:
            raise SettingError(f"--structure = {str(path)!r}: element(s) {', '.join(unknown)} unknown to model "
                               f"{out['model']!r} (it knows {', '.join(sorted(species))})")
        if out.get("dihedral") is not None and max(out["dihedral"]) >= len(atoms):
            raise SettingError(f"--dihedral = {','.join(map(str, out['dihedral']))}: indices must be below the "
                               f"{len(atoms)} atoms of {path.name}")
    if "engine" in out:
        ensemble = getattr(module, "ENSEMBLE", None) or ("nvt" if "thermostat" in out else "nve")
        start = read_structure(out["structure"]) if out.get("structure") is not None else None
        periodic = start is not None and bool(start.pbc.any())
        check_engine(out["engine"], ensemble, out.get("thermostat", "langevin"), int(out.get("replicas", 1)),
                     periodic, start.cell.array if periodic else None,
                     float(ckpt.config.cutoff) if "model" in out else None, out.get("barostat"),
                     start.pbc if periodic else None)
    if {"start_deg", "stop_deg"} <= set(out) and out["stop_deg"] < out["start_deg"]:
        raise SettingError(f"--stop-deg = {out['stop_deg']:g} is below --start-deg = {out['start_deg']:g}; "
                           "allowed: stop_deg ≥ start_deg")
    return out


#: Values of the ``guard`` setting (those of :class:`efa_calc.EFACalculator`'s ``guard``).
GUARD_MODES = ("error", "warn", "off")
#: The former ``extrapolation`` setting's values, by their ``guard`` name.
_LEGACY_GUARD = {"stop": "error", "warn": "warn", "off": "off"}


def guard_mode(settings: dict) -> str:
    """The ``guard`` of a run's settings (``"error"`` when unset; the former
    ``extrapolation`` key is still read)."""
    if "guard" in settings:
        return settings["guard"]
    if "extrapolation" in settings:
        return _LEGACY_GUARD[settings["extrapolation"]]
    return "error"


def translate_legacy(overrides: dict) -> dict:
    """``overrides`` with the former ``extrapolation=stop|warn|off`` setting renamed to
    ``guard=error|warn|off``.

    Raises:
      SettingError: a bad ``extrapolation`` value, or both keys given.
    """
    if overrides.get("extrapolation") is None:
        return {k: v for k, v in overrides.items() if k != "extrapolation"}
    out = dict(overrides)
    old = out.pop("extrapolation")
    if out.get("guard") is not None:
        raise SettingError(f"--extrapolation = {old!r} and --guard = {out['guard']!r}: give only --guard "
                           "(extrapolation is its former name)")
    if old not in _LEGACY_GUARD:
        raise SettingError(f"--extrapolation = {old!r}: the setting is now --guard; allowed: "
                           f"{', '.join(GUARD_MODES)} (extrapolation stop, warn, off = guard error, warn, off)")
    out["guard"] = _LEGACY_GUARD[old]
    return out


def check_engine(name: str, ensemble: str, thermostat: str, replicas: int, periodic: bool = False, cell=None,
                 cutoff: float | None = None, barostat: str | None = None, pbc=None) -> None:
    """Raise :class:`SettingError` for an engine/ensemble/thermostat/replicas/periodic-cell
    combination that cannot run: for the jax engine also a periodic ``cell`` (3, 3) Å with a
    height not above 2 × ``cutoff`` (Å; its minimum-image pair list) and an NPT
    ``barostat`` other than ``"isotropic"``, and ``pbc`` (3,) not periodic in all three
    directions (slabs, wires: the ASE engine runs them)."""
    from md_protocols.engines import ENGINES, unavailable

    if name not in ENGINES:
        raise SettingError(f"--engine = {name!r}; allowed: {', '.join(ENGINES)}")
    info = ENGINES[name]
    why = unavailable(name)
    if why:
        raise SettingError(f"--engine = {name!r}: {why}")
    if ensemble == "nvt" and thermostat not in info.thermostats:
        raise SettingError(f"--thermostat = {thermostat!r} is not offered by the {name} engine; it offers "
                           f"{', '.join(info.thermostats)}")
    if replicas > 1 and not info.replicas:
        raise SettingError(f"--replicas = {replicas}: the {name} engine runs one trajectory; use --engine jax")
    if ensemble not in info.ensembles:
        raise SettingError(f"--engine = {name!r} does not run {ensemble.upper()} yet; use --engine ase")
    if periodic and not info.periodic:
        raise SettingError(f"--engine = {name!r} does not run periodic structures yet; use --engine ase")
    if name == "jax" and ensemble == "npt" and barostat not in (None, "isotropic"):
        raise SettingError(f"--barostat = {barostat!r}: the jax engine runs jax-md's isotropic barostat only "
                           "(--barostat isotropic); use --engine ase for the anisotropic MTKNPT")
    if name == "jax" and periodic and pbc is not None and not all(pbc):
        raise SettingError(f"--engine = 'jax' runs cells periodic in all three directions, not "
                           f"pbc={[bool(p) for p in pbc]}; use --engine ase for slabs and wires")
    if name == "jax" and periodic and cell is not None and cutoff is not None:
        from efa_calc.errors import InputError
        from efa_calc.md_jax.periodic import check_cell_heights

        try:
            check_cell_heights(cell, cutoff)
        except InputError as exc:
            raise SettingError(f"--engine = 'jax': {exc}") from None
