"""Batches of several molecules: segment ids, graph masks, padding that contributes nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from efa_calc.graphs.padding import edge_bucket, node_bucket, pad_graphs
from efa_calc.graphs.neighbors import VerletList, neighbor_pairs
from efa_calc.backends.single import compiled_energy_and_forces


def _params(ckpt):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), ckpt.params)


def test_batch_equals_single_molecules_and_padding_is_inert(reference_checkpoint, reference_predictions):
    ckpt = reference_checkpoint("sn2_efa")
    z = reference_predictions["sn2_efa/atomic_numbers"]
    pos = reference_predictions["sn2_efa/positions"]
    mols = [(z[k], pos[k]) for k in (2, 20, 33)]
    pairs = [neighbor_pairs(p, ckpt.config.cutoff) for _, p in mols]
    fn = compiled_energy_and_forces(ckpt.config)
    with jax.enable_x64(True):
        params = _params(ckpt)
        singles = []
        for (zz, pp), pr in zip(mols, pairs):
            b = pad_graphs([zz], [pp], [pr], 8, 64)  # one shape for all three: one compile
            e, f, _ = fn(params, jax.tree_util.tree_map(jnp.asarray, b))
            singles.append((float(e[0]), np.asarray(f)[:6]))
        # 3 molecules + 1 padding graph, 8 slots each, 40 spare pair slots
        b = pad_graphs([m[0] for m in mols], [m[1] for m in mols], pairs, 8, sum(len(p[0]) for p in pairs) + 40, 4)
        jb = jax.tree_util.tree_map(jnp.asarray, b)
        for npg in (8, None):  # slot layout and general segment layout
            e, f, e_i = fn(params, jb.replace(nodes_per_graph=npg))
            e, f, e_i = np.asarray(e), np.asarray(f), np.asarray(e_i)
            for k, (es, fs) in enumerate(singles):
                assert abs(e[k] - es) < 1e-9
                np.testing.assert_allclose(f[8 * k : 8 * k + 6], fs, atol=1e-9)
            assert e[3] == 0.0  # padding graph
            pad = ~b.node_mask
            assert np.all(f[pad] == 0.0) and np.all(e_i[pad] == 0.0)


def test_buckets_are_monotone_and_cover():
    for n in range(1, 3000, 7):
        assert node_bucket(n) >= n and node_bucket(n) >= node_bucket(max(n - 7, 1))
    for e in range(1, 200000, 997):
        assert edge_bucket(e) >= e and edge_bucket(e) % 16 == 0
    assert edge_bucket(100, headroom=1.25) == 128


def test_verlet_list_with_skin_covers_all_pairs():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 12, (150, 3))
    vl = VerletList(cutoff=4.0, skin=0.6)
    for step in range(30):
        pos = pos + rng.normal(scale=0.03, size=pos.shape)
        dst, src, shifts = vl.pairs(pos)
        assert shifts is None  # a molecule has no images
        have = set(zip(dst.tolist(), src.tolist()))
        exact = set(zip(*[a.tolist() for a in neighbor_pairs(pos, 4.0)]))
        assert exact <= have
    assert vl.num_builds < 30  # the skin saved rebuilds
