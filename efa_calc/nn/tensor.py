"""Equivariant message passing with factorised filters, computed coupling path by coupling path.

:class:`MessagePass` computes exactly what ``e3x.nn.MessagePass`` (sparse index lists)
computes, with the same parameter names and shapes (``filter``, ``tensor``), so
e3x-trained checkpoints load unchanged.  e3x's message from atom j to atom i along edge
e = (i ← j) is

    m_e[r, c₃, f] = Σ_{paths (0,ℓ₁),(q,ℓ₂)→(r,ℓ₃)} W[ℓ₁,q,ℓ₂,r,ℓ₃,f]
                    Σ_{c₁,c₂} C[c₁,c₂,c₃] φ_e[c₁,f] x_j[q,c₂,f],
    φ_e[c₁,f] = Y_{c₁}(r̂_e) Σ_k g_k(r_e) V_{ℓ₁}[k,f]             (Dense(basis))

with Clebsch–Gordan coefficients C (Racah normalisation, Cartesian order), a path allowed
when |ℓ₁−ℓ₂| ≤ ℓ₃ ≤ ℓ₁+ℓ₂ and the parities match.  The filter factorises into an angular
part Y(r̂_e) and a radial part ρ_e[ℓ₁,f] = g(r_e)·V_{ℓ₁}, so the sum over c₁ is done once
per edge, before any feature is touched:

    T_e^{ℓ₁ℓ₂ℓ₃}[c₂,c₃] = Σ_{c₁} C[c₁,c₂,c₃] Y_{c₁}(r̂_e)                   (geometry only)
    m_e[r, c₃, f] = Σ_paths W[…,f] ρ_e[ℓ₁,f] Σ_{c₂} T_e[c₂,c₃] x_j[q,c₂,f]

Why: e3x contracts one dense einsum over all degree components (a (E, P₁, (L₁+1)², P₂,
(L₂+1)², F) outer product); even path by path, the unfactorised product materialises
(E, 2ℓ₁+1, 2ℓ₂+1, F) per path.  Here the largest feature-sized intermediate is
(E, P₂, 2ℓ₃+1, F) per (ℓ₁, ℓ₂, ℓ₃) (one batched matmul serves both input parities),
the tables T are shared by every iteration (they depend on the geometry only, XLA
merges the identical computations), and structurally zero CG entries are never multiplied.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import e3x
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Integer

from efa_calc.nn.coupling import block, coupling_paths, coupling_table, max_degree

__all__ = ["EdgeBasis", "edge_basis", "MessagePass", "messages", "aggregate_messages", "coupling_table", "coupling_paths",
           "MESSAGE_PASSING", "GPU_MESSAGE_PASSING", "check_message_passing", "resolve_message_passing"]

#: The message-passing kernels: ``"native"`` (this module, the CPU default) and
#: ``"cuequivariance"`` (:mod:`efa_calc.nn.tensor_cueq`, NVIDIA's cuequivariance-jax).
MESSAGE_PASSING = ("native", "cuequivariance")

#: The default on GPUs.  Provisional: no GPU has measured it yet; ``benchmarks/gpu_check.sh``
#: times both kernels there and its result decides this value.
GPU_MESSAGE_PASSING = "cuequivariance"

_CUEQ_MISSING = ("message_passing='cuequivariance' needs cuequivariance-jax: pip install 'efa-calc[cuequivariance]' "
                 "(CPU) or 'efa-calc[gpu]' (CUDA 12, with the fused kernel)")


def _cuequivariance_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("cuequivariance", "cuequivariance_jax"))


def check_message_passing(value: str) -> str:
    """``value`` if it names an available kernel (:data:`MESSAGE_PASSING`).

    Raises:
      ValueError: for another name; ImportError: for ``"cuequivariance"`` without the package.
    """
    if value not in MESSAGE_PASSING:
        raise ValueError(f"message_passing={value!r}; allowed: {', '.join(map(repr, MESSAGE_PASSING))} "
                         "or None (the platform's default)")
    if value == "cuequivariance" and not _cuequivariance_installed():
        raise ImportError(_CUEQ_MISSING)
    return value


def resolve_message_passing(value: Optional[str], platform: str) -> str:
    """The kernel to use on ``platform`` (``jax.Device.platform``: "cpu", "gpu"/"cuda", ...):
    ``value`` if given, else ``"native"`` off GPUs and :data:`GPU_MESSAGE_PASSING` on them
    (``"native"`` there too when cuequivariance is not installed)."""
    if value is not None:
        return check_message_passing(value)
    if platform in ("gpu", "cuda") and (GPU_MESSAGE_PASSING == "native" or _cuequivariance_installed()):
        return GPU_MESSAGE_PASSING
    return "native"


class EdgeBasis(NamedTuple):
    """The factorised edge basis B_e[c, k] = Y_c(r̂_e) · g_k(r_e) (e3x's ``basis``).

    Attributes:
      radial: (E, K) radial functions times the cutoff function; 0 for padding edges.
      angular: (E, (L+1)²) real spherical harmonics of r̂_e (Racah normalisation,
        Cartesian order).
    """

    radial: Float[Array, "E K"]
    angular: Float[Array, "E D"]


def edge_basis(
    displacements: Float[Array, "E 3"], max_degree: int, num: int, radial_fn, cutoff_fn
) -> EdgeBasis:
    """The edge basis of ``e3x.nn.basis`` in factorised form (displacements in Å)."""
    norm = e3x.ops.norm(displacements, axis=-1)
    u = displacements / jnp.where(norm > 0, norm, 1.0)[:, None]
    radial = radial_fn(norm, num) * cutoff_fn(norm)[:, None]
    angular = e3x.so3.spherical_harmonics(u, max_degree, r_is_normalized=True, normalization="racah",
                                          cartesian_order=True)
    return EdgeBasis(radial.astype(displacements.dtype), angular.astype(displacements.dtype))


class _Kernel(nn.Module):
    """One parameter ``kernel`` of a fixed shape (keeps e3x's parameter paths)."""

    shape: tuple[int, ...]
    init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", self.init, self.shape, jnp.float32)


class RadialFilter(nn.Module):
    """The weights V_ℓ (K, F) of ``e3x.nn.Dense(basis)`` (no bias), one per basis degree, under
    e3x's names ``'0+'``, ``'1-'``, ``'2+'``, …; returns them stacked, (L+1, K, F).

    The radial filter of edge e is ρ_e[ℓ, f] = Σ_k g_k(r_e) V_ℓ[k, f]."""

    num_basis: int
    features: int
    max_degree: int

    @nn.compact
    def __call__(self) -> Float[Array, "L K F"]:
        return jnp.stack([_Kernel((self.num_basis, self.features), name=f"{l}{'+-'[l % 2]}")()
                          for l in range(self.max_degree + 1)])


def messages(
    x: Float[Array, "N P D F"],
    radial: Float[Array, "E K"],
    angular: Float[Array, "E Db"],
    src_idx: Optional[Integer[Array, "E"]],
    filter_weights: Float[Array, "Lb K F"],
    kernel: Float[Array, "1 Lb P L P3 L3 F"],
    p3n: int,
    l3max: int,
) -> Float[Array, "E P3 D3 F"]:
    """The message m_e of every edge (module docstring), a pure function.

    Args:
      x: node features (N, P, (L+1)², F), or the source features of every edge
        (E, P, (L+1)², F) when ``src_idx`` is ``None``.
      radial, angular: the edge basis (:class:`EdgeBasis`).
      src_idx: (E,) source atom of every edge (``None``: ``x`` is already per edge).
      filter_weights: V (L_b+1, K, F); kernel: the path weights W.
      p3n, l3max: output parity slots and degree.
    """
    p2n, l2max, features = x.shape[-3], max_degree(x.shape[-2]), x.shape[-1]
    l1max = max_degree(angular.shape[-1])
    dtype = x.dtype
    rho = jnp.einsum("ek,lkf->elf", radial, filter_weights)  # (E, L₁+1, F)
    paths = coupling_paths(l1max, p2n, l2max, p3n, l3max)
    blocks: dict[int, Array] = {}  # ℓ₃ → (E, P₃, 2ℓ₃+1, F)
    for b in range(l2max + 1):
        # Slice before the gather: the backward pass then pads an (N, …) array, not (E, …).
        x_b = x[:, :, block(b), :]
        x_b = x_b if src_idx is None else x_b[src_idx]  # (E, P, 2b+1, F)
        for c in range(l3max + 1):
            here = [p for p in paths if (p.l2, p.l3) == (b, c)]
            if not here:
                continue
            ls = sorted({p.l1 for p in here})
            allowed = np.zeros((len(ls), p2n, p3n))
            for p in here:
                allowed[ls.index(p.l1), p.q, p.r] = 1.0
            t = jnp.stack([coupling_table(angular, a, b, c) for a in ls], axis=1)  # (E, A, 2b+1, 2c+1)
            w = kernel[0, np.asarray(ls), :, b, :, c] * jnp.asarray(allowed, dtype)[..., None]  # (A, P, P₃, F)
            z = jnp.einsum("eajk,eqjf->eaqkf", t, x_b)
            term = jnp.einsum("eaqkf,aqrf,eaf->erkf", z, w, rho[:, np.asarray(ls), :])
            blocks[c] = blocks[c] + term if c in blocks else term
    e = radial.shape[0]
    return jnp.concatenate(
        [blocks.get(c, jnp.zeros((e, p3n, 2 * c + 1, features), dtype)) for c in range(l3max + 1)], axis=-2
    )


#: Edge lists longer than this are processed in chunks of at most this many edges (a
#: ``lax.scan`` whose backward pass recomputes each chunk), so that per-edge features never
#: exist for all edges at once: the memory of a call grows with the atoms, not with atoms ×
#: neighbours × features, and a chunk's working set stays in cache.
EDGE_CHUNK = 1024

#: Only edge lists longer than this many chunks are chunked: below, one pass is faster for
#: training steps (a loss on forces, differentiated again), while single energy+forces
#: calls gain from chunks from ~8000 pairs on (measurements in ``docs/performance.md``).
CHUNKS_ABOVE = 4


def aggregate_messages(
    x, radial, angular, dst_idx, src_idx, edge_gate, num_segments: int, filter_weights, kernel, p3n: int,
    l3max: int, chunk: Optional[int] = None, impl: str = "native",
) -> Float[Array, "N P3 D3 F"]:
    """m_i = Σ_{e: dst_e = i} g_e m_e, in edge chunks of at most ``chunk`` (default
    :data:`EDGE_CHUNK`; 0 never chunks) when E > :data:`CHUNKS_ABOVE` · ``chunk``; the
    same sum, as padding edges carry a zero radial part.  Chunks are balanced (E split
    into ⌈E/chunk⌉ equal parts, rounded up to a multiple of 64) so that padding stays
    below 64 edges per chunk.

    The chunked sum has its own reverse-mode rule (:func:`_chunked_messages`): it
    recomputes each chunk's messages and scatters their cotangents into one accumulator,
    in place.  Autodiff of the plain scan would instead add a full (N, P, D, F) cotangent
    per chunk, a cost that grows with atoms × chunks.  Consequence: forward-mode
    differentiation (``jax.jvp``, ``jax.hessian``) is not available for structures with
    more than CHUNKS_ABOVE · chunk pairs (4096 by default); reverse mode to any order is
    (training differentiates forces).

    ``impl`` (:data:`MESSAGE_PASSING`) computes the messages with :func:`messages`
    ("native") or with cuequivariance (:mod:`efa_calc.nn.tensor_cueq`, "cuequivariance";
    its one-pass call gathers and scatters inside the polynomial); the chunking is the same.
    """
    chunk = EDGE_CHUNK if chunk is None else chunk
    e = src_idx.shape[0]
    if chunk == 0 or e <= CHUNKS_ABOVE * chunk:
        if impl == "cuequivariance":
            from efa_calc.nn.tensor_cueq import cueq_messages

            return cueq_messages(x, radial, angular, src_idx, filter_weights, kernel, p3n, l3max, edge_gate, dst_idx,
                                 num_segments)
        m = _gated_messages(x, src_idx, filter_weights, kernel, radial, angular, edge_gate, p3n, l3max)
        return jax.ops.segment_sum(m, dst_idx, num_segments)
    n_chunks = _ceil_div(e, chunk)
    step = min(64, chunk)
    size = _ceil_div(_ceil_div(e, n_chunks), step) * step
    pad = n_chunks * size - e
    gate = jnp.ones((e,), x.dtype) if edge_gate is None else edge_gate.astype(x.dtype)
    edges = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(n_chunks, size, *a.shape[1:])
             for a in (radial, angular, gate, dst_idx, src_idx)]
    return _chunked_messages(num_segments, p3n, l3max, edge_gate is not None, impl, x, filter_weights, kernel, *edges)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _gated_messages(x, src_idx, filter_weights, kernel, radial, angular, gate, p3n, l3max, impl="native"):
    """:func:`messages` times the edge gate; no gate, no multiply (a gate of ones would cost
    an (E, P3, D3, F) pass that XLA cannot fold inside the chunk loop)."""
    if impl == "cuequivariance":
        from efa_calc.nn.tensor_cueq import cueq_messages

        return cueq_messages(x, radial, angular, src_idx, filter_weights, kernel, p3n, l3max, gate)
    m = messages(x, radial, angular, src_idx, filter_weights, kernel, p3n, l3max)
    return m if gate is None else m * gate.astype(m.dtype)[:, None, None, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _chunked_messages(num_segments, p3n, l3max, gated, impl, x, filter_weights, kernel, radial, angular, gate, dst, src):
    """Σ over chunks (leading axis of radial … src) of the scattered chunk messages."""

    def body(total, c):
        radial, angular, gate, dst, src = c
        m = _gated_messages(x[src], None, filter_weights, kernel, radial, angular, gate if gated else None, p3n, l3max,
                            impl)
        return total.at[dst].add(m), None

    # zeros_like(x): inside shard_map (efa_calc.backends.sharded) the carry must vary over the mesh
    # axis like x and the chunks do; elsewhere it is jnp.zeros
    shape = (num_segments, p3n, (l3max + 1) ** 2, x.shape[-1])
    total, _ = jax.lax.scan(body, jnp.zeros_like(x, shape=shape), (radial, angular, gate, dst, src))
    return total


def _chunked_fwd(num_segments, p3n, l3max, gated, impl, x, filter_weights, kernel, radial, angular, gate, dst, src):
    out = _chunked_messages(num_segments, p3n, l3max, gated, impl, x, filter_weights, kernel, radial, angular, gate, dst, src)
    return out, (x, filter_weights, kernel, radial, angular, gate, dst, src)  # inputs only: chunks are recomputed


def _chunked_bwd(num_segments, p3n, l3max, gated, impl, res, ct):
    x, filter_weights, kernel, radial, angular, gate, dst, src = res

    def body(acc, c):
        ct_x, ct_fw, ct_k = acc
        radial, angular, gate, dst, src = c
        def chunk_messages(x_e, filter_weights, kernel, radial, angular, gate):
            return _gated_messages(x_e, None, filter_weights, kernel, radial, angular, gate if gated else None, p3n,
                                   l3max, impl)

        _, vjp = jax.vjp(chunk_messages, x[src], filter_weights, kernel, radial, angular, gate)
        g_xe, g_fw, g_k, g_rad, g_ang, g_gate = vjp(ct[dst])
        return (ct_x.at[src].add(g_xe), ct_fw + g_fw, ct_k + g_k), (g_rad, g_ang, g_gate)

    zeros = (jnp.zeros_like(x), jnp.zeros_like(filter_weights), jnp.zeros_like(kernel))
    (ct_x, ct_fw, ct_k), (ct_rad, ct_ang, ct_gate) = jax.lax.scan(body, zeros, (radial, angular, gate, dst, src))
    return ct_x, ct_fw, ct_k, ct_rad, ct_ang, ct_gate, None, None


_chunked_messages.defvjp(_chunked_fwd, _chunked_bwd)


class MessagePass(nn.Module):
    """Drop-in for ``e3x.nn.MessagePass`` with sparse index lists (parameters ``filter`` and
    ``tensor``)::

        m_i = Σ_{e: dst_e = i} g_e · Tensor(Dense(basis_e), x[src_e])

    with an optional scalar gate g_e per edge (``edge_gate``, e.g. the MARA gate; 1 without),
    evaluated in the factorised form of the module docstring (:func:`messages`), in edge
    chunks for long edge lists (:func:`aggregate_messages`).

    Attributes:
      max_degree: output degree L' (``None``: the larger of the input and basis degrees).
      include_pseudotensors: whether the output has a pseudotensor slot (e3x's rule: none
        can arise when an input or the output is scalar-only and neither input has one).
      edge_chunk: pairs per chunk of the message sum (``None``: :data:`EDGE_CHUNK`; 0: never
        chunk, one pass over all pairs).
      message_passing: the kernel, ``"native"`` or ``"cuequivariance"`` (:data:`MESSAGE_PASSING`;
        the same numbers, the same parameters).

    Shapes: inputs (N, P, (L+1)², F), basis (E, K) and (E, (L_b+1)²) → (N, P', (L'+1)², F).
    """

    max_degree: Optional[int] = None
    include_pseudotensors: bool = True
    dtype: Optional[jnp.dtype] = None
    edge_chunk: Optional[int] = None
    message_passing: str = "native"

    @nn.compact
    def __call__(
        self,
        inputs: Float[Array, "N P D F"],
        basis: EdgeBasis,
        dst_idx: Integer[Array, "E"],
        src_idx: Integer[Array, "E"],
        num_segments: int,
        edge_gate: Optional[Float[Array, "E"]] = None,
    ) -> Float[Array, "N P3 D3 F"]:
        features = inputs.shape[-1]
        p2n, l2max = inputs.shape[-3], max_degree(inputs.shape[-2])
        l1max = max_degree(basis.angular.shape[-1])
        l3max = max(l1max, l2max) if self.max_degree is None else self.max_degree
        if l3max > l1max + l2max:
            raise ValueError(f"max_degree can be at most {l1max + l2max}, got {l3max}")
        pseudo = self.include_pseudotensors and not (p2n == 1 and 0 in (l1max, l2max, l3max))
        p3n = 2 if pseudo else 1
        filter_weights = RadialFilter(basis.radial.shape[-1], features, l1max, name="filter")()
        kernel = _Kernel((1, l1max + 1, p2n, l2max + 1, p3n, l3max + 1, features),
                         init=e3x.nn.initializers.tensor_lecun_normal(), name="tensor")()
        dtype = self.dtype or jnp.result_type(inputs, filter_weights)
        return aggregate_messages(
            inputs.astype(dtype), basis.radial.astype(dtype), basis.angular.astype(dtype), dst_idx, src_idx,
            edge_gate, num_segments, filter_weights.astype(dtype), kernel.astype(dtype), p3n, l3max,
            chunk=self.edge_chunk, impl=check_message_passing(self.message_passing),
        )
