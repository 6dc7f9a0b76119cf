"""Latency of ``atoms.get_forces()`` after a position change: EFACalculator vs the plain way.

The plain way is how the reference notebooks evaluate a model: build the edge list for
the current positions with numpy (all pairs closer than the cutoff), then call a
``jax.jit`` of ``model.apply`` (energy + forces) on the unpadded arrays.  Shapes follow
the edge count, so the plain way recompiles whenever a pair crosses the cutoff.

Both run side by side in one process on the same geometries, in two scenarios:

* ``md``: consecutive frames of a Langevin MD (500 K, 0.5 fs) of the cumulene (13 atoms)
  and SN2 (6 atoms) EFA checkpoints — the calls an MD driver makes;
* ``scan``: the 401 frames of the F⁻ + CH3I reaction scan (``sn2_F_I.npz``), where the ion
  enters and the leaving group leaves the 5 Å cutoff, so the pair count changes — the calls
  a reaction-path scan, NEB or reactive MD makes.

    python benchmarks/calculator_latency.py [--calls 200] [--shared ../shared]

Prints median and mean wall time per call after 3 warm-up calls, the ratios plain /
efa-calc, and the XLA compilations each method triggered in the timed calls (the plain
way recompiles whenever the pair count changes; efa-calc's buckets do not).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.compile_counter import CompileCounter  # noqa: E402
from efa_calc.nn.energy_model import Batch, energy_and_forces  # noqa: E402
from efa_calc.reference import checkpoint_from_reference  # noqa: E402


def plain_way(ckpt):
    """jit(apply) on a freshly built, unpadded all-pairs edge list per call."""
    cfg = ckpt.config
    params = jax.tree_util.tree_map(jnp.asarray, ckpt.params)

    @jax.jit
    def apply(params, z, r, dst, src):
        n, e = r.shape[0], dst.shape[0]
        b = Batch(z, r, dst, src, jnp.ones(e, bool), jnp.zeros(n, jnp.int32), jnp.ones(n, bool), jnp.ones(1, bool))
        energy, forces, _ = energy_and_forces(params, cfg, b)
        return energy, forces

    def call(z, r):
        d = np.linalg.norm(r[:, None] - r[None], axis=-1)
        dst, src = np.nonzero((d < cfg.cutoff) & ~np.eye(len(r), dtype=bool))
        e, f = apply(params, jnp.asarray(z, jnp.int32), jnp.asarray(r, jnp.float32),
                     jnp.asarray(dst, jnp.int32), jnp.asarray(src, jnp.int32))
        return float(e[0]), np.asarray(f)

    return call


def md_frames(atoms, calc, calls, seed):
    """Positions along a 500 K Langevin run (0.5 fs steps) driven by ``calc``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    a = atoms.copy()
    a.calc = calc
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(a, temperature_K=500, rng=rng)
    dyn = Langevin(a, 0.5 * units.fs, temperature_K=500, friction=0.01 / units.fs, rng=rng)
    out = []
    for _ in range(calls):
        dyn.run(1)
        out.append(a.positions.copy())
    return out


def time_calls(fn, frames, warmup=3):
    """Per-call wall times after ``warmup`` calls, and the compilations in those calls."""
    for r in frames[:warmup]:
        fn(r)
    times = []
    with CompileCounter() as cc:
        for r in frames[warmup:]:
            t = time.perf_counter()
            fn(r)
            times.append(time.perf_counter() - t)
    return times, cc.count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = ap.parse_args(argv)
    ref = Path(args.shared) / "reference"
    meta = json.loads((ref / "reference_predictions.json").read_text())
    pred = np.load(ref / "reference_predictions.npz")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.calls} MD frames per method "
          "(3 warm-up calls not timed), float32")
    print(f"{'model, scenario':19s} {'atoms':>5s} {'efa-calc median':>16s} {'plain median':>13s} {'ratio':>6s} "
          f"{'efa-calc mean':>14s} {'plain mean':>11s} {'mean ratio':>10s} {'compiles efa/plain':>19s}")
    with np.load(ref / "datasets" / "sn2_F_I.npz") as d:
        scan_z, scan_frames = d["atomic_numbers"][0].astype(int), list(d["positions"])
    for name, scenario in (("cumulene_efa", "md"), ("sn2_efa", "md"), ("sn2_efa", "scan")):
        m = meta[name]
        ckpt = checkpoint_from_reference(ref / m["checkpoint"], m["hyperparameters"])
        if scenario == "md":
            k = 10 if name.startswith("cumulene") else 25  # SN2: the ion–molecule complex
            z = pred[f"{name}/atomic_numbers"][k]
            frames = md_frames(Atoms(z, pred[f"{name}/positions"][k]), EFACalculator(ckpt), args.calls, 0)
        else:
            z, frames = scan_z, scan_frames
        atoms = Atoms(z, frames[0])
        atoms.calc = EFACalculator(ckpt)

        def ours(r):
            atoms.positions = r
            return atoms.get_forces()

        plain = plain_way(ckpt)
        t_ours, c_ours = time_calls(ours, frames)
        t_plain, c_plain = time_calls(functools.partial(plain, z), frames)
        med_o, med_p = statistics.median(t_ours), statistics.median(t_plain)
        print(f"{name + ' ' + scenario:19s} {len(z):5d} {med_o * 1e3:13.2f} ms {med_p * 1e3:10.2f} ms {med_p / med_o:6.1f} "
              f"{statistics.mean(t_ours) * 1e3:11.2f} ms {statistics.mean(t_plain) * 1e3:8.2f} ms "
              f"{statistics.mean(t_plain) / statistics.mean(t_ours):10.1f} {c_ours:>9d}/{c_plain:<9d}")


if __name__ == "__main__":
    main()
