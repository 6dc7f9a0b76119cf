"""Long-range blocks: one module per block, one registry pairing each block with its config.

A long-range block adds a global branch to chosen message-passing iterations of
:class:`~efa_calc.nn.energy_model.EnergyModel`.  Every block is a flax module with the call
signature

    block(x, positions, batch_segments, node_mask, num_graphs, nodes_per_graph[, cells=...])
      x:         (N, P, (L+1)², F)   features cut to the block's input degree
      positions: (N, 3)              Å, centred per graph
      cells:     (G, 3, 3)           Å, rows a, b, c — passed only for a periodic batch
      → (N, P_v, (L_v+1)², F_v)     per-atom features (projected back to F by the model)

A block defined in periodic cells says so with its config's :attr:`LongRangeConfig.periodic`
(then its ``__call__`` takes ``cells``); the model passes ``cells`` only for periodic batches,
so molecular blocks keep their signature.  The stress is autodiff through ``cells`` and
``positions`` together (:func:`~efa_calc.nn.energy_model.energy_forces_stress`).

and a frozen config dataclass (a :class:`LongRangeConfig`) whose ``kind`` names it in
``config.json`` and in training TOML files (``[model.long_range] kind = "..."``).

**Adding a block is one new file in this package**: define the config and the module and
decorate the module with ``@register(ConfigClass)``.  This package imports every module in
it, so :class:`~efa_calc.nn.config.ModelConfig`, checkpoints, the calculator, the trainer and
the protocols find the new kind by name.

**Energy blocks** (``register(..., energy=True)``, :attr:`BlockSpec.energy`) return
atomic energies (N,) in eV instead of features; the model adds them to E_i (no
projection, MLP or switch for them).  A block whose config returns a grid from
:meth:`LongRangeConfig.reciprocal_grid` gets ``reciprocal_grid=`` (a static tuple, from
``Batch.reciprocal_grid``; :func:`with_reciprocal_grid` sets it) for periodic batches.

Blocks shipped: ``efa`` (:mod:`.efa`, Euclidean fast attention, O(N), with an exact O(N²)
evaluation of its kernel), ``all_to_all`` (:mod:`.all_to_all`, exact softmax attention
over all atoms of a structure, O(N²); minimum image in cells), ``latent_ewald``
(:mod:`.latent_ewald`, latent charges and their Ewald/PME energy via jax-pme, an energy block).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from typing import Any, ClassVar

import flax.linen as nn

__all__ = ["LongRangeConfig", "BlockSpec", "BLOCKS", "register", "block", "config_from_dict", "with_reciprocal_grid"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LongRangeConfig:
    """Fields every long-range block has.

    Attributes:
      iterations: message-passing iterations (0-based) that get a long-range branch.
      max_degree: degree of the block's input features in intermediate iterations
        (``None`` keeps the degree of the MPNN features; the last iteration is scalar).
      include_pseudotensors: parity of the block's input in intermediate iterations.
    """

    kind: ClassVar[str] = ""
    iterations: tuple[int, ...]
    max_degree: int | None = None
    include_pseudotensors: bool = False

    def __post_init__(self):
        object.__setattr__(self, "iterations", tuple(int(i) for i in self.iterations))

    @property
    def periodic(self) -> bool:
        """Whether the block is defined in periodic cells (accepts ``cells``)."""
        return False

    def reciprocal_grid(self, cells) -> tuple[int, int, int] | None:
        """Static reciprocal-space grid shape the block needs for cells (G, 3, 3) in Å
        (host-side numpy); ``None``: the block needs none."""
        return None

    @property
    def invariance_length(self) -> float:
        """Largest pair distance (Å) up to which the block is rotation invariant."""
        return math.inf

    def to_dict(self) -> dict:
        return {"kind": self.kind, **{f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}}


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """A registered block: its config class, its flax module, the names of its dense
    sub-layers in forward order (rescaled by the unit-output initialisation), and whether
    it returns atomic energies (eV) added to E_i (``energy``) rather than features."""

    kind: str
    config: type
    module: type[nn.Module]
    init_layers: tuple[str, ...]
    energy: bool = False


BLOCKS: dict[str, BlockSpec] = {}


def register(config_cls: type, init_layers: tuple[str, ...] = ("query", "key", "value"), energy: bool = False):
    """Class decorator: register a block module under ``config_cls.kind`` (``energy``: it
    returns atomic energies, see :class:`BlockSpec`)."""

    def wrap(module_cls):
        kind = config_cls.kind
        if not kind or kind in BLOCKS:
            raise ValueError(f"long-range block kind {kind!r} is empty or registered twice")
        BLOCKS[kind] = BlockSpec(kind, config_cls, module_cls, tuple(init_layers), bool(energy))
        return module_cls

    return wrap


def block(kind: str) -> BlockSpec:
    """The registered block ``kind``; ValueError naming the known kinds otherwise."""
    if kind not in BLOCKS:
        raise ValueError(f"unknown long-range block kind {kind!r}; known kinds: {sorted(BLOCKS)}")
    return BLOCKS[kind]


def config_from_dict(d: dict[str, Any]) -> LongRangeConfig:
    """Build a block config from its ``to_dict()`` form (``kind`` defaults to ``"efa"``)."""
    d = dict(d)
    spec = block(d.pop("kind", "efa"))
    known = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"long-range block {spec.kind!r} has no setting(s) {unknown}; settings: {sorted(known)}")
    return spec.config(**d)


def with_reciprocal_grid(batch, config: LongRangeConfig | None):
    """``batch`` with ``reciprocal_grid`` set from its cells for a block that needs one
    (unchanged for molecules, other blocks or ``config=None``)."""
    if config is None or batch.cells is None:
        return batch
    grid = config.reciprocal_grid(batch.cells)
    return batch if grid is None else batch.replace(reciprocal_grid=grid)


# Import every block module of this package (each registers itself).
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    importlib.import_module(f"{__name__}.{_info.name}")
