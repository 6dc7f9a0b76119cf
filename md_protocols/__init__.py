"""Ready-to-run protocols for the cumulene and SN2 charge-transfer systems, and generic ones
(``nve``, ``nvt``, ``npt``, ``optimize``, ``vibrations``, ``torsion-scan``) for any structure given with
``--structure FILE`` (``efa-md``).

Each protocol is a short module (copy one to adapt it to your molecule) with ``NAME``,
``DESCRIPTION``, ``DEFAULTS`` and ``run(ctx)``; shared plumbing lives in
:mod:`md_protocols.settings` (settings and their checks), :mod:`md_protocols.common`
(output folder, summary, plots), :mod:`md_protocols.dynamics` (MD on an engine) with
:mod:`md_protocols.engines` (the engine base: outputs, resume, guards; one module per
engine) and :mod:`md_protocols.scan` (relaxed dihedral scans).  Units: eV, Å, fs, K, cm⁻¹.
"""

from __future__ import annotations

import importlib

_MODULES = [
    "cumulene_nve",
    "cumulene_nvt",
    "cumulene_optimize",
    "cumulene_torsion_scan",
    "cumulene_vibrations",
    "sn2_nve",
    "sn2_nvt",
    "sn2_neb",
    "nve",
    "nvt",
    "npt",
    "optimize",
    "vibrations",
    "torsion_scan",
]


def protocols() -> dict:
    """name -> protocol module."""
    out = {}
    for m in _MODULES:
        mod = importlib.import_module(f"md_protocols.{m}")
        out[mod.NAME] = mod
    return out


__all__ = ["protocols"]
