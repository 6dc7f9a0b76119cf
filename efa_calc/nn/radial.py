"""Radial basis functions, accurate in float32.

``reciprocal_bernstein`` equals e3x's ``reciprocal_bernstein(r, num)`` (``kind='shifted'``):
with t = r/(1+r) and n = K−1,

    B_k(r) = C(n, k) tᵏ (1−t)ⁿ⁻ᵏ = C(n, k) rᵏ / (1+r)ⁿ,   k = 0 … K−1   (r in Å).

e3x evaluates it as exp(log C + k log t + (n−k) log(1−t)) with log C from ``betaln`` in the
working precision; in float32 that gives a *systematic* relative error of ~2e-5 in every
basis function, which became the dominant float32 error of whole models (1e-4 eV on a
13-atom cumulene).  Here the binomials are exact float64 constants and the powers are
products of the correctly rounded t and 1−t = 1/(1+r), so the error is a few ulp and
unbiased.  The coefficients are e3x's own float64 values (see :func:`_binomials`).
"""

from __future__ import annotations

import functools
import math

import e3x
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["reciprocal_bernstein", "radial_function"]


@functools.lru_cache(maxsize=None)
def _binomials(num: int) -> np.ndarray:
    """C(n, k) as e3x evaluates them in float64, exp(−betaln(n−k+1, k+1) − log(n+1)).

    They differ from the exact integers by ~1e-8 relative (jax's float64 ``betaln``); the
    published checkpoints' reference numbers were computed with these values, so using
    them keeps float64 results identical to the reference code's (~1e-14 eV).
    """
    import jax.scipy.special

    n = num - 1
    with jax.enable_x64(True), jax.ensure_compile_time_eval():
        v = jnp.arange(num, dtype=jnp.float64)
        logc = -jax.scipy.special.betaln(1.0 + n - v, 1.0 + v) - jnp.log(n + 1.0)
        c = np.exp(np.asarray(logc, np.float64))
    exact = np.array([math.comb(n, k) for k in range(num)], np.float64)
    assert np.allclose(c, exact, rtol=1e-6), "unexpected binomial coefficients"
    return c


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _bernstein(t: Float[Array, "..."], q: Float[Array, "..."], num: int) -> Float[Array, "... num"]:
    """B_k(t) = C(n,k) tᵏ qⁿ⁻ᵏ with q = 1 − t passed separately (computed without cancellation)."""
    n = num - 1
    if n == 0:
        return jnp.ones_like(t)[..., None]
    return jnp.asarray(_binomials(num), t.dtype) * _powers(t, n) * _powers(q, n)[..., ::-1]


def _powers(x: Float[Array, "..."], n: int) -> Float[Array, "... n+1"]:
    """x⁰ … xⁿ by doubling (x^{m+k} = x^m·x^k): ⌈log₂(n+1)⌉ vector products instead of n
    scalar-wide ones, each a separate XLA operation."""
    p = jnp.ones_like(x)[..., None]
    while p.shape[-1] < n + 1:
        p = jnp.concatenate([p, p * (p[..., -1:] * x[..., None])], axis=-1)
    return p[..., : n + 1]


@_bernstein.defjvp
def _bernstein_jvp(num, primals, tangents):
    # dB_k/dt = n (B_{k−1}^{n−1} − B_k^{n−1}), the same identity e3x uses, so gradients
    # agree with the reference code to rounding.  q = 1 − t, hence dt = (ṫ − q̇)/2.
    t, q = primals
    t_dot, q_dot = tangents
    out = _bernstein(t, q, num)
    if num == 1:
        return out, jnp.zeros_like(out)
    lower = _bernstein(t, q, num - 1)
    zero = jnp.zeros_like(lower[..., :1])
    d = (num - 1) * (jnp.concatenate([zero, lower], -1) - jnp.concatenate([lower, zero], -1))
    return out, d * (0.5 * (t_dot - q_dot))[..., None]


def reciprocal_bernstein(r: Float[Array, "..."], num: int) -> Float[Array, "... num"]:
    """Reciprocal Bernstein basis of ``num`` functions of the distance ``r`` (Å)."""
    q = 1.0 / (1.0 + r)  # 1 − t, without cancellation
    return _bernstein(r * q, q, num)


def radial_function(name: str, cutoff: float | None = None):
    """The radial basis named ``name``: ours where we have an accurate version, else e3x's.

    e3x's bases on a finite interval (``basic_gaussian``, ``basic_bernstein``, ``sinc``, ...)
    take a ``limit`` (default 1 Å, useless for any real cutoff): it is set to ``cutoff`` (Å)
    when given, so that their functions span 0 … cutoff uniformly in r.
    """
    if name == "reciprocal_bernstein":
        return reciprocal_bernstein
    fn = getattr(e3x.nn, name, None)
    if fn is None:
        raise ValueError(f"unknown radial basis function {name!r}")
    import inspect

    if cutoff is not None and "limit" in inspect.signature(fn).parameters:
        return functools.partial(fn, limit=float(cutoff))
    return fn
