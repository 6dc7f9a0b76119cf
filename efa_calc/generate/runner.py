"""Resumable, chunked labelling of a fixed plan of geometries.

A generation run has three stages, each restartable:

1. **plan** — a deterministic list of geometries (``plan.extxyz``; every frame carries
   ``frame_id``, ``kind``, ``system`` and ``charge`` in ``atoms.info``), made once from a
   config and a seed.  Re-planning with the same config reproduces it bit for bit; a
   different config in an existing output directory is refused.
2. **label** — the plan is cut into chunks of ``chunk_size`` frames.  A chunk is labelled
   in full and then written atomically (:func:`efa_calc.io.atomic_write`) to
   ``chunks/chunk_NNNNN.extxyz``.  A killed run therefore loses at most the chunk in
   flight and, on restart, skips every chunk already on disk: no frame is lost or
   duplicated.  Workers split chunks by index (``chunk % num_workers == worker``).
3. **collect** — every chunk is read back in plan order, non-converged frames are
   dropped (they are kept in the chunks, flagged ``converged=False``, so the rejection is
   auditable), and the dataset is written as extxyz with a provenance JSON beside it.

Units: positions in Å, energies in eV, forces in eV/Å.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import platform
from pathlib import Path
from typing import Callable, Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from tqdm.auto import tqdm

from efa_calc.io import atomic_write

__all__ = [
    "Label",
    "Labeller",
    "write_plan",
    "label_plan",
    "collect",
    "generation_status",
]


@dataclasses.dataclass(frozen=True)
class Label:
    """Result of one electronic-structure calculation.

    Attributes:
      energy: total energy in eV (``nan`` when not converged).
      forces: (num_atoms, 3) forces in eV/Å (``nan`` when not converged).
      converged: whether the SCF (or equivalent) converged; non-converged frames are
        never written to a dataset.
      meta: small JSON-serialisable diagnostics (cycles, fallback used, charges, ...).
      positions: (num_atoms, 3) geometry in Å when the labeller moved the atoms (a
        relaxation); ``None`` keeps the planned geometry.
      stress: (6,) stress in eV/Å³ (ASE sign and Voigt order xx yy zz yz xz xy) for
        periodic cells; ``None`` for molecules.  The dataset then also carries
        ``info['virial']`` = −σ V (3×3, eV).
    """

    energy: float
    forces: np.ndarray
    converged: bool
    meta: dict = dataclasses.field(default_factory=dict)
    positions: np.ndarray | None = None
    stress: np.ndarray | None = None


Labeller = Callable[[Atoms], Label]


def _atomic_write(path: Path, frames: Sequence[Atoms]) -> None:
    buf = io.StringIO()
    ase.io.write(buf, list(frames), format="extxyz")
    atomic_write(path, buf.getvalue())


def _plan_hash(frames: Sequence[Atoms]) -> str:
    h = hashlib.sha256()
    for a in frames:
        h.update(np.asarray(a.numbers, np.int64).tobytes())
        h.update(np.round(np.asarray(a.positions, np.float64), 8).tobytes())
        if a.pbc.any():  # periodic plans: the cell too (molecular plans keep their old hash)
            h.update(np.round(a.cell.array, 8).tobytes() + a.pbc.tobytes())
    return h.hexdigest()


def write_plan(out_dir: str | Path, frames: Sequence[Atoms], config: dict) -> list[Atoms]:
    """Write ``plan.extxyz`` and ``plan.json`` (config + hash), or verify an existing plan.

    Raises:
      ValueError: when ``out_dir`` already holds a plan made from a different config or
        with different geometries (resuming into the wrong directory).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = list(frames)
    for i, a in enumerate(frames):
        a.info["frame_id"] = i
    digest = _plan_hash(frames)
    meta_path = out / "plan.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old["config"] != config or old["sha256"] != digest:
            raise ValueError(
                f"{out} already holds a generation plan made from a different config "
                f"(or different package versions); use a new --out directory"
            )
        return list(ase.io.read(out / "plan.extxyz", index=":"))
    _atomic_write(out / "plan.extxyz", frames)
    meta = {"config": config, "sha256": digest, "num_frames": len(frames)}
    atomic_write(meta_path, json.dumps(meta, indent=1))
    return frames


def _chunk_path(out: Path, c: int) -> Path:
    return out / "chunks" / f"chunk_{c:05d}.extxyz"


def _num_chunks(num_frames: int, chunk_size: int) -> int:
    return (num_frames + chunk_size - 1) // chunk_size


def _spread_order(chunks: Sequence[int], total: int) -> list[int]:
    """Order chunk indices by bit reversal so that any prefix samples the whole plan.

    Plans are written block by block (one reaction, one kind of frame after another); a
    generation stopped early should still have touched every block rather than finished
    the first few.
    """
    bits = max(1, (total - 1).bit_length())
    return sorted(chunks, key=lambda c: int(format(c, f"0{bits}b")[::-1], 2))


def label_plan(
    out_dir: str | Path,
    labeller: Labeller,
    chunk_size: int = 8,
    worker: int = 0,
    num_workers: int = 1,
    progress: bool = True,
    max_chunks: int | None = None,
) -> int:
    """Label every chunk of the plan in ``out_dir`` that is not on disk yet.

    Args:
      out_dir: directory holding ``plan.extxyz`` (see :func:`write_plan`).
      labeller: maps an ``Atoms`` (with ``info['charge']``) to a :class:`Label`.
      chunk_size: frames per atomically written chunk.
      worker, num_workers: this process labels chunks with ``c % num_workers == worker``,
        in bit-reversed order so that a partial generation covers the whole plan.
      progress: show a tqdm bar.
      max_chunks: stop after this many new chunks (used by tests to simulate a kill).

    Returns:
      The number of chunks written by this call.
    """
    out = Path(out_dir)
    plan = list(ase.io.read(out / "plan.extxyz", index=":"))
    (out / "chunks").mkdir(exist_ok=True)
    total = _num_chunks(len(plan), chunk_size)
    todo = _spread_order(
        [c for c in range(total) if c % num_workers == worker and not _chunk_path(out, c).exists()], total
    )
    written = 0
    bar = tqdm(todo, desc=f"labelling (worker {worker}/{num_workers})", unit="chunk", disable=not progress)
    for c in bar:
        if max_chunks is not None and written >= max_chunks:
            break
        labelled = []
        for a in plan[c * chunk_size : (c + 1) * chunk_size]:
            lab = labeller(a)
            pos = a.positions if lab.positions is None else np.asarray(lab.positions, np.float64)
            b = Atoms(a.numbers, pos, cell=a.cell, pbc=a.pbc, info=dict(a.info))
            b.info["converged"] = bool(lab.converged)
            for k, v in lab.meta.items():
                b.info[f"meta_{k}"] = v
            forces = np.asarray(lab.forces, np.float64).reshape(len(a), 3)
            results = {"energy": float(lab.energy), "forces": forces}
            if lab.stress is not None:
                results["stress"] = np.asarray(lab.stress, np.float64).reshape(6)
                b.info["virial"] = -voigt_6_to_full_3x3_stress(results["stress"]) * b.get_volume()
            b.calc = SinglePointCalculator(b, **results)
            labelled.append(b)
        _atomic_write(_chunk_path(out, c), labelled)
        written += 1
    return written


def generation_status(out_dir: str | Path, chunk_size: int) -> tuple[int, int]:
    """Return ``(chunks_done, chunks_total)`` for the plan in ``out_dir``."""
    out = Path(out_dir)
    n = json.loads((out / "plan.json").read_text())["num_frames"]
    total = _num_chunks(n, chunk_size)
    done = sum(_chunk_path(out, c).exists() for c in range(total))
    return done, total


def collect(
    out_dir: str | Path,
    dataset_path: str | Path,
    chunk_size: int,
    provenance: dict,
) -> dict:
    """Merge all chunks into one extxyz dataset, dropping non-converged frames.

    Writes ``dataset_path`` and ``dataset_path`` with suffix ``.json`` (provenance: the
    generation config, method, package versions, counts of kept and rejected frames and
    the rejected frame ids, date).

    Raises:
      RuntimeError: if any chunk is still missing (the generation is incomplete).
    """
    out = Path(out_dir)
    plan_meta = json.loads((out / "plan.json").read_text())
    total = _num_chunks(plan_meta["num_frames"], chunk_size)
    missing = [c for c in range(total) if not _chunk_path(out, c).exists()]
    if missing:
        raise RuntimeError(
            f"generation in {out} is incomplete: {len(missing)} of {total} chunks missing "
            f"(first missing: {missing[0]}); run the label stage again to finish it"
        )
    kept, rejected = [], []
    for c in range(total):
        for a in ase.io.read(_chunk_path(out, c), index=":"):
            (kept if a.info.get("converged", False) else rejected).append(a)
    ids = [a.info["frame_id"] for a in kept] + [a.info["frame_id"] for a in rejected]
    if sorted(ids) != list(range(plan_meta["num_frames"])):
        raise RuntimeError(f"chunks in {out} do not cover the plan exactly once")
    dataset_path = Path(dataset_path)
    dataset_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(dataset_path, kept)
    kinds: dict[str, int] = {}
    for a in kept:
        kinds[a.info.get("kind", "?")] = kinds.get(a.info.get("kind", "?"), 0) + 1
    prov = {
        **provenance,
        "units": {"energy": "eV", "positions": "Angstrom", "forces": "eV/Angstrom",
                  **({"stress": "eV/Angstrom^3 (ASE sign: positive under tension; Voigt xx yy zz yz xz xy)",
                      "virial": "eV (= -stress * volume, 3x3)"} if any("virial" in a.info for a in kept) else {})},
        "generation_config": plan_meta["config"],
        "plan_sha256": plan_meta["sha256"],
        "num_planned": plan_meta["num_frames"],
        "num_kept": len(kept),
        "num_rejected_nonconverged": len(rejected),
        "rejected_frame_ids": sorted(int(a.info["frame_id"]) for a in rejected),
        "frames_per_kind": kinds,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    dataset_path.with_suffix(".json").write_text(json.dumps(prov, indent=1))
    return prov
