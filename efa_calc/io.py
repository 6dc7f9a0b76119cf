"""Atomic file writes: a killed process never leaves a truncated file behind.

:func:`atomic_write` writes to a temporary file next to the target (same folder, so the
rename stays on one file system), flushes it to disk and renames it over the target with
``os.replace`` (atomic on POSIX and Windows).  Readers see the old file or the new one,
never a mix.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, data: str | bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` (text is encoded as UTF-8) to ``path`` atomically; returns the path.

    The temporary file is ``<name>.tmp`` in the same folder; it is removed again if the
    write fails.  ``fsync=False`` skips the flush to disk (atomic against a killed process,
    not against a power cut).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    payload = data.encode() if isinstance(data, str) else bytes(data)
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
