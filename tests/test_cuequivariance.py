"""message_passing="cuequivariance" (efa_calc.nn.tensor_cueq) computes what the native kernel
and e3x compute: float64 equality on e3x's own MessagePass, on every bundled model and on the
reference checkpoints (energies and forces; and those reproduce the reference code's own
predictions), a training step's gradients, the chunked path, and the bad-input errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import e3x
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

from efa_calc import EFACalculator, list_models
from efa_calc.nn import tensor
from efa_calc.nn.tensor import EdgeBasis, MessagePass, aggregate_messages, resolve_message_passing
from efa_calc.structures import cumulene, sn2_complex

HAVE_CUEQ = importlib.util.find_spec("cuequivariance_jax") is not None
needs_cueq = pytest.mark.skipif(not HAVE_CUEQ, reason="cuequivariance-jax not installed "
                                                      "(pip install 'efa-calc[cuequivariance]')")
REL = 1e-12  # acceptance bound, float64, relative


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def _edges(rng, n, e, k, l1max):
    disp = rng.normal(size=(e, 3))
    u = disp / np.linalg.norm(disp, axis=1, keepdims=True)
    angular = jnp.asarray(e3x.so3.spherical_harmonics(u, l1max, cartesian_order=True))
    radial = jnp.asarray(rng.normal(size=(e, k)))
    dst, src = (jnp.asarray(rng.integers(0, n, e), jnp.int32) for _ in range(2))
    return radial, angular, dst, src


# ------------------------------------------------------------------ the kernel
@needs_cueq
@pytest.mark.parametrize("p2n,l2max,max_degree,pseudo", [(2, 2, None, True), (1, 1, 2, True), (2, 2, 0, False),
                                                         (1, 0, 1, True)])
def test_equals_e3x_message_pass(p2n, l2max, max_degree, pseudo):
    """Both kernels against e3x.nn.MessagePass itself (dense basis, e3x's parameters)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        n, e, f, k = 6, 40, 4, 5
        x = jnp.asarray(rng.normal(size=(n, p2n, (l2max + 1) ** 2, f)))
        radial, angular, dst, src = _edges(rng, n, e, k, 2)
        basis = angular[:, None, :, None] * radial[:, None, None, :]
        ref_mod = e3x.nn.MessagePass(max_degree=max_degree, include_pseudotensors=pseudo)
        params = ref_mod.init(jax.random.PRNGKey(0), x, basis, dst_idx=dst, src_idx=src, num_segments=n)
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
        ref = ref_mod.apply(params, x, basis, dst_idx=dst, src_idx=src, num_segments=n)
        assert float(jnp.max(jnp.abs(ref))) > 1e-2
        for mp in ("native", "cuequivariance"):
            out = MessagePass(max_degree=max_degree, include_pseudotensors=pseudo, message_passing=mp).apply(
                params, x, EdgeBasis(radial, angular), dst, src, n)
            assert out.shape == ref.shape
            assert _rel(out, ref) < REL, mp


@needs_cueq
# one pass (gather/scatter inside the polynomial) at degree 2; 40 edges in chunks of 7 at
# degree 1 (fewer paths: the second derivative of the chunked scan compiles for minutes at 2)
# (the one-pass case is slow on 2 CPU cores: it runs with -m slow; the chunked one always)
@pytest.mark.parametrize("chunk,deg", [pytest.param(1000, 2, marks=pytest.mark.slow), (7, 1)])
def test_aggregation_and_every_gradient_equal_native(chunk, deg):
    """Messages, first derivatives and the second order training uses (a loss on the
    gradient, differentiated by the weights), with and without the edge gate."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        n, e, f, k, d = 7, 40, 4, 5, deg + 1
        x = jnp.asarray(rng.normal(size=(n, 2, d * d, f)))
        radial, angular, dst, src = _edges(rng, n, e, k, deg)
        gate = jnp.asarray(rng.uniform(size=e))
        fw = jnp.asarray(rng.normal(size=(d, k, f)))
        kernel = jnp.asarray(rng.normal(size=(1, d, 2, d, 2, d, f)))

        def agg(impl, x, fw, kernel, gate, radial, angular):
            return aggregate_messages(x, radial, angular, dst, src, gate, n, fw, kernel, 2, deg, chunk=chunk,
                                      impl=impl)

        def energy(impl, *args):
            return jnp.sum(jnp.sin(agg(impl, *args)))

        def loss(impl, *args):  # a loss on the geometry gradient ("forces")
            g_r, g_a = jax.grad(energy, argnums=(5, 6))(impl, *args)
            return energy(impl, *args) + jnp.sum(g_r**2) + jnp.sum(g_a**2)

        for g in (gate, None):
            args = (x, fw, kernel, g, radial, angular)
            argnums = (1, 2, 3, 4, 5, 6) if g is not None else (1, 2, 3, 5, 6)
            # jit: eager dispatch of the many small per-path operations would take minutes
            out, first, second = ([jax.jit(f, static_argnums=0)(i, *args) for i in ("native", "cuequivariance")]
                                  for f in (agg, jax.grad(energy, argnums), jax.grad(loss, argnums)))
            assert _rel(out[1], out[0]) < REL
            for ref, got in zip(first[0] + second[0], first[1] + second[1]):
                assert float(jnp.max(jnp.abs(ref))) > 1e-6
                assert _rel(got, ref) < 1e-11


@needs_cueq
def test_cuequivariance_path_is_traced_and_fits_the_fused_kernel():
    """The option reaches the polynomial (not silently the native code), and the polynomial
    meets uniform_1d's requirements (checked here as cuequivariance checks them before
    calling the CUDA kernel): one mode after flattening, uniform segments per operand."""
    from efa_calc.nn.tensor_cueq import message_polynomial

    rng = np.random.default_rng(0)
    radial, angular, dst, src = _edges(rng, 5, 12, 3, 2)
    x = jnp.ones((5, 2, 9, 4))
    fw, kernel = jnp.ones((3, 3, 4)), jnp.ones((1, 3, 2, 3, 2, 3, 4))
    jaxprs = {impl: str(jax.make_jaxpr(lambda x: aggregate_messages(
        x, radial, angular, dst, src, None, 5, fw, kernel, 2, 2, impl=impl))(x)) for impl in tensor.MESSAGE_PASSING}
    assert "segmented_polynomial" in jaxprs["cuequivariance"] and "segmented_polynomial" not in jaxprs["native"]
    for shape in [(2, 2, 2, 2, 2), (2, 2, 2, 1, 0), (2, 1, 0, 2, 2)]:
        poly = message_polynomial(*shape, features=32).flatten_coefficient_modes().squeeze_modes()
        poly = poly.canonicalize_subscripts()
        for _, stp in poly.operations:
            assert stp.subscripts.modes() == ["u"] and stp.all_same_segment_shape(), (shape, stp)


# ------------------------------------------------------------------ whole models
def _structures(name: str) -> list[Atoms]:
    rng = np.random.default_rng(3)
    if name.startswith("argon"):  # the periodic validation model: small fcc and strained cells
        from ase.build import bulk

        frames = [bulk("Ar", "fcc", a=5.35, cubic=True).repeat(2), bulk("Ar", "fcc", a=5.45).repeat((3, 3, 2))]
    elif name.startswith("nacl"):  # periodic NaCl models: rock-salt cells
        from ase.build import bulk

        frames = [bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2), bulk("NaCl", "rocksalt", a=5.7).repeat(3)]
    elif name.startswith("cumulene"):
        frames = [cumulene(9, 30.0), cumulene(5, 90.0)]
    else:
        frames = [sn2_complex("Cl", "Br", 3.2, 1.95), sn2_complex("F", "Cl", 2.6, 1.8)]
    for a in frames:
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
    return frames


def _predict(ckpt, frames, mp):
    res = EFACalculator(ckpt, dtype="float64", message_passing=mp, guard="off").evaluate_batch(frames)
    return np.array([r["energy"] for r in res]), np.concatenate([r["forces"] for r in res])


@needs_cueq
@pytest.mark.parametrize("name", list_models())
def test_bundled_models_equal_native(name):
    frames = _structures(name)
    e0, f0 = _predict(name, frames, "native")
    e1, f1 = _predict(name, frames, "cuequivariance")
    assert _rel(e1, e0) < REL and _rel(f1, f0) < REL
    assert np.abs(f0).max() > (0.003 if name.startswith("argon") else 0.05)  # non-trivial forces


@needs_cueq
@pytest.mark.parametrize("name", ["cumulene_efa", "cumulene_local", "sn2_efa", "sn2_local_rcut10",
                                  "sn2_local_rcut5", "cluster16_efa", "cluster16_local_T2"])
def test_reference_checkpoints_equal_native_and_the_reference(name, reference_checkpoint, reference_predictions):
    z = reference_predictions[f"{name}/atomic_numbers"]
    pos = reference_predictions[f"{name}/positions"]
    idx = [0, len(z) // 2, len(z) - 1]
    frames = [Atoms(z[k], pos[k]) for k in idx]
    ckpt = reference_checkpoint(name)
    e0, f0 = _predict(ckpt, frames, "native")
    e1, f1 = _predict(ckpt, frames, "cuequivariance")
    assert _rel(e1, e0) < REL and _rel(f1, f0) < REL
    # and the reference code's own numbers (bounds of test_reference_reproduction)
    assert np.abs(e1 - reference_predictions[f"{name}/energy"][idx]).max() < 1e-11
    assert np.abs(f1 - np.concatenate(reference_predictions[f"{name}/forces"][idx])).max() < 1e-11


@needs_cueq
def test_chunked_model_path_equals_native_one_pass():
    """C9H4 with 16-edge chunks (its ~150 pairs then take the chunked scan) through
    cuequivariance equals the native one-pass call."""
    from efa_calc.backends.base import Graph
    from efa_calc.backends.single import Potential
    from efa_calc.checkpoint import load_checkpoint
    from efa_calc.graphs.neighbors import neighbor_pairs
    from efa_calc.models import resolve_model

    ckpt = load_checkpoint(resolve_model("cumulene-efa"))
    graphs = [Graph(a.numbers, a.positions, *neighbor_pairs(a.positions, ckpt.config.cutoff))
              for a in _structures("cumulene-efa")]
    one_pass = Potential(ckpt, "float64", message_passing="native", edge_chunk=0).predict(graphs)
    chunked = Potential(ckpt, "float64", message_passing="cuequivariance", edge_chunk=16).predict(graphs)
    e0, f0 = np.array([p.energy for p in one_pass]), np.concatenate([p.forces for p in one_pass])
    e1, f1 = np.array([p.energy for p in chunked]), np.concatenate([p.forces for p in chunked])
    assert _rel(e1, e0) < REL and _rel(f1, f0) < REL


@needs_cueq
def test_training_step_gradients_equal_native():
    """Gradient of the training loss (energies and forces, so a second derivative) by the
    parameters, float64, on a batch of the synthetic training set (the tiny training model
    without its EFA block, which message_passing does not touch: half the compile time)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import morse_dataset
    from test_training import TINY

    from efa_calc.graphs.neighbors import neighbor_pairs
    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.nn.energy_model import energy_and_forces, init_params

    cfg = TINY.replace(long_range=None, output_is_zero_at_init=False)
    ds = morse_dataset(4, seed=2)
    pairs = [neighbor_pairs(p, cfg.cutoff) for p in ds.positions]
    b = pad_graphs(ds.numbers, ds.positions, pairs, 8, sum(len(p[0]) for p in pairs) + 8, 4)
    with jax.enable_x64(True):
        batch = jax.tree_util.tree_map(jnp.asarray, b)
        params = init_params(cfg, jax.random.PRNGKey(0), batch)
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
        f_target = jnp.asarray(np.random.default_rng(0).normal(size=batch.positions.shape))

        def loss(params, mp):
            e_g, forces, _ = energy_and_forces(params, cfg.for_evaluation(message_passing=mp), batch)
            return jnp.sum(e_g**2) * 1e-6 + jnp.sum((forces - f_target) ** 2)

        g0, g1 = (jax.grad(loss)(params, mp) for mp in ("native", "cuequivariance"))
    mp_leaves = 0
    for path, a in jax.tree_util.tree_leaves_with_path(g0):
        b_ = g1
        for key in path:
            b_ = b_[key.key]
        if "message_pass" in jax.tree_util.keystr(path):
            mp_leaves += 1
            assert float(jnp.max(jnp.abs(a))) > 1e-8
        np.testing.assert_allclose(b_, a, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(a))) + 1e-300)
    assert mp_leaves >= 4


# ------------------------------------------------------------------ settings and bad input
def test_misspelt_message_passing_is_a_clear_error():
    with pytest.raises(ValueError, match=r"message_passing='cueq'.*'native', 'cuequivariance'"):
        EFACalculator("cumulene-local", message_passing="cueq")
    from efa_calc.train.config import TrainingOptions

    with pytest.raises(ValueError, match="message_passing='Native'"):
        TrainingOptions(message_passing="Native")


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(tensor, "_cuequivariance_installed", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'efa-calc\[cuequivariance\]'.*efa-calc\[gpu\]"):
        EFACalculator("cumulene-local", message_passing="cuequivariance")
    # the default never needs it: native on CPUs, and on GPUs too when it is missing
    assert resolve_message_passing(None, "gpu") == "native"
    assert EFACalculator("cumulene-local").potentials[0].config.message_passing == "native"


def test_defaults_per_platform_and_not_saved():
    assert resolve_message_passing(None, "cpu") == "native"
    assert resolve_message_passing("native", "gpu") == "native"
    if HAVE_CUEQ:
        assert resolve_message_passing(None, "gpu") == tensor.GPU_MESSAGE_PASSING
    from efa_calc.checkpoint import load_checkpoint
    from efa_calc.models import resolve_model

    cfg = load_checkpoint(resolve_model("cumulene-local")).config
    if HAVE_CUEQ:
        cfg = cfg.for_evaluation(message_passing="cuequivariance")
        assert cfg.message_passing == "cuequivariance"
    assert "message_passing" not in cfg.to_dict()  # an evaluation setting, not a hyperparameter


@needs_cueq
def test_protocol_setting_reaches_the_calculator_and_jax_engine(tmp_path):
    from efa_calc.checkpoint import load_checkpoint
    from efa_calc.models import resolve_model
    from md_protocols.common import RunContext

    ctx = RunContext("nve", {"model": "cumulene-local", "dtype": "float64", "message_passing": "cuequivariance"},
                     tmp_path)
    calc = ctx.calculator()
    assert calc.potentials[0].config.message_passing == "cuequivariance"
    ctx.settings["message_passing"] = "auto"
    assert ctx.calculator().potentials[0].config.message_passing == "native"  # CPU default
    pytest.importorskip("jax_md", reason="the jax engine needs pip install 'efa-calc[md]'")
    from efa_calc.md_jax import JaxMD

    ckpt = load_checkpoint(resolve_model("cumulene-local"))
    atoms = cumulene(5)
    md = JaxMD(ckpt, atoms.numbers, atoms.get_masses(), message_passing="cuequivariance")
    assert md.config.message_passing == "cuequivariance"
