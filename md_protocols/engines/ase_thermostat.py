"""The hidden state of ASE's thermostats and barostats, saved and restored for a resume (JSON-able dict).

ASE has no public API for it, so this is the one place that knows where ASE keeps it.
Units: ASE's (eV, Å, amu·Å²/ase_time² for the Nosé–Hoover chains).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ThermostatState"]

#: (object path, attribute) pairs of the MTK barostats' state (ASE ≥ 3.26,
#: ase.md.nose_hoover_chain): the barostat chain (``_xi``, ``_p_xi``); isotropic: the
#: reference cell ``_cell0`` (Å) with its volume ``_volume0`` (Å³), the log-volume strain
#: ``_eps`` and its momentum ``_p_eps``; anisotropic: the cell ``_h`` (Å) and its momenta ``_p_g``.
_BAROSTAT = {"IsotropicMTKNPT": ("_cell0", "_volume0", "_eps", "_p_eps"), "MTKNPT": ("_h", "_p_g")}


class ThermostatState:
    """Save and restore the hidden state of an ASE integrator (JSON-able dict).

    ASE has no public API for it, so this is the one place that knows where ASE keeps it:
    the Nosé–Hoover chain's positions and momenta (``_thermostat._eta``/``_p_eta``),
    Bussi's ``transferred_energy`` and the MTK barostats' (:data:`_BAROSTAT`).  The RNG and
    the Langevin thermostat need nothing beyond the numpy generator.  An ASE release that
    moves these fails here with a clear error rather than resuming a run with a reset
    thermostat or barostat.
    """

    def __init__(self, dyn):
        self.dyn = dyn

    def _moved(self, what: str):
        return RuntimeError(f"this ASE version keeps the {what} state elsewhere; efa-md cannot save or resume it "
                            "(see md_protocols.engines.ase_thermostat.ThermostatState)")

    def _chain(self):
        chain = getattr(self.dyn, "_thermostat", None)
        if chain is not None and not (hasattr(chain, "_eta") and hasattr(chain, "_p_eta")):
            raise self._moved("Nosé–Hoover chain")
        return chain

    def _barostat(self) -> tuple:
        names = _BAROSTAT.get(type(self.dyn).__name__, ())
        baro = getattr(self.dyn, "_barostat", None)
        if names and (baro is None or not all(hasattr(self.dyn, n) for n in names)
                      or not (hasattr(baro, "_xi") and hasattr(baro, "_p_xi"))):
            raise self._moved("MTK barostat")
        return names, baro

    def get(self) -> dict:
        state = {}
        chain = self._chain()
        if chain is not None:
            state["eta"] = np.asarray(chain._eta).tolist()
            state["p_eta"] = np.asarray(chain._p_eta).tolist()
        if hasattr(self.dyn, "transferred_energy"):  # Bussi
            state["transferred_energy"] = float(self.dyn.transferred_energy)
        names, baro = self._barostat()
        if names:
            state["barostat"] = {"xi": np.asarray(baro._xi).tolist(), "p_xi": np.asarray(baro._p_xi).tolist(),
                                 **{n.lstrip("_"): np.asarray(getattr(self.dyn, n)).tolist() for n in names}}
        return state

    def set(self, state: dict) -> None:
        if "eta" in state:
            chain = self._chain()
            chain._eta = np.asarray(state["eta"])
            chain._p_eta = np.asarray(state["p_eta"])
        if "transferred_energy" in state:
            self.dyn.transferred_energy = state["transferred_energy"]
        if "barostat" in state:
            names, baro = self._barostat()
            saved = state["barostat"]
            baro._xi, baro._p_xi = np.asarray(saved["xi"]), np.asarray(saved["p_xi"])
            for n in names:
                value = np.asarray(saved[n.lstrip("_")], np.float64)
                setattr(self.dyn, n, float(value) if value.ndim == 0 else value)
            self.dyn._update_atoms()  # positions, momenta and the cell from the restored state

    def conserved_energy(self) -> float | None:
        """The integrator's conserved energy (eV), if it defines one."""
        if hasattr(self.dyn, "get_conserved_energy"):
            return float(self.dyn.get_conserved_energy())
        return None
