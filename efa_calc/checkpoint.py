"""efa-calc's checkpoint format: a directory with ``config.json`` and ``params.npz``.

``config.json`` (UTF-8 JSON)::

    {
      "format_version": 1,
      "model": {...ModelConfig.to_dict()...},       # hyperparameters, lengths in Å
      "species": ["H", "C"],                         # elements the model was trained on
      "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
      "energy_shift": {"per_element": {"H": -13.6, ...}, "constant": 0.0},   # eV
      "params_file": "params.npz", "params_sha256": "<hex>",
      "provenance": {"data": ..., "git_commit": ..., "date": ..., ...},
      "envelope": {...Envelope.to_dict()...},       # what the model saw in training (optional)
      "config_sha256": "<hex>"                      # SHA-256 of every other field above
    }

``config_sha256`` covers every field of ``config.json`` (the SHA-256 of the other fields as
canonical JSON: sorted keys, no whitespace), so an edited species list, shift or envelope is
a :class:`CheckpointError`.  Checkpoints written before it existed (and the reference code's)
load with ``Checkpoint.config_checked = False``; ``envelope`` is ``None`` for checkpoints
without one, and the calculator reports their structures as "unchecked".

The absolute energy is E = Σ_i [E_i(model) + shift(Z_i)] + constant.  ``params.npz`` is
a numpy archive of float32 arrays keyed by their '/'-joined parameter path, read with
``allow_pickle=False`` (no code is ever executed on load); its SHA-256 is checked.
Checkpoints are written to a temporary directory and renamed into place, so a killed
writer never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers as _Z
from flax.traverse_util import flatten_dict, unflatten_dict

from efa_calc.nn.config import ModelConfig
from efa_calc.envelope import Envelope
from efa_calc.errors import CheckpointError
from efa_calc.io import atomic_write

__all__ = ["FORMAT_VERSION", "Checkpoint", "EnergyShift", "save_checkpoint", "load_checkpoint", "git_commit",
           "config_hash", "write_config"]

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.npz"


@dataclasses.dataclass(frozen=True)
class EnergyShift:
    """Energy added to the model output: ``per_element[symbol]`` per atom plus ``constant`` (eV)."""

    per_element: dict = dataclasses.field(default_factory=dict)
    constant: float = 0.0

    def atomic(self, numbers: np.ndarray) -> np.ndarray:
        """Per-atom shift (eV) for atomic numbers ``numbers``; the constant is spread evenly."""
        numbers = np.asarray(numbers, int)
        return self._table[numbers] + (self.constant / len(numbers) if len(numbers) else 0.0)

    @functools.cached_property
    def _table(self) -> np.ndarray:
        table = np.zeros(119)
        for sym, val in self.per_element.items():
            table[_Z[sym]] = val
        return table

    def to_dict(self) -> dict:
        return {"per_element": {k: float(v) for k, v in self.per_element.items()}, "constant": float(self.constant)}


@dataclasses.dataclass
class Checkpoint:
    """A trained model: hyperparameters, float32 parameters and what is needed to use them.

    Attributes:
      config: model hyperparameters.
      params: ``{'params': {...}}`` tree of float32 numpy arrays.
      species: chemical symbols the model knows.
      energy_shift: added to the model's energies (eV).
      provenance: free-form JSON metadata (data, git commit, date, training errors, ...).
      name: display name (directory name by default).
      envelope: the training envelope (:class:`~efa_calc.envelope.Envelope`), or ``None``.
      config_checked: whether ``config.json`` carried a valid ``config_sha256`` (False for
        checkpoints written before the field existed and for ones built in memory).
      periodic: trained on periodic data (cells, stress): only such a model evaluates
        periodic structures (``config.json`` field ``"periodic": true``; absent = False).
    """

    config: ModelConfig
    params: dict
    species: list
    energy_shift: EnergyShift = dataclasses.field(default_factory=EnergyShift)
    provenance: dict = dataclasses.field(default_factory=dict)
    name: str = "model"
    envelope: Envelope | None = None
    config_checked: bool = False
    periodic: bool = False

    @property
    def evaluates_cells(self) -> bool:
        """Whether the model evaluates periodic structures: trained on periodic data, and
        local or with a long-range block defined in periodic cells."""
        lr = self.config.long_range
        return bool(self.periodic and (lr is None or lr.periodic))

    @property
    def atomic_numbers(self) -> list[int]:
        return [_Z[s] for s in self.species]

    def fingerprint(self) -> str:
        """SHA-256 of the parameters (identifies the weights, e.g. in compile caches)."""
        h = hashlib.sha256()
        for path, arr in sorted(_flatten(self.params).items()):
            h.update(path.encode())
            h.update(np.ascontiguousarray(arr, np.float32).tobytes())
        return h.hexdigest()


def _flatten(tree: dict) -> dict[str, np.ndarray]:
    """``{'a': {'b': x}}`` → ``{'a/b': x}`` (the keys of ``params.npz``)."""
    return {k: np.asarray(v) for k, v in flatten_dict(tree, sep="/").items()}


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    return unflatten_dict(dict(flat), sep="/")


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the repository containing ``path`` (or this package), if any."""
    try:
        cwd = Path(path or Path(__file__).parent)
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def config_hash(meta: dict) -> str:
    """SHA-256 of every field of a ``config.json`` dict except ``config_sha256`` itself
    (canonical JSON: sorted keys, no whitespace, floats as Python writes them)."""
    body = {k: v for k, v in meta.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def write_config(path: str | Path, meta: dict) -> None:
    """Write ``meta`` as ``config.json`` into directory ``path`` with a fresh ``config_sha256``
    (atomically: a temporary file renamed into place)."""
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != "config_sha256"}, default=_json_default))
    meta["config_sha256"] = config_hash(meta)
    target = Path(path) / CONFIG_FILE
    atomic_write(target, json.dumps(meta, indent=1))


def save_checkpoint(ckpt: Checkpoint, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``ckpt`` to directory ``path`` atomically; returns the path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        flat = {k: np.asarray(v, np.float32) for k, v in _flatten(ckpt.params).items()}
        np.savez(tmp / PARAMS_FILE, **flat)
        provenance = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **ckpt.provenance}
        provenance.setdefault("git_commit", git_commit())
        meta = {
            "format_version": FORMAT_VERSION,
            "name": ckpt.name,
            "model": ckpt.config.to_dict(),
            "species": list(ckpt.species),
            "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"},
            "energy_shift": ckpt.energy_shift.to_dict(),
            "params_file": PARAMS_FILE,
            "params_sha256": file_sha256(tmp / PARAMS_FILE),
            "num_parameters": int(sum(v.size for v in flat.values())),
            "provenance": provenance,
        }
        if ckpt.envelope is not None:
            meta["envelope"] = ckpt.envelope.to_dict()
        if ckpt.periodic:
            meta["periodic"] = True
            meta["units"]["stress"] = "eV/Angstrom^3"
        write_config(tmp, meta)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def load_checkpoint(path: str | Path, check_shapes: bool = True) -> Checkpoint:
    """Read and validate a checkpoint directory.

    Raises:
      CheckpointError: naming the problem — missing directory or file, unreadable JSON,
        unsupported ``format_version``, checksum mismatch (corrupt bytes), unknown
        species, invalid hyperparameters, or parameter paths/shapes that do not match
        the model the hyperparameters describe.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise CheckpointError(f"checkpoint {path} is missing {CONFIG_FILE}")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path}: {CONFIG_FILE} is corrupt (not valid JSON: {exc})") from exc
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {version!r}; this efa-calc reads format_version "
            f"{FORMAT_VERSION} (convert it with the efa-calc version that wrote it, or upgrade efa-calc)"
        )
    try:
        config = ModelConfig.from_dict(meta["model"])
        species = [str(s) for s in meta["species"]]
        shift = EnergyShift(**meta.get("energy_shift", {}))
        params_file = path / meta.get("params_file", PARAMS_FILE)
        sha = meta["params_sha256"]
        envelope = Envelope.from_dict(meta["envelope"]) if meta.get("envelope") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: invalid {CONFIG_FILE} ({exc!r})") from exc
    bad = [s for s in species if s not in _Z or _Z[s] == 0]
    if bad or not species:
        raise CheckpointError(f"checkpoint {path}: invalid species {bad or species}")
    if not params_file.is_file():
        raise CheckpointError(f"checkpoint {path} is missing its parameter file {params_file.name}")
    if file_sha256(params_file) != sha:
        raise CheckpointError(f"checkpoint {path}: {params_file.name} is corrupt (SHA-256 checksum mismatch)")
    try:
        with np.load(params_file, allow_pickle=False) as z:
            flat = {k: np.asarray(z[k], np.float32) for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path}: {params_file.name} is corrupt ({exc})") from exc
    ckpt = Checkpoint(config, _unflatten(flat), species, shift, meta.get("provenance", {}), meta.get("name", path.name),
                      envelope, periodic=bool(meta.get("periodic", False)))
    if check_shapes:
        check_params(ckpt.params, config, where=f"checkpoint {path}")
    # Last, so that an edit with a specific consequence (unknown species, parameters that no
    # longer fit the hyperparameters) is reported as that; any other edit is caught here.
    if "config_sha256" in meta:
        if meta["config_sha256"] != config_hash(meta):
            raise CheckpointError(
                f"checkpoint {path}: {CONFIG_FILE} was modified after it was written (config_sha256 checksum "
                "mismatch: some field — species, hyperparameters, energy shift, envelope, ... — was edited)"
            )
        ckpt.config_checked = True
    return ckpt


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter paths and shapes the model described by ``config`` has."""
    import jax
    import jax.numpy as jnp

    from efa_calc.nn.batch import Batch
    from efa_calc.nn.energy_model import init_params

    n, e = 4, 4
    dummy = Batch(
        jnp.ones(n, jnp.int32), jnp.zeros((n, 3), jnp.float32), jnp.zeros(e, jnp.int32), jnp.zeros(e, jnp.int32),
        jnp.zeros(e, bool), jnp.zeros(n, jnp.int32), jnp.ones(n, bool), jnp.ones(1, bool),
    )
    with jax.enable_x64(False):
        shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0), dummy))
    return {k: tuple(v.shape) for k, v in flatten_dict(shapes, sep="/").items()}


def check_params(params: dict, config: ModelConfig, where: str = "parameters") -> None:
    """Raise :class:`CheckpointError` listing every path/shape mismatch with the model."""
    want = expected_shapes(config)
    have = {k: tuple(v.shape) for k, v in _flatten(params).items()}
    extra = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    shapes = sorted(f"{k}: {have[k]} (model expects {want[k]})" for k in set(have) & set(want) if have[k] != want[k])
    if extra or missing or shapes:
        parts = []
        if missing:
            parts.append("missing parameters: " + ", ".join(missing))
        if extra:
            parts.append("unexpected parameters: " + ", ".join(extra))
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes))
        head = f"{where} do not match the model hyperparameters"
        blocks = _block_mismatch(config, extra + missing + [k for k in set(have) & set(want) if have[k] != want[k]])
        raise CheckpointError(f"{head} — " + (blocks + " | " if blocks else "") + " | ".join(parts))


def _block_mismatch(config: ModelConfig, bad_paths: list[str]) -> str:
    """Name the recorded long-range block / MARA gate when mismatched parameters belong to them."""
    lr, notes = config.long_range, []
    if any(p.startswith("params/long_range_") for p in bad_paths):
        recorded = "no long-range block" if lr is None else f"long-range block {lr.kind!r} (iterations {list(lr.iterations)})"
        notes.append(f"the recorded {recorded} does not match the checkpoint's long_range_* parameters")
    if any(p.startswith("params/mara_gate_") for p in bad_paths):
        notes.append(f"the recorded mara_gate={config.mara_gate is not None} does not match the checkpoint's mara_gate_* parameters")
    return "; ".join(notes)
