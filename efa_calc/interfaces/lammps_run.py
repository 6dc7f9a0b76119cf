"""``efa-calc lammps IN``: run a LAMMPS input file with an efa-calc model behind its ``fix external``.

The input is split before its first command that runs dynamics or steers the input
(:data:`SPLIT_COMMANDS`: ``run``, ``minimize``, ``rerun``, ``jump``, ``label``, ``if``, ...).
LAMMPS executes the first part (units, box, atoms, fixes: nothing moves), then
:func:`efa_calc.interfaces.lammps.attach` checks the state and registers the callback —
every refusal comes here, before any step — and LAMMPS executes the rest as a file of its
own, so loops (``label``/``jump SELF``), several ``run`` commands and ``minimize`` behave as
with ``lmp -in IN``.  Paths in the input are relative to the working directory, as for
``lmp``.

Limits: a ``jump`` back into the first part (before the first ``run``) is not possible; a
``run`` hidden in an ``include``d file before the first top-level ``run`` meets a fix
without its callback, which LAMMPS reports as an error ("Fix external callback function
not set"); so does a ``fix external`` defined anew after a ``clear``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from efa_calc.errors import InputError

__all__ = ["SPLIT_COMMANDS", "split_input", "run_input", "RunFailed"]

SPLIT_COMMANDS = frozenset({
    "run", "rerun", "minimize", "minimize/kk", "neb", "neb/spin", "prd", "tad", "temper", "temper/grem",
    "temper/npt", "hyper", "jump", "label", "if", "next",
})


class RunFailed(RuntimeError):
    """LAMMPS or the model failed after the first step had started (exit status 1)."""


def _first_word(line: str) -> str:
    words = line.split("#", 1)[0].split()
    return words[0].lower() if words else ""


def split_input(text: str) -> tuple[str, str]:
    """(setup, rest): ``text`` split before the first command of :data:`SPLIT_COMMANDS`.

    Continuation lines (a trailing ``&``) and triple-quoted text stay whole; ``rest`` is
    ``""`` when no such command exists.
    """
    lines = text.splitlines(keepends=True)
    i, in_quotes = 0, False
    while i < len(lines):
        start = i
        logical = lines[i]
        while logical.rstrip().endswith("&") and i + 1 < len(lines):
            i += 1
            logical += lines[i]
        if not in_quotes and _first_word(logical) in SPLIT_COMMANDS:
            return "".join(lines[:start]), "".join(lines[start:])
        in_quotes ^= logical.count('"""') % 2 == 1
        i += 1
    return text, ""


def run_input(path: str | Path, model, elements, *, fix_id: str = "efa", log: str | None = "log.lammps",
              variables: dict[str, str] | None = None, screen: bool = True, **calculator_kwargs) -> dict:
    """Run the LAMMPS input ``path`` with ``model`` behind ``fix <fix_id> ... external``.

    Args:
      path: LAMMPS input file (``units metal``; see :mod:`efa_calc.interfaces.lammps`).
      model, elements, fix_id, calculator_kwargs: as for
        :func:`~efa_calc.interfaces.lammps.attach` (LAMMPS type i = ``elements[i-1]``).
      log: LAMMPS log file (``None``: none); variables: ``-var NAME VALUE`` pairs;
      screen: LAMMPS's screen output on stdout.

    Returns:
      ``{"steps": final timestep, "calls": model evaluations, "energy_eV": last energy}``.

    Raises:
      InputError, CheckpointError: bad input, found before any step (the CLI's exit 2).
      RunFailed: LAMMPS or the model failed during the run (exit 1).
    """
    from efa_calc.interfaces.lammps import attach, import_lammps

    path = Path(path)
    if not path.is_file():
        raise InputError(f"IN {str(path)!r}: no such LAMMPS input file")
    setup, rest = split_input(path.read_text())
    elements = [e.strip() for e in elements.split(",")] if isinstance(elements, str) else list(elements)
    from efa_calc.calculator import EFACalculator

    calc = EFACalculator(model, **calculator_kwargs)  # an unknown model fails here, before LAMMPS starts
    args = ["-log", log or "none"] + ([] if screen else ["-screen", "none"])
    for name, value in (variables or {}).items():
        args += ["-var", str(name), str(value)]
    lmp = import_lammps().lammps(cmdargs=args)
    try:
        try:
            lmp.commands_string(setup)
        except Exception as exc:  # LAMMPS raises a bare Exception carrying its ERROR line
            raise InputError(f"{path}: LAMMPS stopped before the first run: {str(exc).strip()}") from None
        fix = attach(lmp, calc, elements, fix_id)
        if rest:
            with tempfile.TemporaryDirectory(prefix="efa-lammps-") as tmp:
                part = Path(tmp) / f"{path.name}.from-first-run"
                part.write_text(rest)
                try:
                    lmp.file(str(part))
                except Exception as exc:
                    raise RunFailed(f"{path}: LAMMPS stopped during the run: {str(exc).strip()}") from None
        try:
            fix.raise_if_failed()
        except Exception as exc:
            raise RunFailed(f"{path}: the model failed during the run: {type(exc).__name__}: {exc}") from exc
        energy = fix.atoms.get_potential_energy() if fix.atoms is not None else None
        return {"steps": int(lmp.extract_global("ntimestep")), "calls": fix.calls, "energy_eV": energy}
    finally:
        lmp.close()
