"""A small synthetic dataset with an analytic energy (Morse pairs + a 1/r tail), for
training tests that must not depend on external data.  Energies in eV, Å, eV/Å."""

from __future__ import annotations

import numpy as np

from efa_calc.data import Dataset

_E0 = {1: -13.6, 6: -1030.0}


def morse_dataset(n_frames: int = 64, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    nums, poss, ens, frcs = [], [], [], []
    for _ in range(n_frames):
        n = int(rng.integers(3, 7))
        z = rng.choice([1, 6], size=n)
        while True:
            r = rng.uniform(-1.6, 1.6, (n, 3))
            d = np.linalg.norm(r[:, None] - r[None], axis=-1)
            if np.all(d[np.triu_indices(n, 1)] > 0.9):
                break
        e, f = _energy_forces(z, r)
        nums.append(z.astype(np.int32)); poss.append(r); ens.append(e); frcs.append(f)
    return Dataset(nums, poss, np.array(ens), frcs)


def _energy_forces(z, r):
    def energy(r):
        e = sum(_E0[int(zz)] for zz in z)
        for i in range(len(z)):
            for j in range(i + 1, len(z)):
                d = np.linalg.norm(r[i] - r[j])
                e += 0.5 * ((1 - np.exp(-1.5 * (d - 1.3))) ** 2 - 1) + 0.2 / d
        return e
    f = np.zeros_like(r)
    h = 1e-5
    for i in range(len(z)):
        for c in range(3):
            rp, rm = r.copy(), r.copy()
            rp[i, c] += h; rm[i, c] -= h
            f[i, c] = -(energy(rp) - energy(rm)) / (2 * h)
    return energy(r), f
