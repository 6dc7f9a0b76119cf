"""The reference EFA code's models: its hyperparameters and its checkpoints (orbax/OCDBT), spec §6.4 and §7.

:func:`from_reference_hyperparameters` translates the reference ``EnergyModel`` keyword
arguments into a :class:`~efa_calc.nn.config.ModelConfig`.

The reference trainer saves ``<run>/ckpt_<step>/params`` with flax auto-generated module
names (``Embed_0``, ``MessagePass_t``, one shared ``Dense_k`` counter in call order,
``EuclideanRopeAttention_t/Dense_{0,1,2}``, ``c_switch_layer_t``, ``element_bias``).
:func:`reference_to_params` renames them to efa-calc's explicit names and refuses any
mismatch in either direction — a leaf the model would not use, or a model parameter the
checkpoint lacks — listing the offending paths (flax itself would silently ignore
unused leaves; the cumulene EFA run then loads "fine" but wrong with ``era_max_degree=0``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from flax.traverse_util import flatten_dict, unflatten_dict

from efa_calc.errors import CheckpointError
from efa_calc.nn.config import EFAConfig, ModelConfig

__all__ = [
    "from_reference_hyperparameters",
    "latest_step_dir",
    "load_reference_tree",
    "reference_name_map",
    "reference_to_params",
    "species_from_element_bias",
    "checkpoint_from_reference",
]


# Reference EnergyModel keywords that we implement and their defaults (spec §6.1).
_REF_DEFAULTS: dict[str, Any] = {
    "cutoff": 5.0,
    "cutoff_fn": "smooth_cutoff",
    "num_features": 32,
    "num_iterations": 2,
    "mp_max_degree": 2,
    "radial_basis_fn": "reciprocal_bernstein",
    "mp_num_basis_fn": 32,
    "use_switch": True,
    "output_is_zero_at_init": True,
    "zmax": 118,
    "era_use_in_iterations": None,
    "era_max_degree": None,
    "era_include_pseudotensors": False,
    "era_activation_fn": None,
    "era_max_frequency": None,
    "era_max_length": None,
    "era_lebedev_num": None,
    "era_qk_num_features": None,
    "era_v_num_features": None,
}
# Keywords accepted only at these values (features of the reference we do not implement).
_REF_UNSUPPORTED: dict[str, Any] = {
    "num_post_residual_mlps": 0,
    "self_interaction": False,
    "atomic_dipole_embedding": False,
    "era_tensor_integration": False,
    "emulate_era_block": False,
    "iterated_tensor_products": False,
}
_REF_IGNORED = {"era_num_frequencies"}  # a no-op in the reference (spec §5)


def from_reference_hyperparameters(hp: dict) -> ModelConfig:
    """Translate reference ``EnergyModel`` keyword arguments into a :class:`ModelConfig`.

    Raises:
      ValueError: for unknown keywords, for features we do not implement (tensor
        integration, dipole embedding, self-interaction, post-residual MLPs), or for an
        EFA branch without grid/frequency/length settings.
    """
    unknown = sorted(set(hp) - set(_REF_DEFAULTS) - set(_REF_UNSUPPORTED) - _REF_IGNORED)
    if unknown:
        raise ValueError(f"unknown reference EnergyModel hyperparameters: {unknown}")
    for k, ok in _REF_UNSUPPORTED.items():
        if k in hp and hp[k] is not None and hp[k] != ok:
            raise ValueError(f"reference hyperparameter {k}={hp[k]!r} is not supported by efa-calc (only {ok!r})")
    p = {**_REF_DEFAULTS, **{k: v for k, v in hp.items() if k in _REF_DEFAULTS}}
    act = p["era_activation_fn"]
    if act in (None, "identity"):
        act = "identity"
    elif act not in ("gelu",):
        raise ValueError(f"era_activation_fn={act!r} not supported (use 'gelu')")
    lr = None
    if p["era_use_in_iterations"]:
        missing = [k for k in ("era_lebedev_num", "era_max_frequency", "era_max_length") if p[k] is None]
        if missing:
            raise ValueError(f"EFA is enabled (era_use_in_iterations) but {missing} are not set")
        lr = EFAConfig(
            iterations=tuple(p["era_use_in_iterations"]),
            lebedev_num=int(p["era_lebedev_num"]),
            max_frequency=float(p["era_max_frequency"]),
            max_length=float(p["era_max_length"]),
            max_degree=p["era_max_degree"],
            include_pseudotensors=bool(p["era_include_pseudotensors"]),
            qk_features=p["era_qk_num_features"],
            v_features=p["era_v_num_features"],
            activation=act,
        )
    return ModelConfig(
        num_features=int(p["num_features"]),
        num_iterations=int(p["num_iterations"]),
        cutoff=float(p["cutoff"]),
        mp_max_degree=int(p["mp_max_degree"]),
        num_basis_functions=int(p["mp_num_basis_fn"]),
        radial_basis=str(p["radial_basis_fn"]),
        cutoff_fn=str(p["cutoff_fn"]),
        use_switch=bool(p["use_switch"]),
        output_is_zero_at_init=bool(p["output_is_zero_at_init"]),
        zmax=int(p["zmax"]),
        long_range=lr,
    )


def latest_step_dir(ckpt_dir: str | Path) -> Path:
    """The newest ``ckpt_<step>`` directory of a reference run (or ``ckpt_dir`` itself if it is one)."""
    p = Path(ckpt_dir)
    if not p.is_dir():
        raise CheckpointError(f"reference checkpoint directory {p} does not exist")
    if re.fullmatch(r"ckpt_\d+", p.name) and (p / "params").is_dir():
        return p
    steps = sorted(
        (int(m.group(1)), c) for c in p.iterdir() if (m := re.fullmatch(r"ckpt_(\d+)", c.name)) and (c / "params").is_dir()
    )
    if not steps:
        raise CheckpointError(f"{p} holds no reference checkpoint (no ckpt_<step>/params directory)")
    return steps[-1][1]


def load_reference_tree(ckpt_dir: str | Path) -> dict:
    """Restore the raw parameter tree ``{'params': {...}}`` (numpy float32) of the latest step."""
    step_dir = latest_step_dir(ckpt_dir)
    import orbax.checkpoint as ocp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            restored = ocp.StandardCheckpointer().restore((step_dir / "params").resolve())
    except Exception as exc:  # orbax raises many types for damaged directories
        raise CheckpointError(f"could not read the orbax checkpoint {step_dir / 'params'}: {exc}") from exc
    import jax

    tree = jax.tree_util.tree_map(np.asarray, restored)
    if not isinstance(tree, dict) or "params" not in tree:
        raise CheckpointError(f"{step_dir / 'params'} does not hold a {{'params': ...}} tree")
    return tree


def reference_name_map(config: ModelConfig) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Map reference module paths to efa-calc module paths, following the call order of spec §6.4."""
    m: dict[tuple[str, ...], tuple[str, ...]] = {("Embed_0",): ("embed",), ("element_bias",): ("element_bias",)}
    lr = config.long_range
    k = 0
    for t in range(config.num_iterations):
        m[(f"MessagePass_{t}",)] = (f"message_pass_{t}",)
        m[(f"Dense_{k}",)] = (f"local_mlp_{t}_0",)
        m[(f"Dense_{k + 1}",)] = (f"local_mlp_{t}_1",)
        k += 2
        if lr is not None and t in lr.iterations:
            for ref, ours in (("Dense_0", "query"), ("Dense_1", "key"), ("Dense_2", "value")):
                m[(f"EuclideanRopeAttention_{t}", ref)] = (f"long_range_{t}", ours)
            m[(f"Dense_{k}",)] = (f"long_range_projection_{t}",)
            m[(f"Dense_{k + 1}",)] = (f"long_range_mlp_{t}_0",)
            m[(f"Dense_{k + 2}",)] = (f"long_range_mlp_{t}_1",)
            k += 3
        if config.use_switch:
            m[(f"c_switch_layer_{t}",)] = (f"switch_{t}",)
    m[(f"Dense_{k}",)] = ("readout",)
    return m


def _rename(path: tuple[str, ...], name_map) -> tuple[str, ...] | None:
    for n in (2, 1):
        if path[:n] in name_map:
            return name_map[path[:n]] + path[n:]
    return None


def reference_to_params(tree: dict, config: ModelConfig) -> dict:
    """Rename a reference tree to efa-calc names and check it against the model.

    Args:
      tree: raw reference tree ``{'params': {...}}``.
      config: model hyperparameters.

    Returns:
      ``{'params': {...}}`` with efa-calc names, float32.

    Raises:
      CheckpointError: listing unused checkpoint leaves, missing model parameters and
        shape mismatches.
    """
    flat = flatten_dict(tree["params"])
    name_map = reference_name_map(config)
    renamed, origin, unused = {}, {}, []
    for path, val in flat.items():
        new = _rename(path, name_map)
        if new is None:
            unused.append("/".join(path))
        else:
            renamed[new] = np.asarray(val, np.float32)
            origin[new] = "/".join(path)
    from efa_calc.checkpoint import expected_shapes

    want = {tuple(k.split("/"))[1:]: v for k, v in expected_shapes(config).items()}
    unused += [f"{origin[p]} (would be {'/'.join(p)})" for p in renamed if p not in want]
    missing = sorted("/".join(p) for p in want if p not in renamed)
    shapes = sorted(
        f"{origin[p]}: checkpoint {renamed[p].shape} vs model {want[p]}"
        for p in renamed if p in want and tuple(renamed[p].shape) != want[p]
    )
    if unused or missing or shapes:
        lines = []
        if unused:
            lines.append("checkpoint leaves the model does not use: " + ", ".join(sorted(unused)))
        if missing:
            lines.append("model parameters missing from the checkpoint: " + ", ".join(missing))
        if shapes:
            lines.append("shape mismatches: " + "; ".join(shapes))
        raise CheckpointError(
            "reference checkpoint does not match the hyperparameters "
            "(check num_iterations, era_use_in_iterations, era_max_degree, widths):\n  " + "\n  ".join(lines)
        )
    return {"params": unflatten_dict(renamed)}


def species_from_element_bias(element_bias: np.ndarray) -> list[str]:
    """Elements whose ``element_bias`` entry is non-zero (untrained entries stay exactly 0)."""
    z = np.flatnonzero(np.asarray(element_bias) != 0.0)
    return [chemical_symbols[int(i)] for i in z]


def checkpoint_from_reference(
    ckpt_dir: str | Path,
    hyperparameters: dict,
    species: list[str] | None = None,
    energy_shift=None,
    name: str | None = None,
):
    """Build an efa-calc :class:`~efa_calc.checkpoint.Checkpoint` from a reference run.

    Args:
      ckpt_dir: the run directory (or one ``ckpt_<step>`` directory in it).
      hyperparameters: reference ``EnergyModel`` keyword arguments (JSON values;
        ``era_activation_fn: "gelu"`` means e3x's gelu).
      species: chemical symbols; default: elements with a non-zero ``element_bias``.
      energy_shift: optional :class:`~efa_calc.checkpoint.EnergyShift` (the reference
        models predict energies minus the training mean or per-element shifts).
      name: display name.

    Raises:
      CheckpointError: unreadable checkpoint or leaves that do not match the hyperparameters.
      ValueError: unsupported hyperparameters.
    """
    from efa_calc.checkpoint import Checkpoint, EnergyShift

    config = from_reference_hyperparameters(hyperparameters)
    step_dir = latest_step_dir(ckpt_dir)
    tree = load_reference_tree(step_dir)
    params = reference_to_params(tree, config)
    derived = species_from_element_bias(params["params"]["element_bias"])
    if species is None:
        species = derived
        if not species:
            raise CheckpointError(f"{step_dir}: element_bias is all zero; pass species=[...] explicitly")
    provenance = {
        "source": "reference EFA code checkpoint (thorben-frank/euclidean_fast_attention)",
        "reference_checkpoint": str(Path(step_dir).resolve()),
        "reference_hyperparameters": hyperparameters,
        "species_derived_from_element_bias": derived,
    }
    return Checkpoint(config, params, list(species), energy_shift or EnergyShift(), provenance,
                      name or Path(ckpt_dir).resolve().name)
