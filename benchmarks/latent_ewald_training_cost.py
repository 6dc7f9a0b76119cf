"""Wall time of latent_ewald's part of one training-loss gradient, for choosing the
settings of ``models/configs/nacl-latent-ewald.toml`` (issue 25).

    python benchmarks/latent_ewald_training_cost.py      # ~1 min; run on a quiet machine

The training loss contains forces and stress, so its parameter gradient differentiates the
Coulomb energy twice.  Here: the latent Coulomb energy of random charges on the training
frame with the most ions (``models/data/nacl/nacl_tf.extxyz``), loss |F|² + |∂E/∂cell|²,
gradient with respect to the charges, float32, jitted, mean of 3 warm calls, with the static
P3M mesh that the trainer uses (the per-axis maximum over every training cell).  Measured
on the 2-core CPU, nothing else running: σ = 1 Å, 4 charges: 128³ mesh, 1.32 s; 1 charge
0.52 s; σ = 2 Å, 1 charge: 64³, 0.065 s; 4 charges 0.17 s.  jax-pme Ewald at σ = 1 Å,
accuracy 1e-6 ran out of 24 GiB in training (4 cells of up to 256 ions, both iterations).
Prints one line per setting (seconds per gradient).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from efa_calc.data import read_dataset  # noqa: E402
from efa_calc.nn.long_range.latent_ewald import LatentEwaldConfig, latent_coulomb_energies  # noqa: E402

SETTINGS = [(1.0, 4), (1.0, 1), (2.0, 1), (2.0, 4)]  # (σ in Å, number of latent charges)


def seconds_per_gradient(ds, smearing: float, charges: int, repeats: int = 3) -> tuple[tuple, float]:
    cfg = LatentEwaldConfig(iterations=(1,), num_charges=charges, smearing=smearing, method="p3m")
    grid = cfg.reciprocal_grid(np.stack(ds.cells))
    big = int(np.argmax([len(n) for n in ds.numbers]))
    pos = jnp.asarray(ds.positions[big], jnp.float32)
    cell = jnp.asarray(ds.cells[big], jnp.float32)
    n = len(pos)
    q0 = jnp.asarray(np.random.default_rng(0).normal(size=(n, charges)), jnp.float32)
    seg, mask = jnp.zeros(n, jnp.int32), jnp.ones(n, bool)

    def energy(p, q, c):
        return latent_coulomb_energies(cfg, q, p, seg, mask, 1, None, c[None], grid).sum()

    def loss(q, p, c):
        return (jax.grad(energy)(p, q, c) ** 2).sum() + (jax.grad(energy, argnums=2)(p, q, c) ** 2).sum()

    grad = jax.jit(jax.grad(loss))
    grad(q0, pos, cell).block_until_ready()
    t = time.perf_counter()
    for _ in range(repeats):
        grad(q0, pos, cell).block_until_ready()
    return grid, (time.perf_counter() - t) / repeats


def main() -> None:
    ds = read_dataset(ROOT / "models" / "data" / "nacl" / "nacl_tf.extxyz")
    print(f"largest training frame: {max(len(n) for n in ds.numbers)} ions")
    for smearing, charges in SETTINGS:
        grid, sec = seconds_per_gradient(ds, smearing, charges)
        print(f"sigma {smearing} A, {charges} charge(s), P3M mesh {grid}: {sec:.3f} s per loss gradient")


if __name__ == "__main__":
    main()
