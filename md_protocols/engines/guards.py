"""The MD guards: one list, shared by every engine.

A guard has a ``name`` (its check bit in :data:`efa_calc.md_jax.FLAGS`), the observables it
reads (``inputs``), one ``predicate(obs, limits, xp)`` — evaluated on the host with
``xp = numpy`` by the ASE engine and on the device with ``xp = jax.numpy`` inside the jax
engine's chunk — and one ``message``.  An engine that cannot observe a guard's inputs
(the ASE engine has no ``extent_A``: there the calculator raises for ``max_length``)
skips it.  Which guards *stop* a run is the base's choice (:func:`stopping`); the others
only warn.

Observables (per replica): ``temperature_K`` (K), ``fmax_eV_A`` (largest force component,
eV/Å), ``extent_A`` / ``min_distance_A`` (largest / smallest interatomic distance, Å),
``structure_outside_envelope`` / ``energy_outside_envelope`` (bool), ``epot`` (eV),
``volume_A3`` (cell volume, Å³, periodic runs) and, for messages, ``detail`` (text).
Limits: ``temperature_K`` (K), ``force_eV_A`` (eV/Å), ``max_length_A`` and
``min_distance_A`` (Å), ``volume_min_A3``/``volume_max_A3`` (Å³: 0.5 and 2 × the starting
volume ``volume0_A3``; the ``box`` guard, which stops NPT runs) and ``cell_height_min_A``
(Å: twice the model's cutoff; the ``cell_height`` guard on the smallest cell height
``cell_height_A``, which stops periodic runs of the jax engine, whose minimum-image pair
list needs it; the ASE engine lists every image and does not observe it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

__all__ = ["Guard", "GUARDS", "GUARD_BY_NAME", "stopping", "detail"]

_RESUME_HINT = "(resume with --set guard=warn to go on regardless)"


@dataclasses.dataclass(frozen=True)
class Guard:
    """One check of every MD step (see the module docstring)."""

    name: str
    inputs: tuple
    predicate: Callable = dataclasses.field(compare=False)
    message: Callable = dataclasses.field(compare=False)  # (obs, limits, step) -> str

    def fires(self, obs: dict, limits: dict, xp) -> bool:
        """The predicate, or False when ``obs`` lacks an input (host side)."""
        return all(k in obs for k in self.inputs) and bool(self.predicate(obs, limits, xp))


def _valid_range(obs, limits, step):
    return f"the structure left the model's valid range at step {step}: {obs['detail']}"


def _envelope(obs, limits, step):
    return (f"the structure left the model's training envelope at step {step}: "
            f"{obs.get('detail') or 'flagged on the device'} {_RESUME_HINT}")


GUARDS = (
    Guard("temperature", ("temperature_K",),
          lambda o, lim, xp: ~xp.isfinite(o["temperature_K"]) | (o["temperature_K"] > lim["temperature_K"]),
          lambda o, lim, step: (f"temperature {o['temperature_K']:.0f} K exceeded the guard of "
                                f"{lim['temperature_K']:.0f} K at step {step}")),
    Guard("force", ("fmax_eV_A",), lambda o, lim, xp: ~(o["fmax_eV_A"] <= lim["force_eV_A"]),
          lambda o, lim, step: (f"a force of {o['fmax_eV_A']:.1f} eV/Å exceeded the guard of {lim['force_eV_A']} "
                                f"eV/Å at step {step}")),
    Guard("max_length", ("extent_A",), lambda o, lim, xp: o["extent_A"] > lim["max_length_A"], _valid_range),
    Guard("too_close", ("min_distance_A",), lambda o, lim, xp: o["min_distance_A"] < lim["min_distance_A"],
          _valid_range),
    Guard("envelope", ("structure_outside_envelope",), lambda o, lim, xp: o["structure_outside_envelope"],
          _envelope),
    Guard("envelope_energy", ("energy_outside_envelope",), lambda o, lim, xp: o["energy_outside_envelope"],
          _envelope),
    Guard("box", ("volume_A3",),
          lambda o, lim, xp: ~((o["volume_A3"] >= lim["volume_min_A3"]) & (o["volume_A3"] <= lim["volume_max_A3"])),
          lambda o, lim, step: (f"the cell volume {o['volume_A3']:.1f} Å³ left [0.5, 2] × the starting volume "
                                f"{lim['volume0_A3']:.1f} Å³ at step {step} (box collapse or explosion; "
                                "check the pressure, pdamp_fs and the model)")),
    Guard("cell_height", ("cell_height_A",), lambda o, lim, xp: ~(o["cell_height_A"] > lim["cell_height_min_A"]),
          lambda o, lim, step: (f"the cell's smallest height {o['cell_height_A']:.2f} Å fell to twice the model's "
                                f"cutoff ({lim['cell_height_min_A']:g} Å) at step {step}: the jax engine's "
                                "minimum-image pair list cannot hold it; resume the run with --engine ase "
                                "(which lists every image) or start from a larger supercell")),
)
GUARD_BY_NAME = {g.name: g for g in GUARDS}


def stopping(guard: str, strict: bool) -> tuple[str, ...]:
    """Names of the guards that stop a run: temperature, force and atoms too close always,
    ``max_length`` for a ``strict`` calculator, the training envelope for ``guard="error"``."""
    names = ["temperature", "force", "too_close"]
    if strict:
        names.append("max_length")
    if guard == "error":
        names += ["envelope", "envelope_energy"]
    return tuple(names)


def detail(name: str, calc, numbers, positions, model_energy_per_atom: float, obs: dict, cell=None,
           pbc=None) -> str:
    """The ``detail`` of a stop message, re-checked on the host for a structure flagged on
    the device: the calculator's own words for the valid range (``max_length``,
    ``too_close``; else the distances in ``obs``), the envelope's reasons (eV/atom without
    the energy shift) for ``envelope``/``envelope_energy`` (a periodic structure: its
    ``cell`` (3, 3) Å and ``pbc``); "" for the others."""
    from efa_calc.envelope import check_physical_distances
    from efa_calc.errors import InputError
    from efa_calc.graphs.validation import check_structure

    if name in ("max_length", "too_close") and cell is not None:
        return f"smallest minimum-image distance {obs['min_distance_A']:.3f} Å"
    if name in ("max_length", "too_close"):
        try:
            check_physical_distances(positions)
            check_structure(numbers, positions, False, calc.species, calc.max_length, True)
        except InputError as exc:
            return str(exc)
        return f"largest distance {obs['extent_A']:.2f} Å, smallest {obs['min_distance_A']:.3f} Å"
    if name.startswith("envelope"):
        env = calc.checkpoints[0].envelope
        if env is None:
            return ""
        pairs = None
        if cell is not None:
            from efa_calc.graphs.neighbors import periodic_pairs

            pairs = tuple(periodic_pairs(positions, cell, pbc, env.cutoff))
        reasons = [t for _, t in env.check_structure(numbers, positions, pairs, cell, pbc)]
        return "; ".join(reasons + [t for _, t in env.check_energy(model_energy_per_atom)])
    return ""
