"""Latent Ewald summation (LES; Cheng, arXiv 2408.15165, as in MACE-LES and NequIP-LES).

Per-atom latent charges from the scalar features, and their smeared Coulomb energy added
to the atomic energies.  For channels c = 1 … C:

    q_ic  = Dense_C(scalars(x_i))                                     (latent charge, e)
    φ_ic  = k_e Σ'_{j,n} q_jc erf(|r_ij + n·cell| / (√2 σ)) / |r_ij + n·cell|      (V)
    E_i  += Σ_c ½ q_ic φ_ic                                           (eV)

with k_e = 14.399645 eV·Å/e², σ = ``smearing`` (Å) and Σ' excluding j = i in the home
cell (n = 0).  erf(r/√2σ)/r is the interaction of two Gaussian charges of width σ/√2: it is
smooth (finite at r = 0), and it is exactly the *reciprocal-space* part of an Ewald sum of
point charges with splitting parameter σ.  So, as in LES, there is no real-space sum:

* **periodic cells**: jax-pme's Ewald (``method="ewald"``, k-vectors; O(N·N_k)), PME or
  P3M (``"pme"``, ``"p3m"``: charges on a mesh, FFT; O(N + M log M)) potential with an
  *empty* pair list — its reciprocal part with its self-energy term −q_i √(2/π)/σ (which
  removes j = i, n = 0) and its neutralising background.  The k = 0 term is omitted: a
  non-neutral total latent charge Q of a channel is compensated by a uniform background
  (jax-pme adds −k_e π σ² Q²/V), as in LES; a single charge in a cubic box of side L then
  has the Madelung energy −2.837297 k_e Q²/(2L).  No pair list is needed, so σ is
  independent of the model cutoff.
* **molecules** (no cell): the same interaction summed directly over all pairs, O(N²)
  (no background, a charged molecule is fine).  A molecule in a growing box tends to it
  (as 1/L for a net charge, 1/L³ for a neutral one).

Cells are treated as periodic along all three lattice vectors (a slab's vacuum vector
sets its image spacing).  The reciprocal resolution is static (jit): the backend puts the
k-grid (Ewald) or mesh (PME/P3M) shape of a batch, :meth:`LatentEwaldConfig.reciprocal_grid`
of its cells, into ``Batch.reciprocal_grid``.  Ewald's grid keeps every k with
|k| < π/λ, λ = πσ/√(2 ln(1/accuracy)), so every omitted term has a kernel below
``accuracy`` — supercell-consistent to that level; PME/P3M's accuracy is set by
``mesh_spacing`` (measured on 64 ions at the default h = σ/2: PME 8e-4, P3M 2e-6 relative
energy error; docs/periodic.md).  Energies are continuous in the cell except where the grid shape
changes (a jump of the truncation error's size).  Stress: autodiff through the cell
(:func:`~efa_calc.nn.energy_model.energy_forces_stress`), which jax-pme supports.

The block returns atomic energies (N,) in eV, added to E_i by the model
(``BlockSpec.energy``), not features: the faithful LES form, and the one that extrapolates
(1/r tails and screening are in the functional form, not learned by an MLP).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Integer

from efa_calc.nn.long_range import LongRangeConfig, register
from efa_calc.nn.long_range.pair_kernels import pair_layout, safe_distances

__all__ = ["COULOMB_EV_A", "LatentEwaldConfig", "LatentEwald", "latent_coulomb_energies"]

COULOMB_EV_A = 14.399645478425667  # k_e = e²/(4π ε₀) in eV·Å (jax-pme's prefactors.eV_A)
METHODS = ("ewald", "pme", "p3m")
MAX_GRID_POINTS = 2**27  # refuse reciprocal grids past 134 M points (≥ 1 GiB per channel in float64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatentEwaldConfig(LongRangeConfig):
    """Latent Ewald summation.

    Attributes:
      iterations, max_degree, include_pseudotensors: see :class:`LongRangeConfig` (only the
        scalar channel is used).
      num_charges: C, latent charge channels.
      smearing: σ in Å (> 0): the interaction is erf(r/√2σ)/r.
      method: ``"ewald"``, ``"pme"`` or ``"p3m"`` (periodic cells; molecules: direct sum).
      accuracy: Ewald: largest omitted kernel weight e^{−σ²k_c²/2}, in (0, 0.1].
      mesh_spacing: PME/P3M mesh spacing in Å (``None``: σ/2).
      interpolation_nodes: PME: 4 (jax-pme's only choice); P3M: 1 … 5.
    """

    kind: ClassVar[str] = "latent_ewald"
    num_charges: int = 1
    smearing: float = 1.0
    method: str = "ewald"
    accuracy: float = 1e-8
    mesh_spacing: float | None = None
    interpolation_nodes: int = 4

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.num_charges, int) and self.num_charges >= 1):
            raise ValueError(f"latent_ewald num_charges={self.num_charges!r}; allowed: an integer >= 1")
        if not (math.isfinite(self.smearing) and self.smearing > 0):
            raise ValueError(f"latent_ewald smearing={self.smearing!r} Å; allowed: a finite number > 0")
        if self.method not in METHODS:
            raise ValueError(f"latent_ewald method={self.method!r}; allowed: {', '.join(METHODS)}")
        if not 0 < self.accuracy <= 0.1:
            raise ValueError(f"latent_ewald accuracy={self.accuracy!r}; allowed: 0 < accuracy <= 0.1")
        if self.mesh_spacing is not None and not (math.isfinite(self.mesh_spacing) and self.mesh_spacing > 0):
            raise ValueError(f"latent_ewald mesh_spacing={self.mesh_spacing!r} Å; allowed: None or a number > 0")
        allowed = (4,) if self.method == "pme" else (1, 2, 3, 4, 5)
        if self.interpolation_nodes not in allowed:
            raise ValueError(f"latent_ewald interpolation_nodes={self.interpolation_nodes!r} for method "
                             f"{self.method!r}; allowed: {allowed}")

    @property
    def periodic(self) -> bool:
        return True

    @property
    def lr_wavelength(self) -> float:
        """Ewald's λ (Å): the grid keeps |k| < π/λ, where e^{−σ²k²/2} = ``accuracy``."""
        return math.pi * self.smearing / math.sqrt(2.0 * math.log(1.0 / self.accuracy))

    def reciprocal_grid(self, cells: np.ndarray) -> tuple[int, int, int]:
        """Static k-grid (Ewald) or mesh (PME/P3M) shape for cells (G, 3, 3) in Å: the
        per-axis maximum over the cells (a finer grid is only more accurate).

        Raises:
          ValueError: past :data:`MAX_GRID_POINTS` points, naming the cell and the setting.
        """
        kspace = _jaxpme().kspace  # numpy-only helpers: get_kgrid_*_shape
        cells = np.asarray(cells, np.float64).reshape(-1, 3, 3)
        if self.method == "ewald":
            shapes = [kspace.get_kgrid_ewald_shape(c, self.lr_wavelength) for c in cells]
        else:
            h = self.mesh_spacing if self.mesh_spacing is not None else self.smearing / 2
            shapes = [kspace.get_kgrid_mesh_shape(c, h) for c in cells]
        grid = tuple(int(max(s[a] for s in shapes)) for a in range(3))
        if math.prod(grid) > MAX_GRID_POINTS:
            raise ValueError(f"latent_ewald: the cell(s) need a {grid} reciprocal grid, more than "
                             f"{MAX_GRID_POINTS} points; use method='pme'/'p3m', a larger mesh_spacing or smearing, "
                             f"or a lower accuracy")
        return grid


@dataclasses.dataclass(frozen=True)
class _GridShape:
    """What jax-pme reads of its ``k_grid`` argument: only the shape (static under jit)."""

    shape: tuple[int, int, int]


def _jaxpme():
    """jax-pme, imported lazily (molecules do not need it), with an error naming the extra."""
    try:
        import jaxpme
        import jaxpme.kspace
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the latent_ewald block in periodic cells needs jax-pme: "
                          "pip install 'efa-calc[long-range]' (or pip install jax-pme)") from exc
    return jaxpme


@functools.lru_cache(maxsize=None)
def _calculator(method: str, interpolation_nodes: int):
    jaxpme = _jaxpme()
    if method == "ewald":
        return jaxpme.Ewald(prefactor=COULOMB_EV_A, full_neighbor_list=True)
    cls = jaxpme.PME if method == "pme" else jaxpme.P3M
    return cls(prefactor=COULOMB_EV_A, interpolation_nodes=interpolation_nodes, full_neighbor_list=True)


def _periodic_energies(config: LatentEwaldConfig, q, positions, cell, grid):
    """½ q_ic φ_ic (eV), (S, C), of one cell from jax-pme's reciprocal part (no pairs)."""
    calc = _calculator(config.method, config.interpolation_nodes)
    none = jnp.zeros((0,), jnp.int32)
    no_shifts = jnp.zeros((0, 3), positions.dtype)

    def channel(qc):  # jax-pme's "potentials" are ½φ: its energy is Σ_i q_i·potential_i
        return qc * calc.potentials(qc, cell, positions, none, none, no_shifts, _GridShape(grid), config.smearing)

    # a Python loop over the few channels: jax.vmap of jax-pme's Ewald was ~12× slower per
    # channel on CPU (1.3 s vs 0.11 s for 4 channels of 64 ions, 19³ k-vectors)
    return jnp.stack([channel(q[:, c]) for c in range(q.shape[1])], axis=1)


def _open_space_energies(config: LatentEwaldConfig, q, positions, pair_mask):
    """½ q_ic φ_ic (eV), (G, S, C): direct sum of erf(r/√2σ)/r over the pairs of each graph."""
    r = safe_distances(positions[:, :, None, :] - positions[:, None, :, :])  # (G, S, S)
    rs = jnp.where(pair_mask, r, 1.0)
    v = jnp.where(pair_mask, jax.scipy.special.erf(rs / (math.sqrt(2.0) * config.smearing)) / rs, 0.0)
    return 0.5 * COULOMB_EV_A * q * jnp.einsum("gij,gjc->gic", v, q)


def latent_coulomb_energies(
    config: LatentEwaldConfig,
    charges: Float[Array, "N C"],
    positions: Float[Array, "N 3"],
    batch_segments: Integer[Array, "N"],
    node_mask: Bool[Array, "N"],
    num_graphs: int,
    nodes_per_graph: Optional[int] = None,
    cells: Optional[Float[Array, "G 3 3"]] = None,
    reciprocal_grid: Optional[tuple[int, int, int]] = None,
) -> Float[Array, "N C"]:
    """Atomic energies ½ q_ic φ_ic in eV of fixed charges (e) at positions (Å), per channel;
    zero for padding atoms.  ``cells`` (rows a, b, c in Å) with its static
    ``reciprocal_grid``: periodic; without: open space.  The layout is the model's
    (slots of ``nodes_per_graph`` atoms, or any ``batch_segments``)."""
    q = charges * node_mask[:, None].astype(charges.dtype)
    n, c = q.shape
    g, s, same = pair_layout(n, batch_segments, num_graphs, nodes_per_graph)
    if cells is None:
        valid = node_mask.reshape(g, s)
        pairs = valid[:, :, None] & valid[:, None, :] & ~jnp.eye(s, dtype=bool)[None]
        if same is not None:
            pairs = pairs & same
        return _open_space_energies(config, q.reshape(g, s, c), positions.reshape(g, s, 3), pairs).reshape(n, c)
    if reciprocal_grid is None:
        raise ValueError("latent_ewald in periodic cells needs the batch's static reciprocal_grid: build the batch "
                         "with efa_calc.nn.long_range.with_reciprocal_grid(batch, config.long_range)")
    per_cell = jax.vmap(functools.partial(_periodic_energies, config, grid=tuple(reciprocal_grid)))
    if same is None:  # slot layout: one cell per block of S atoms
        return per_cell(q.reshape(g, s, c), positions.reshape(g, s, 3), cells).reshape(n, c)
    # arbitrary segments: every graph sees all N slots with the charges of the others zeroed
    member = batch_segments[None, :] == jnp.arange(num_graphs)[:, None]  # (G, N)
    qg = q[None] * member[..., None].astype(q.dtype)
    e = per_cell(qg, jnp.broadcast_to(positions, (num_graphs, n, 3)), cells)
    return jnp.sum(e, axis=0)


@register(LatentEwaldConfig, init_layers=(), energy=True)
class LatentEwald(nn.Module):
    """The latent Ewald block: latent charges (flax name ``charges``, ``nn.Dense`` on the
    scalar channel, C outputs, lecun-normal kernel and zero bias) and their smeared
    Coulomb energy; returns atomic energies (N,) in eV (summed over channels)."""

    config: LatentEwaldConfig

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "N P D F"],
        positions: Float[Array, "N 3"],
        batch_segments: Integer[Array, "N"],
        node_mask: Bool[Array, "N"],
        num_graphs: int,
        nodes_per_graph: Optional[int] = None,
        axis_name: Optional[str] = None,
        cells: Optional[Float[Array, "G 3 3"]] = None,
        reciprocal_grid: Optional[tuple[int, int, int]] = None,
    ) -> Float[Array, "N"]:
        """(N, P, (L+1)², F) features, positions (Å) [, cells (Å) and their static grid] →
        atomic energies (N,) in eV."""
        if axis_name is not None:
            raise ValueError("the latent_ewald block does not support sharded evaluation (devices=)")
        dtype = x.dtype
        q = nn.Dense(self.config.num_charges, dtype=dtype, name="charges")(x[:, 0, 0, :])
        e = latent_coulomb_energies(self.config, q, positions.astype(dtype), batch_segments, node_mask, num_graphs,
                                    nodes_per_graph, None if cells is None else cells.astype(dtype), reciprocal_grid)
        return jnp.sum(e, axis=-1)
