"""Observables of a periodic cell for the MD log: volume, density and pressure.

* volume V = |det h| (Å³) of the cell h (rows a, b, c in Å);
* density ρ = Σ m / V in g/cm³ (masses in amu; 1 amu/Å³ = 1.66053906660 g/cm³);
* pressure P = N k_B T / V − tr(σ)/3 in bar, where σ is the calculator's stress (ASE's
  sign: σ = (1/V) ∂E/∂ε, eV/Å³, Voigt xx yy zz yz xz xy) and the kinetic (ideal-gas) term
  is written with the instantaneous kinetic energy, N k_B T = 2 E_kin / 3 (E_kin in eV) —
  the pressure ASE's MTK barostats act on (``get_stress(include_ideal_gas=True)``).
"""

from __future__ import annotations

import numpy as np
from ase import units

__all__ = ["volume_A3", "density_g_cm3", "pressure_bar", "AMU_PER_A3_IN_G_CM3"]

#: 1 amu/Å³ in g/cm³ (1.66053906660e-24 g per 1e-24 cm³)
AMU_PER_A3_IN_G_CM3 = units._amu * 1e27


def volume_A3(cell) -> np.ndarray:
    """|det h| (Å³) of (..., 3, 3) cells."""
    return np.abs(np.linalg.det(np.asarray(cell, np.float64)))


def density_g_cm3(total_mass_amu: float, volume) -> np.ndarray:
    """Σ m / V in g/cm³ of a cell of ``volume`` Å³ holding ``total_mass_amu``."""
    return total_mass_amu / np.asarray(volume) * AMU_PER_A3_IN_G_CM3


def pressure_bar(stress_voigt, ekin_eV, volume) -> np.ndarray:
    """P = 2 E_kin / (3 V) − tr(σ)/3 (bar) from (..., 6) Voigt stress (eV/Å³), E_kin (eV), V (Å³)."""
    stress = np.asarray(stress_voigt, np.float64)
    p = 2.0 * np.asarray(ekin_eV) / (3.0 * np.asarray(volume)) - stress[..., :3].sum(-1) / 3.0
    return p / units.bar
