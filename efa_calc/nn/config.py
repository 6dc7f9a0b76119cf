"""Model hyperparameters: one frozen, JSON-serialisable description of an energy model.

:class:`ModelConfig` describes the local equivariant MPNN; its optional ``long_range``
field holds the configuration of the global block added to chosen iterations, selected by
``kind`` from the registry in :mod:`efa_calc.nn.long_range` (``"efa"``: Euclidean fast
attention; ``"all_to_all"``: exact softmax attention).  ``mara_gate`` adds the MARA
spherical-attention gate (:mod:`efa_calc.nn.mara`) to every local message pass.

Units: lengths (``cutoff``, ``max_length``) in Å, frequencies in rad (``max_frequency``
is the dimensionless b_max; the largest ERoPE frequency is ``max_frequency / max_length``
in rad/Å).
"""

from __future__ import annotations

import dataclasses
import math

from efa_calc.nn.long_range import BLOCKS, LongRangeConfig, config_from_dict
from efa_calc.nn.long_range.all_to_all import AllToAllConfig
from efa_calc.nn.long_range.efa import EFAConfig
from efa_calc.nn.mara import MARAGateConfig
from efa_calc.nn.tensor import check_message_passing

__all__ = [
    "AllToAllConfig", "EFAConfig", "LongRangeConfig", "MARAGateConfig", "ModelConfig", "LONG_RANGE_CONFIGS",
]


#: long-range block kind -> config class (the registry of :mod:`efa_calc.nn.long_range`).
LONG_RANGE_CONFIGS: dict[str, type] = {kind: spec.config for kind, spec in BLOCKS.items()}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the EFA+MPNN energy model (spec §6).

    Attributes:
      num_features: feature width F.
      num_iterations: message-passing iterations T.
      cutoff: local cutoff in Å.
      mp_max_degree: maximum degree L of the edge basis.
      num_basis_functions: radial basis size.
      radial_basis: e3x radial function name (``reciprocal_bernstein``); e3x's finite-interval
        bases (``basic_gaussian``, ``basic_bernstein``, ``sinc``, ...) span 0 … ``cutoff``
        (their ``limit`` is set to the cutoff; the reference code would leave it at 1 Å).
      cutoff_fn: e3x cutoff function name (``smooth_cutoff``).
      use_switch: learned mixing x ← x + silu(c)·local + silu(1−c)·long-range.
      output_is_zero_at_init: the reference's initialisation (spec §6): the readout kernel
        and every MLP's last layer start at zero, so the first energy is Σ element_bias.
        That start is a saddle of the loss — no position-dependent layer gets a gradient
        until the readout and the MLPs' last layers have both moved — and in our runs
        such models learned almost no torsion energy.  ``False`` (our training configs)
        initialises those layers like every other Dense (LeCun normal).  Only affects
        ``init_params``; loading a checkpoint ignores it.
      zmax: largest atomic number the embedding accepts is ``zmax - 1``.
      long_range: config of the long-range block, or ``None`` for a local model.
      mara_gate: :class:`~efa_calc.nn.mara.MARAGateConfig` of the MARA edge gate on every
        local message pass, or ``None`` (config files: ``true``/``false`` or a table).
      edge_chunk: evaluation setting, not a hyperparameter (never saved): pairs per chunk
        of the message sums (``None``: :data:`efa_calc.nn.tensor.EDGE_CHUNK`; 0: one pass).
      message_passing: evaluation setting (never saved): the message-passing kernel,
        ``"native"`` or ``"cuequivariance"`` (:data:`efa_calc.nn.tensor.MESSAGE_PASSING`).
    """

    num_features: int
    num_iterations: int
    cutoff: float = 5.0
    mp_max_degree: int = 2
    num_basis_functions: int = 32
    radial_basis: str = "reciprocal_bernstein"
    cutoff_fn: str = "smooth_cutoff"
    use_switch: bool = True
    output_is_zero_at_init: bool = True
    zmax: int = 118
    long_range: LongRangeConfig | None = None
    mara_gate: MARAGateConfig | None = None
    edge_chunk: int | None = dataclasses.field(default=None, metadata={"evaluation": True})
    message_passing: str = dataclasses.field(default="native", metadata={"evaluation": True})

    def __post_init__(self):
        object.__setattr__(self, "mara_gate", MARAGateConfig.from_value(self.mara_gate))
        check_message_passing(self.message_passing)
        if self.num_iterations < 1 or self.num_features < 1:
            raise ValueError("num_iterations and num_features must be >= 1")
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive (Å), got {self.cutoff}")
        if self.long_range is not None:
            bad = [i for i in self.long_range.iterations if not 0 <= i < self.num_iterations]
            if bad:
                raise ValueError(f"long-range iterations {bad} outside 0..{self.num_iterations - 1}")

    @property
    def max_length(self) -> float:
        """Largest pair distance (Å) for which the model is rotationally invariant (inf if local)."""
        return math.inf if self.long_range is None else float(self.long_range.invariance_length)

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def for_evaluation(self, lebedev_num: int | None = None, efa_exact: bool = False,
                       edge_chunk: int | None = None, message_passing: str | None = None) -> "ModelConfig":
        """The same model (same parameters) with EFA evaluated on another Lebedev grid, or
        with its exact j₀ kernel (``efa_exact``), or with another message-sum chunk size or
        message-passing kernel (``None``: unchanged).

        Raises:
          ValueError: when an EFA override is asked of a model without an EFA block, for a
            negative ``edge_chunk`` or an unknown ``message_passing``; ImportError:
            "cuequivariance" without the package (naming the extra to install).
        """
        if message_passing is not None:
            return self.replace(message_passing=message_passing).for_evaluation(lebedev_num, efa_exact, edge_chunk)
        if edge_chunk is not None:
            if not (isinstance(edge_chunk, int) and edge_chunk >= 0):
                raise ValueError(f"edge_chunk={edge_chunk!r}; allowed: an integer >= 0 (0: never chunk)")
            return self.replace(edge_chunk=edge_chunk).for_evaluation(lebedev_num, efa_exact)
        if lebedev_num is None and not efa_exact:
            return self
        if not isinstance(self.long_range, EFAConfig):
            kind = "no long-range block" if self.long_range is None else f"the {self.long_range.kind!r} block"
            raise ValueError(f"lebedev_num / efa_exact apply to EFA models; this model has {kind}")
        lr = self.long_range
        if lebedev_num is not None:
            lr = dataclasses.replace(lr, lebedev_num=int(lebedev_num))
        if efa_exact:
            lr = dataclasses.replace(lr, kernel="exact")
        return self.replace(long_range=lr)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
             if f.name not in ("long_range", "mara_gate") and not f.metadata.get("evaluation")}
        d["long_range"] = None if self.long_range is None else self.long_range.to_dict()
        if self.mara_gate is not None:  # absent in configs written before the gate existed
            d["mara_gate"] = self.mara_gate.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        lr = d.pop("long_range", None)
        known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("evaluation")}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model hyperparameters {unknown}")
        return cls(**d, long_range=None if lr is None else config_from_dict(lr))
