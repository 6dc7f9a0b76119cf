"""Long-range blocks (EFA, its exact kernel, all-to-all attention) and the MARA gate:
invariances, masking, exact forces, the exact-kernel yardstick, registry and bad input.

Models here are freshly initialised (non-zero readout), evaluated in float64."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from efa_calc import EFACalculator
from efa_calc.graphs.padding import pad_graphs
from efa_calc.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from efa_calc.nn.config import ModelConfig
from efa_calc.errors import CheckpointError
from efa_calc.models import resolve_model
from efa_calc.graphs.neighbors import neighbor_pairs
from efa_calc.nn.energy_model import energy_and_forces, init_params
from efa_calc.nn.long_range import BLOCKS
from efa_calc.nn.long_range.efa import EFAConfig, EuclideanFastAttention

EFA = {"kind": "efa", "iterations": [0, 1], "lebedev_num": 50, "max_frequency": math.pi, "max_length": 12.0,
       "max_degree": 1, "qk_features": 8, "v_features": 8}
A2A = {"kind": "all_to_all", "iterations": [0, 1], "max_degree": 1, "num_heads": 2, "qk_features": 8, "v_features": 8}
VARIANTS = {
    "efa": dict(long_range=EFA),
    "efa_exact": dict(long_range={**EFA, "kernel": "exact"}),
    "all_to_all": dict(long_range=A2A),
    "local_mara": dict(mara_gate=True),
    "all_to_all_mara": dict(long_range=A2A, mara_gate={"num_theta": 3, "num_phi": 6}),
}


def _model(variant: str, seed: int = 0) -> Checkpoint:
    cfg = ModelConfig.from_dict({"num_features": 8, "num_iterations": 2, "cutoff": 3.5, "mp_max_degree": 2,
                                 "output_is_zero_at_init": False, **VARIANTS[variant]})
    z, pos = _molecule(6)
    pairs = neighbor_pairs(pos, cfg.cutoff)
    batch = pad_graphs([z], [pos], [pairs], 8, 64, dtype=np.float32)
    params = init_params(cfg, jax.random.PRNGKey(seed), batch)
    params = jax.tree_util.tree_map(np.asarray, params)
    # A non-zero element bias spread makes energies depend on the element (and padding visible).
    return Checkpoint(cfg, params, ["H", "C", "O"], name=f"test-{variant}")


def _molecule(n: int, seed: int = 0, box: float = 2.2):
    rng = np.random.default_rng(seed)
    while True:
        pos = rng.uniform(-box, box, (n, 3))
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        if np.all(d[np.triu_indices(n, 1)] > 0.95):
            return rng.choice([1, 6, 8], size=n), pos


def _frames():
    return [_molecule(6, 1), _molecule(9, 2, 2.6), _molecule(4, 3)]


def _eval(calc, frames):
    res = calc.evaluate_batch([Atoms(z, p) for z, p in frames])
    return np.array([r["energy"] for r in res]), [r["forces"] for r in res]


# EFA's quadrature is covered by tests/test_invariance.py; the combined variant is slow.
_SLOW = pytest.mark.slow


@pytest.fixture(scope="module", params=[pytest.param("efa", marks=_SLOW), "efa_exact", "all_to_all", "local_mara",
                                        pytest.param("all_to_all_mara", marks=_SLOW)])
def variant(request):
    return request.param, _model(request.param)


def test_translation_permutation_exact_rotation_bounded(variant):
    """Translation and permutation: exact for every block.  Rotation: exact for EFA's
    exact kernel and all-to-all (float64 round-off); EFA's 50-point quadrature to 1e-5 eV
    (pairs within max_length); the MARA gate's world-frame grid to a measured bound."""
    name, ckpt = variant
    calc = EFACalculator(ckpt, dtype="float64")
    frames = _frames()
    e0, f0 = _eval(calc, frames)
    rng = np.random.default_rng(7)
    e_t, f_t = _eval(calc, [(z, p + np.array([4.0, -2.5, 9.0])) for z, p in frames])
    perms = [rng.permutation(len(z)) for z, _ in frames]
    e_p, f_p = _eval(calc, [(z[q], p[q]) for (z, p), q in zip(frames, perms)])
    mats = [Rotation.random(random_state=rng).as_matrix() for _ in frames]
    e_r, f_r = _eval(calc, [(z, p @ m.T) for (z, p), m in zip(frames, mats)])
    assert np.abs(e_t - e0).max() < 1e-9 and np.abs(e_p - e0).max() < 1e-9
    for k in range(len(frames)):
        np.testing.assert_allclose(f_t[k], f0[k], atol=1e-8)
        np.testing.assert_allclose(f_p[k], f0[k][perms[k]], atol=1e-8)
    scale = np.abs(e0).max()
    rot_err = np.abs(e_r - e0).max()
    if "mara" in name:
        # Measured for these random models: ~1e-4–1e-3 relative; a broken gate is O(1).
        assert 1e-12 < rot_err < 1e-2 * scale, rot_err
    else:
        tol = 1e-5 if name == "efa" else 1e-9
        assert rot_err < tol, rot_err
        for k in range(len(frames)):
            np.testing.assert_allclose(f_r[k], f0[k] @ mats[k].T, atol=100 * tol)


@pytest.mark.parametrize("name", [pytest.param("efa_exact", marks=_SLOW), "all_to_all", "local_mara"])
def test_masking_structures_and_padding(name):
    """Structures in one batch do not see each other, padding atoms change nothing, and the
    slot and arbitrary-segment layouts agree.  (EFA's quadrature: tests/test_batching.py.)"""
    ckpt = _model(name)
    cfg = ckpt.config
    frames = _frames()
    pairs = [neighbor_pairs(p, cfg.cutoff) for _, p in frames]
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), ckpt.params)
        fn = jax.jit(lambda p, b: energy_and_forces(p, cfg, b))

        def run(items, slots, num_graphs=None, segment_layout=False):
            b = pad_graphs([z for z, _ in items], [p for _, p in items], [pairs[i] for i in idx(items)],
                           slots, 256, num_graphs, dtype=np.float64)
            e, f, _ = fn(params, b.replace(nodes_per_graph=None if segment_layout else slots))
            return np.asarray(e), np.asarray(f).reshape(-1, slots, 3)

        def idx(items):
            return [next(i for i, fr in enumerate(frames) if fr is it) for it in items]

        e_all, f_all = run(frames, 12, 4)  # 3 structures + a padding graph
        e_all_seg, f_all_seg = run(frames, 12, 4, segment_layout=True)
        for k, fr in enumerate(frames):
            e_one, f_one = run([fr], 16)  # alone, with more padding slots
            assert abs(e_all[k] - e_one[0]) < 1e-9
            n = len(fr[0])
            np.testing.assert_allclose(f_all[k, :n], f_one[0, :n], atol=1e-9)
            assert np.all(f_all[k, n:] == 0)
        assert e_all[3] == 0
        np.testing.assert_allclose(e_all_seg, e_all, atol=1e-9)
        np.testing.assert_allclose(f_all_seg, f_all, atol=1e-9)


def test_forces_are_negative_gradient(variant):
    name, ckpt = variant
    calc = EFACalculator(ckpt, dtype="float64")
    z, pos = _frames()[1]
    atoms = Atoms(z, pos)
    atoms.calc = calc
    f = atoms.get_forces()
    h = 1e-5
    for i, c in [(0, 0), (3, 1), (8, 2)]:
        ap, am = atoms.copy(), atoms.copy()
        ap.positions[i, c] += h
        am.positions[i, c] -= h
        ap.calc = am.calc = calc
        fd = -(ap.get_potential_energy() - am.get_potential_energy()) / (2 * h)
        assert abs(fd - f[i, c]) < 1e-6 * max(1.0, abs(f[i, c])), (i, c, fd, f[i, c])


# ----------------------------------------------------------------- EFA's exact kernel


def _efa_block_outputs(lr: EFAConfig, block_params: dict, positions: np.ndarray, in_shape, seed=0):
    """Outputs of one EFA block with trained weights, Lebedev and exact kernel (float64)."""
    rng = np.random.default_rng(seed)
    n = positions.shape[0]
    x = rng.normal(size=(n, *in_shape))
    pos = positions - positions.mean(0)
    out = {}
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), {"params": block_params})
        for kernel in ("lebedev", "exact"):
            mod = EuclideanFastAttention(dataclasses.replace(lr, kernel=kernel))
            y = mod.apply(p, jnp.asarray(x), jnp.asarray(pos), jnp.zeros(n, jnp.int32), jnp.ones(n, bool), 1, n)
            out[kernel] = np.asarray(y)
    return out


def _efa_checkpoints(reference_checkpoint=None):
    cks = [load_checkpoint(resolve_model(m)) for m in ("cumulene-efa", "sn2-efa")]
    if reference_checkpoint is not None:
        cks += [reference_checkpoint(m) for m in ("cumulene_efa", "sn2_efa", "cluster16_efa")]
    return cks


def _points_on_sphere(n: int, radius: float, seed: int) -> np.ndarray:
    """n points with largest pair distance exactly 2·radius (two antipodes + random inside)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    inner = rng.uniform(-1, 1, (n - 2, 3)) * radius / np.sqrt(3)
    return np.vstack([radius * u, -radius * u, inner])


def _check_efa_exact(ckpt):
    lr = ckpt.config.long_range

    def irreps(t):  # e3x Dense keeps one kernel per input irrep: '0+', '1-', ...
        return ckpt.params["params"][f"long_range_{t}"]["query"]

    t = max(lr.iterations, key=lambda t: len(irreps(t)))  # the block with the most degrees
    block_params = ckpt.params["params"][f"long_range_{t}"]
    keys = list(irreps(t))
    max_l = max(int(k[:-1]) for k in keys)
    pseudo = any((k[-1] == "-") != (int(k[:-1]) % 2 == 1) for k in keys)
    in_shape = (2 if pseudo else 1, (max_l + 1) ** 2, irreps(t)[keys[0]]["kernel"].shape[0])
    errors = {}
    for factor in (0.5, 1.0, 2.0, 4.0):
        pos = _points_on_sphere(12, 0.5 * factor * lr.max_length, seed=3)
        y = _efa_block_outputs(lr, block_params, pos, in_shape)
        errors[factor] = np.abs(y["lebedev"] - y["exact"]).max() / np.abs(y["exact"]).max()
    # Within max_length the 50-point rule integrates j₀ to ~1e-5: the two kernels agree.
    assert errors[0.5] < 1e-5 and errors[1.0] < 1e-5, errors
    # Beyond it the quadrature error grows quickly (the exact kernel is the yardstick).
    assert errors[2.0] > 10 * errors[1.0] and errors[4.0] > errors[1.0], errors
    return errors


def test_efa_exact_matches_quadrature_within_max_length_bundled():
    for ckpt in _efa_checkpoints():
        _check_efa_exact(ckpt)


def test_efa_exact_matches_quadrature_within_max_length_reference(reference_checkpoint):
    for ckpt in _efa_checkpoints(reference_checkpoint)[2:]:
        _check_efa_exact(ckpt)


def test_efa_exact_calculator_option():
    """``efa_exact=True`` on a bundled model: same energy to ~1e-9 eV for a molecule well
    inside max_length; no max_length limit; a local model refuses the option."""
    atoms = Atoms("C6H4", positions=_cumulene_like())
    e_q = EFACalculator("cumulene-efa", dtype="float64").get_potential_energy(atoms.copy())
    calc = EFACalculator("cumulene-efa", dtype="float64", efa_exact=True)
    assert calc.max_length == math.inf
    assert abs(calc.get_potential_energy(atoms.copy()) - e_q) < 1e-8
    with pytest.raises(ValueError, match="apply to EFA models"):
        EFACalculator("cumulene-local", efa_exact=True)


def _cumulene_like():
    c = [[1.28 * i, 0.0, 0.0] for i in range(6)]
    h = [[-0.55, 0.93, 0.0], [-0.55, -0.93, 0.0], [7.0, 0.0, 0.93], [7.0, 0.0, -0.93]]
    return np.array(c + h)


# ------------------------------------------------------------------- registry, bad input


def test_registry_and_config_roundtrip():
    assert {"efa", "all_to_all"} <= set(BLOCKS)
    for name in VARIANTS:
        cfg = _model(name).config
        back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg
    with pytest.raises(ValueError, match=r"unknown long-range block kind 'transformer'.*all_to_all.*efa"):
        ModelConfig.from_dict({"num_features": 8, "num_iterations": 2, "long_range": {"kind": "transformer", "iterations": [0]}})
    with pytest.raises(ValueError, match=r"'all_to_all' has no setting\(s\) \['lebedev_num'\]"):
        ModelConfig.from_dict({"num_features": 8, "num_iterations": 2, "long_range": {**A2A, "lebedev_num": 50}})
    with pytest.raises(ValueError, match="mara_gate"):
        ModelConfig.from_dict({"num_features": 8, "num_iterations": 2, "mara_gate": "yes"})


def test_checkpoint_with_mismatched_block_fails_at_load(tmp_path):
    ckpt = _model("all_to_all")
    d = save_checkpoint(ckpt, tmp_path / "a2a")
    assert load_checkpoint(d).config == ckpt.config
    meta = json.loads((d / "config.json").read_text())
    meta["model"]["long_range"] = {**EFA}  # claims EFA, holds all-to-all weights
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"long-range block 'efa' \(iterations \[0, 1\]\) does not match.*distance_weights"):
        load_checkpoint(d)
    meta["model"]["long_range"] = {**A2A, "kind": "mystery"}
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown long-range block kind 'mystery'"):
        load_checkpoint(d)
    d2 = tmp_path / "gate"
    shutil.copytree(d, d2)
    meta["model"]["long_range"] = A2A
    meta["model"]["mara_gate"] = {"num_theta": 4, "num_phi": 8}
    (d2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"mara_gate=True does not match.*mara_gate_0"):
        load_checkpoint(d2)


@pytest.mark.parametrize("name", ["all_to_all", pytest.param("local_mara", marks=_SLOW)])
def test_protocol_runs_every_block(tmp_path, name):
    """The protocols take any block: a short float64 NVE of C9H4 conserves energy."""
    from md_protocols import protocols
    from md_protocols.common import execute

    ckpt = _model(name)
    ckpt.config = ckpt.config.replace(cutoff=4.0)  # same parameters; C9H4's bonded neighbours
    d = save_checkpoint(ckpt, tmp_path / name)
    s = execute(protocols()["cumulene-nve"], tmp_path / "nve", model=str(d), steps=40, dtype="float64",
                timestep_fs=0.25, progress=False)
    assert s["status"] == "completed"
    assert s["results"]["max_energy_deviation_meV_per_atom"] < 1.0
