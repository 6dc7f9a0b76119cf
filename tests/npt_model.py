"""A random-parameter periodic argon model and a liquid-like argon box for the NPT tests
(float32 parameters as save_checkpoint writes them; cutoff 4 Å)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk

CUTOFF = 4.0


def argon_checkpoint(path, seed: int = 5):
    """Write a random periodic Ar model to ``path``; returns the path."""
    import jax

    from efa_calc.checkpoint import Checkpoint, save_checkpoint
    from efa_calc.graphs.padding import pad_graphs
    from efa_calc.nn.config import ModelConfig
    from efa_calc.nn.energy_model import init_params

    cfg = ModelConfig(num_features=8, num_iterations=1, cutoff=CUTOFF, mp_max_degree=1, num_basis_functions=8,
                      output_is_zero_at_init=False)
    z = np.array([18, 18, 18])
    pos = np.array([[0.0, 0, 0], [3.6, 0, 0], [0, 3.6, 0]])
    dst, src = np.nonzero(~np.eye(3, dtype=bool))
    batch = pad_graphs([z], [pos], [(dst, src)], 4, 8, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(seed), batch))
    return save_checkpoint(Checkpoint(cfg, params, ["Ar"], name="random-argon", periodic=True), path)


def argon_box(repeat: int = 2, a: float = 5.6, seed: int = 0, rattle: float = 0.05) -> Atoms:
    """fcc argon (lattice constant ``a`` Å, 4·repeat³ atoms), rattled by ``rattle`` Å, pbc."""
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def write_slab(directory, structure) -> str:
    """The structure file ``structure`` with pbc (True, True, False), written to ``directory``; its path."""
    from ase.io import read, write

    atoms = read(structure)
    atoms.pbc = (True, True, False)
    path = str(directory / "slab.extxyz")
    write(path, atoms)
    return path
