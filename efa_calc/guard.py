"""The extrapolation guard: compare structures (and predicted energies) with the training
envelopes of a calculator's checkpoints, and act on the verdict.

One vocabulary everywhere (calculator, ``efa-calc eval``, ``efa-md`` protocols): ``guard``
is one of :data:`GUARD_MODES`:

* ``"warn"`` (default) — an :class:`~efa_calc.errors.ExtrapolationWarning` for a structure
  outside the envelope (once per reason and guard);
* ``"error"`` — :class:`~efa_calc.errors.ExtrapolationError`, raised *before* the model is
  called when the structure alone is outside;
* ``"off"`` — no check.

The verdict is ``{"status": "inside" | "outside" | "unchecked" | "off", "reasons": [...]}``
(``"unchecked"``: no checkpoint records an envelope).  Energies are per atom, relative to
the per-element energy shifts, in eV.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from efa_calc.errors import ExtrapolationError, ExtrapolationWarning

__all__ = ["GUARD_MODES", "Guard"]

GUARD_MODES = ("warn", "error", "off")


class Guard:
    """The guard of one calculator (its checkpoints and its memory of warnings given).

    Args:
      checkpoints: the models whose envelopes are checked.
      mode: one of :data:`GUARD_MODES`.
    """

    def __init__(self, checkpoints: Sequence, mode: str = "warn"):
        if mode not in GUARD_MODES:
            raise ValueError(f"guard={mode!r}; allowed: {', '.join(repr(g) for g in GUARD_MODES)}")
        self.checkpoints = list(checkpoints)
        self.mode = mode
        self.warned: set = set()

    def structure(self, numbers, positions, pairs, where: str = "structure", cell=None) -> list:
        """(key, reason) of every envelope the structure leaves (``pairs`` with image shifts
        and ``cell`` in Å for periodic structures); raises at once under ``"error"`` (no
        model call wasted)."""
        if self.mode == "off":
            return []
        out: list = []
        for c in self.checkpoints:
            if c.envelope is not None:
                out += [r for r in c.envelope.check_structure(numbers, positions, pairs, cell) if r not in out]
        if self.mode == "error" and out:
            self._raise(out, where)
        return out

    def verdict(self, numbers, reasons: list, member_energies: Sequence[float], where: str = "structure") -> dict:
        """Add the energy check of every member (eV, with shift), warn or raise, and return
        the verdict dict."""
        if self.mode == "off":
            return {"status": "off", "reasons": []}
        if all(c.envelope is None for c in self.checkpoints):
            return {"status": "unchecked", "reasons": ["the checkpoint records no training envelope"]}
        reasons = list(reasons)
        n = len(numbers)
        for c, e in zip(self.checkpoints, member_energies):
            if c.envelope is not None:
                e_atom = (e - float(np.sum(c.energy_shift.atomic(numbers)))) / n
                reasons += [r for r in c.envelope.check_energy(e_atom) if r not in reasons]
        if not reasons:
            return {"status": "inside", "reasons": []}
        if self.mode == "error":
            self._raise(reasons, where)
        new = [k for k, _ in reasons if k not in self.warned]
        if new:
            self.warned.update(new)
            warnings.warn(self._message(reasons, where) + " — predictions are extrapolated and may be unphysical",
                          ExtrapolationWarning, stacklevel=4)
        return {"status": "outside", "reasons": [r for _, r in reasons]}

    def _message(self, reasons: list, where: str) -> str:
        names = ", ".join(c.name for c in self.checkpoints)
        return f"{where} is outside the training data of {names}: " + "; ".join(r for _, r in reasons)

    def _raise(self, reasons: list, where: str):
        raise ExtrapolationError(self._message(reasons, where) + " (guard='error'; pass guard='warn' to evaluate anyway)")
