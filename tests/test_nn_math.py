"""The mathematics against hand computations and analytic limits (spec §2, §3, §5)."""

from __future__ import annotations

import e3x
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efa_calc.nn import erope
from efa_calc.nn.long_range.efa import fold_antipodal, linear_attention, pair_kernel_attention
from efa_calc.nn.lebedev import GRID_SIZES, MAX_PHASE, lebedev_grid


def test_rotate_pairs_by_hand():
    x = jnp.asarray(np.arange(1.0, 5.0).reshape(1, 1, 1, 4))  # channels [1, 2, 3, 4]
    theta = jnp.asarray([[[0.3, -1.1]]])  # (N=1, M=1, K=2)
    out = np.asarray(erope.rotate(x, theta))[0, 0, 0, 0]
    c0, s0, c1, s1 = np.cos(0.3), np.sin(0.3), np.cos(-1.1), np.sin(-1.1)
    expected = [1 * c0 - 2 * s0, 2 * c0 + 1 * s0, 3 * c1 - 4 * s1, 4 * c1 + 3 * s1]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_frequencies_linear_from_zero():
    w = erope.frequencies(16, np.pi, 20.0)  # SN2 model
    np.testing.assert_allclose(w, np.arange(8) * np.pi / (7 * 20.0))
    assert erope.frequencies(2, np.pi, 10.0).tolist() == [np.pi / 10.0]
    with pytest.raises(ValueError, match="even"):
        erope.frequencies(7, np.pi, 10.0)


@pytest.mark.parametrize("num", [50, 194, 5810])
def test_lebedev_integrates_the_erope_kernel(num):
    """Σ_m w_m cos(ω u_m·r) = sinc(ωr) to 1e-5 up to the tabulated phase; Σ w sin = 0."""
    u, w = lebedev_grid(num)
    assert abs(w.sum() - 1) < 1e-14
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(100, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for phase in np.linspace(0.05, MAX_PHASE[num], 25):
        proj = (u @ dirs.T) * phase  # (M, 100)
        np.testing.assert_allclose(w @ np.cos(proj), np.sinc(phase / np.pi), atol=1e-5)
        assert np.abs(w @ np.sin(proj)).max() < 1e-14


def test_lebedev_rejects_unknown_sizes():
    assert 50 in GRID_SIZES
    with pytest.raises(ValueError, match="available sizes"):
        lebedev_grid(60)


def _pairwise(q, k, v, seg, mask):
    """The N×N form y_i = Σ_{j∈g(i)} Σ_m q_im·k_jm v_j (test-only reference)."""
    alpha = np.einsum("imd,jmd->ij", q, k)
    same = (seg[:, None] == seg[None, :]) & mask[None, :]
    return (alpha * same) @ v


def test_linear_attention_equals_pairwise_form():
    rng = np.random.default_rng(1)
    g, s, m, d, dv = 3, 5, 7, 6, 4
    n = g * s
    q, k, v = rng.normal(size=(n, m, d)), rng.normal(size=(n, m, d)), rng.normal(size=(n, dv))
    seg = np.repeat(np.arange(g), s)
    mask = rng.random(n) > 0.3
    k_m, v_m = k * mask[:, None, None], v * mask[:, None]
    want = _pairwise(q, k, v, seg, mask)
    with jax.enable_x64(True):
        slots = linear_attention(jnp.asarray(q), jnp.asarray(k_m), jnp.asarray(v_m), jnp.asarray(seg), g, s)
        segs = linear_attention(jnp.asarray(q), jnp.asarray(k_m), jnp.asarray(v_m), jnp.asarray(seg), g, None)
    np.testing.assert_allclose(np.asarray(slots), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(segs), want, rtol=1e-10, atol=1e-12)


def test_two_node_example_bessel_kernel():
    """Notebook example: inputs [1, 1] at 0.391 Å, b_max = 4π (max_length 1 Å) gives
    √2 (1 + sinc(4π·0.391)) = 1.13279 with q = k = v = x."""
    u, w = lebedev_grid(194)  # b(194) = 4π
    pos = np.array([[0.0, 0.0, 0.0], [0.391, 0.0, 0.0]]) @ np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    x = np.ones((2, 1, 1, 2))
    omega = erope.frequencies(2, 4 * np.pi, 1.0)
    with jax.enable_x64(True):
        theta = erope.phases(jnp.asarray(pos), jnp.asarray(u), jnp.asarray(omega))
        q = erope.rotate(jnp.asarray(x), theta).reshape(2, len(w), -1)
        q_w = q * jnp.asarray(w)[None, :, None] / np.sqrt(2.0)
        y = np.asarray(linear_attention(q_w, q, jnp.asarray(x.reshape(2, -1)), jnp.zeros(2, jnp.int32), 1, 2))
    exact = np.sqrt(2) * (1 + np.sinc(4 * 0.391))
    np.testing.assert_allclose(y, exact, atol=1e-5)
    assert abs(exact - 1.13279) < 1e-3  # the notebook quotes the distance rounded to 0.391 Å


def _rotated_form(q, k, v, pos, u, w, omega, seg, mask):
    """ERoPE-rotate q, k on the grid and take the N×N pairwise sum (test-only reference)."""
    theta = np.einsum("nx,mx->nm", pos, u)[:, :, None] * omega  # (N, M, K)
    def rot(x):  # x: (N, PD, F) -> (N, M, PD·F)
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = np.cos(theta)[:, :, None], np.sin(theta)[:, :, None]
        out = np.stack([a[:, None] * c - b[:, None] * s, b[:, None] * c + a[:, None] * s], axis=-1)
        return out.reshape(len(x), len(u), -1)
    qr, kr = rot(q) * w[None, :, None], rot(k)
    return _pairwise(qr, kr, v, seg, mask)


@pytest.mark.parametrize("num, drop_last", [(50, False), (86, False), (50, True)])
def test_pair_kernel_attention_equals_rotated_form(num, drop_last):
    """The pair-kernel evaluation is the same Lebedev sum as rotating q and k explicitly."""
    rng = np.random.default_rng(4)
    g, s, pd, f, dv = 2, 6, 4, 8, 3
    n = g * s
    q, k, v = rng.normal(size=(n, pd, f)), rng.normal(size=(n, pd, f)), rng.normal(size=(n, dv))
    pos = rng.normal(size=(n, 3)) * 4.0
    seg = np.repeat(np.arange(g), s)
    mask = rng.random(n) > 0.25
    u, w = lebedev_grid(num)
    if drop_last:  # no inversion symmetry: the sine part of the kernel must be kept
        u, w = u[:-1], w[:-1]
    omega = erope.frequencies(f, np.pi, 12.0)
    want = _rotated_form(q, k, v, pos, u, w, omega, seg, mask)
    with jax.enable_x64(True):
        got = pair_kernel_attention(jnp.asarray(q), jnp.asarray(k * mask[:, None, None]), jnp.asarray(v * mask[:, None]),
                                    jnp.asarray(pos), u, w, omega, g, s)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)


def test_fold_antipodal_keeps_the_cosine_sum():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(20, 3)) * 3.0
    for num in GRID_SIZES:
        u, w = lebedev_grid(num)
        folded = fold_antipodal(u, w)
        assert folded is not None and len(folded[0]) == num // 2
        np.testing.assert_allclose(np.cos(a @ folded[0].T) @ folded[1], np.cos(a @ u.T) @ w, atol=1e-13)
    u, w = lebedev_grid(50)
    assert fold_antipodal(u[:-1], w[:-1]) is None  # a grid without inversion symmetry is not folded


def test_chunked_message_aggregation_equals_one_pass_with_gradients():
    """Edge chunks (lax.scan + remat, used for long edge lists) give the same messages and
    the same gradients as one pass over all edges (float64)."""
    from efa_calc.nn.tensor import aggregate_messages

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        n, e, f, k = 7, 40, 4, 5
        x = jnp.asarray(rng.normal(size=(n, 2, 9, f)))
        radial = jnp.asarray(rng.normal(size=(e, k)))
        disp = rng.normal(size=(e, 3))
        angular = jnp.asarray(e3x.so3.spherical_harmonics(disp / np.linalg.norm(disp, axis=1, keepdims=True), 2))
        dst, src = (jnp.asarray(rng.integers(0, n, e)) for _ in range(2))
        gate = jnp.asarray(rng.uniform(size=e))
        fw = jnp.asarray(rng.normal(size=(3, k, f)))
        kernel = jnp.asarray(rng.normal(size=(1, 3, 2, 3, 2, 3, f)))

        def total(x, radial, angular, chunk):
            out = aggregate_messages(x, radial, angular, dst, src, gate, n, fw, kernel, 2, 2, chunk=chunk)
            return jnp.sum(jnp.sin(out)), out

        (v1, o1), g1 = jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True)(x, radial, angular, 1000)
        (v2, o2), g2 = jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True)(x, radial, angular, 7)
        assert float(jnp.max(jnp.abs(o1))) > 1e-3  # a non-trivial sum
        np.testing.assert_allclose(o2, o1, rtol=1e-12, atol=1e-12)
        for a, b in zip(g2, g1):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)

        # Every input's gradient (gate and weights too), with and without a gate, and the
        # second order that training uses (a loss on forces, differentiated by the weights).
        def loss(fw, kernel, gate, radial, chunk):
            def energy(radial):
                return jnp.sum(jnp.sin(aggregate_messages(x, radial, angular, dst, src, gate, n, fw, kernel, 2, 2,
                                                          chunk=chunk)))
            return energy(radial) + jnp.sum(jax.grad(energy)(radial) ** 2)

        for g in (gate, None):
            h1 = jax.grad(loss, argnums=(0, 1, 2, 3) if g is not None else (0, 1, 3))(fw, kernel, g, radial, 1000)
            h2 = jax.grad(loss, argnums=(0, 1, 2, 3) if g is not None else (0, 1, 3))(fw, kernel, g, radial, 7)
            for a, b in zip(h2, h1):
                assert float(jnp.max(jnp.abs(b))) > 1e-6
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)
