"""The hidden state of ASE's thermostats, saved and restored for a resume (JSON-able dict).

ASE has no public API for it, so this is the one place that knows where ASE keeps it.
Units: ASE's (eV, amu·Å²/ase_time² for the Nosé–Hoover chain).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ThermostatState"]


class ThermostatState:
    """Save and restore the hidden state of an ASE integrator (JSON-able dict).

    ASE has no public API for it, so this is the one place that knows where ASE keeps it:
    the Nosé–Hoover chain's positions and momenta (``_thermostat._eta``/``_p_eta``) and
    Bussi's ``transferred_energy``.  The RNG and the Langevin thermostat need nothing
    beyond the numpy generator.  An ASE release that moves these fails here with a clear
    error rather than resuming a run with a reset thermostat.
    """

    def __init__(self, dyn):
        self.dyn = dyn

    def _chain(self):
        chain = getattr(self.dyn, "_thermostat", None)
        if chain is not None and not (hasattr(chain, "_eta") and hasattr(chain, "_p_eta")):
            raise RuntimeError("this ASE version keeps the Nosé–Hoover chain state elsewhere; efa-md cannot "
                               "save or resume it (see md_protocols.engines.ase_thermostat.ThermostatState)")
        return chain

    def get(self) -> dict:
        state = {}
        chain = self._chain()
        if chain is not None:
            state["eta"] = np.asarray(chain._eta).tolist()
            state["p_eta"] = np.asarray(chain._p_eta).tolist()
        if hasattr(self.dyn, "transferred_energy"):  # Bussi
            state["transferred_energy"] = float(self.dyn.transferred_energy)
        return state

    def set(self, state: dict) -> None:
        if "eta" in state:
            chain = self._chain()
            chain._eta = np.asarray(state["eta"])
            chain._p_eta = np.asarray(state["p_eta"])
        if "transferred_energy" in state:
            self.dyn.transferred_energy = state["transferred_energy"]

    def conserved_energy(self) -> float | None:
        """The integrator's conserved energy (eV), if it defines one."""
        if hasattr(self.dyn, "get_conserved_energy"):
            return float(self.dyn.get_conserved_energy())
        return None
