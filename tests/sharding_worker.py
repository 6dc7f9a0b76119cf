"""Subprocess side of tests/test_sharding.py (not collected by pytest).

    python tests/sharding_worker.py main OUT.json models|clusters [SHARED]   # 4 host devices, float64
    python tests/sharding_worker.py multihost OUT.npz PORT PID N   # one of N processes, 2 host devices each
    python tests/sharding_worker.py single OUT.npz                 # the multihost structure on one device

Writes, per case, the largest deviation of the sharded result from the single-device one
(eV, eV/Å) and what the case exercised, as JSON; the test asserts on it.
"""

from __future__ import annotations

import os
import sys

MODE = sys.argv[1]
if MODE == "multihost":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
elif MODE == "main":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_ENABLE_X64"] = "1"

import functools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

if MODE == "multihost":
    jax.distributed.initialize(coordinator_address=f"localhost:{sys.argv[3]}", num_processes=int(sys.argv[5]),
                               process_id=int(sys.argv[4]), local_device_ids=[0, 1])

from ase import Atoms  # noqa: E402

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.graphs.padding import edge_bucket, node_bucket, pad_graphs  # noqa: E402
from efa_calc.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from efa_calc.nn.config import ModelConfig  # noqa: E402
from efa_calc.models import resolve_model  # noqa: E402
from efa_calc.graphs.neighbors import neighbor_pairs  # noqa: E402
from efa_calc.nn.energy_model import energy_and_forces, init_params  # noqa: E402
from efa_calc.nn.long_range.all_to_all import AllToAllConfig  # noqa: E402
from efa_calc.nn.long_range.efa import EFAConfig  # noqa: E402
from efa_calc.backends.sharded import ShardedPotential  # noqa: E402


def cluster(n: int, seed: int, spacing: float = 2.4) -> tuple[np.ndarray, np.ndarray]:
    """A random H/C cluster: jittered cubic lattice (spacing Å) cut to a sphere."""
    rng = np.random.default_rng(seed)
    k = int(np.ceil((6 * n / np.pi) ** (1 / 3))) + 2
    g = (np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3) - (k - 1) / 2) * spacing
    g = g[np.argsort(np.linalg.norm(g, axis=1), kind="stable")[:n]]
    return rng.choice([1, 6], n).astype(np.int32), g + rng.uniform(-0.3, 0.3, g.shape) * spacing


def small_config(kind: str = "efa") -> ModelConfig:
    """The sn2-efa architecture, narrowed (F = 16, L = 1, cutoff 3.5 Å) for large clusters;
    max_length 200 Å (random parameters, no invariance claim needed)."""
    lr = (EFAConfig(iterations=(0, 1), lebedev_num=50, max_frequency=np.pi, max_length=200.0, max_degree=0,
                    qk_features=8, v_features=16) if kind == "efa"
          else AllToAllConfig(iterations=(0, 1), num_heads=2, qk_features=8, v_features=16, max_degree=0))
    cfg = load_checkpoint(resolve_model("sn2-efa")).config
    return cfg.replace(num_features=16, mp_max_degree=1, cutoff=3.5, num_basis_functions=8, long_range=lr)


def random_params(cfg: ModelConfig, seed: int = 0, calibrate: bool = False) -> dict:
    """Random parameters: e3x's initialisation plus noise, forces of O(0.5 eV/Å) (readout
    ×20), EFA values ×0.01 (its sums are unnormalised, ∝ N: keeps 3000 atoms moderate).
    ``calibrate``: element biases cancel the mean atomic energy per element of a 60-atom
    cluster, so that a 3000-atom total stays ~10 eV (float64 rounding of a 10⁵ eV sum would
    approach the 1e-9 eV tolerance)."""
    z, pos = cluster(8, 0)
    b = pad_graphs([z], [pos], [neighbor_pairs(pos, cfg.cutoff)], 8, 256)
    params = init_params(cfg, jax.random.PRNGKey(seed), b)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.05 * rng.normal(size=np.shape(x)), params)
    p = params["params"]
    p["readout"]["kernel"] = p["readout"]["kernel"] * 20.0
    for t in range(cfg.num_iterations):
        if f"long_range_{t}" in p:
            p[f"long_range_{t}"]["value"] = jax.tree_util.tree_map(lambda a: a * 0.01, p[f"long_range_{t}"]["value"])
    if calibrate:
        z, pos = cluster(60, 2)  # the one_domain structure: its compile is reused
        _, _, e_i = single(cfg, params, z, pos, atomic=True)
        for el in (1, 6):
            p["element_bias"][el] -= e_i[z == el].mean()
    return params


def _untrained(cfg, params) -> Checkpoint:
    """An in-memory checkpoint of random parameters (no energy shift: physical = model energies)."""
    return Checkpoint(cfg, params, ["H", "C"], name="random")


@functools.lru_cache(maxsize=None)
def _single_fn(cfg: ModelConfig):
    return jax.jit(lambda p, b: energy_and_forces(p, cfg, b))


def single(cfg, params, z, pos, atomic: bool = False):
    """One-device reference: (E, F) in eV, eV/Å and the pairs (or atomic energies)."""
    dst, src = neighbor_pairs(pos, cfg.cutoff)
    n = len(z)
    b = pad_graphs([z], [pos], [(dst, src)], node_bucket(n), edge_bucket(len(dst)))
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    e_g, f, e_i = _single_fn(cfg)(p, b)
    if atomic:
        return float(e_g[0]), np.asarray(f)[:n], np.asarray(e_i)[:n]
    return float(e_g[0]), np.asarray(f)[:n], (dst, src)


def compare(sp: ShardedPotential, cfg, params, z, pos, owner=None) -> dict:
    e_ref, f_ref, (dst, src) = single(cfg, params, z, pos)
    e, f, _ = sp(z, pos, dst, src, owner=owner)
    counts = np.bincount(sp.owner, minlength=sp.num_domains)
    return {"dE": abs(e - e_ref), "dF": float(np.abs(f - f_ref).max()), "max_abs_force": float(np.abs(f_ref).max()),
            "atoms": len(z), "pairs": len(dst),
            "owned_per_domain": counts.tolist(), "ghosts": int(sp.last_inputs.send_mask.sum()), "E": e}


class Timed(dict):
    """Results with the wall time of every case (``seconds``)."""

    def __init__(self):
        super().__init__()
        self.t = time.perf_counter()

    def __setitem__(self, key, value):
        now = time.perf_counter()
        if isinstance(value, dict):
            value = {**value, "seconds": round(now - self.t, 1)}
        self.t = now
        super().__setitem__(key, value)


def main(out: str, part: str, shared: str | None) -> None:
    res: dict = Timed()
    res["devices"] = len(jax.devices())
    if part == "models":
        models(res, shared)
    else:
        clusters(res)
    Path(out).write_text(json.dumps(res, indent=1))


def models(res: dict, shared: str | None) -> None:

    # bundled models, through the calculator (devices=4 against the default single device)
    frames = {"cumulene": Atoms("C7H4", positions=[[1.28 * i - 3.84, 0, 0] for i in range(7)]
                                + [[-4.4, 0.93, 0], [-4.4, -0.93, 0], [4.4, 0, 0.93], [4.4, 0, -0.93]]),
              "sn2": Atoms("CH3ClF", positions=[[0, 0, 0], [1.03, 0.2, 0.1], [-0.5, 0.9, 0.1], [-0.5, -0.9, -0.2],
                                                 [0.1, 0.0, 2.3], [-0.1, 0.1, -2.1]])}
    for name in ("cumulene-efa", "cumulene-local", "sn2-efa", "sn2-local"):
        atoms = frames[name.split("-")[0]]
        one = EFACalculator(name, dtype="float64", guard="off")
        many = EFACalculator(name, dtype="float64", guard="off", devices=4)
        r1 = {"energy": one.get_potential_energy(atoms), "forces": one.get_forces(atoms)}
        r4 = {"energy": many.get_potential_energy(atoms), "forces": many.get_forces(atoms)}
        res[f"bundled/{name}"] = {"dE": abs(r1["energy"] - r4["energy"]),
                                  "dF": float(np.abs(r1["forces"] - r4["forces"]).max()), "atoms": len(atoms),
                                  "owned_per_domain": np.bincount(many.sharded[0].owner, minlength=4).tolist()}
        if name == "sn2-efa":  # evaluate_batch takes the sharded path too
            b4 = many.evaluate_batch([atoms, atoms])
            res["bundled_batch"] = {"dE": abs(b4[1]["energy"] - r1["energy"]),
                                    "dF": float(np.abs(b4[1]["forces"] - r1["forces"]).max())}

    # reference checkpoints (skipped when the shared data is absent)
    if shared and (Path(shared) / "reference_predictions.json").is_file():
        from efa_calc.reference import checkpoint_from_reference

        meta = json.loads((Path(shared) / "reference_predictions.json").read_text())
        with np.load(Path(shared) / "reference_predictions.npz") as zf:
            pred = {k: zf[k] for k in zf.files}
        for name in ("cumulene_efa", "sn2_efa", "cluster16_efa", "cluster16_local_T2"):
            ck = checkpoint_from_reference(Path(shared) / meta[name]["checkpoint"], meta[name]["hyperparameters"],
                                           name=name)
            z, pos = pred[f"{name}/atomic_numbers"][0], pred[f"{name}/positions"][0]
            sp = ShardedPotential(ck, 4, "float64")
            res[f"reference/{name}"] = compare(sp, ck.config, ck.params, np.asarray(z), np.asarray(pos))
    else:
        res["reference_skipped"] = f"no reference data at {shared}"

    # more devices than atoms: a clear InputError from the calculator
    try:
        EFACalculator("sn2-efa", dtype="float64", devices=4).get_potential_energy(Atoms("HF", [[0, 0, 0], [0.95, 0, 0]]))
        res["too_few_atoms"] = "no error"
    except Exception as exc:  # noqa: BLE001
        res["too_few_atoms"] = f"{type(exc).__name__}: {exc}"


def clusters(res: dict) -> None:

    # a 3000-atom random cluster, small random-parameter EFA model
    cfg = small_config()
    params = random_params(cfg, calibrate=True)
    z, pos = cluster(3000, 1)
    sp = ShardedPotential(_untrained(cfg, params), 4, "float64")
    res["cluster3000"] = compare(sp, cfg, params, z, pos)

    # all atoms in one domain (explicit owner), then domains left empty (slabs across a gap)
    z, pos = cluster(60, 2)
    sp = ShardedPotential(_untrained(cfg, params), 4, "float64")
    res["one_domain"] = compare(sp, cfg, params, z, pos, owner=np.zeros(len(z), np.int32))
    z2 = np.concatenate([z, z])
    pos2 = np.concatenate([pos, pos + [60.0, 0, 0]])  # two clusters 60 Å apart: middle slabs empty
    sp = ShardedPotential(_untrained(cfg, params), 4, "float64", method="slabs")
    res["empty_domains"] = compare(sp, cfg, params, z2, pos2)

    # capacity overflow mid-run: shuffle which atom sits where (every domain scattered) -> re-partition
    z, pos = cluster(300, 3)
    sp = ShardedPotential(_untrained(cfg, params), 4, "float64")
    first = compare(sp, cfg, params, z, pos)
    caps0 = tuple(sp.capacities)
    perm = np.random.default_rng(0).permutation(len(z))
    second = compare(sp, cfg, params, z, pos[perm])
    res["repartition"] = {"dE": max(first["dE"], second["dE"]), "dF": max(first["dF"], second["dF"]),
                          "repartitions": sp.num_repartitions, "capacity_changes": sp.num_capacity_changes,
                          "capacities": [list(caps0), list(sp.capacities)]}
    # ... and a compressed structure: more pairs per domain than any re-partition fits -> capacities grow
    third = compare(sp, cfg, params, z, pos * 0.8)
    res["grow"] = {"dE": third["dE"], "dF": third["dF"], "capacity_changes": sp.num_capacity_changes,
                   "capacities": list(sp.capacities)}

    # all-to-all attention (all-gathered keys and values)
    acfg = small_config("all_to_all")
    aparams = random_params(acfg, 1)
    z, pos = cluster(200, 4)
    res["all_to_all"] = compare(ShardedPotential(_untrained(acfg, aparams), 4, "float64"), acfg, aparams, z, pos)

    # forces against central finite differences of the sharded energy
    z, pos = cluster(40, 5)
    sp = ShardedPotential(_untrained(cfg, params), 4, "float64")
    dst, src = neighbor_pairs(pos, cfg.cutoff + 1.0)  # a skin: pairs stay valid under ±h
    _, f, _ = sp(z, pos, dst, src)
    h, worst = 1e-4, 0.0
    rng = np.random.default_rng(1)
    for i in rng.choice(len(z), 4, replace=False):
        for c in range(3):
            p, m = pos.copy(), pos.copy()
            p[i, c] += h
            m[i, c] -= h
            fd = -(sp(z, p, dst, src)[0] - sp(z, m, dst, src)[0]) / (2 * h)
            worst = max(worst, abs(fd - f[i, c]))
    res["finite_differences"] = {"dF": worst, "h": h, "max_abs_force": float(np.abs(f).max())}


def multihost_structure():
    cfg = small_config()
    params = random_params(cfg)
    z, pos = cluster(200, 6)
    return cfg, params, z, pos


def run_multihost(out: str) -> None:
    cfg, params, z, pos = multihost_structure()
    dst, src = neighbor_pairs(pos, cfg.cutoff)
    devices = jax.devices()  # global: 2 processes × 2 host devices
    sp = ShardedPotential(_untrained(cfg, params), devices, "float64")
    e, f, e_i = sp(z, pos, dst, src)
    np.savez(out, energy=e, forces=f, energies=e_i, num_devices=len(devices), process_count=jax.process_count(),
             owned=np.bincount(sp.owner, minlength=len(devices)))
    jax.distributed.shutdown()


def run_single(out: str) -> None:
    cfg, params, z, pos = multihost_structure()
    e, f, _ = single(cfg, params, z, pos)
    np.savez(out, energy=e, forces=f, max_abs_force=np.abs(f).max())


if __name__ == "__main__":
    if MODE == "main":
        main(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    elif MODE == "multihost":
        run_multihost(sys.argv[2])
    else:
        run_single(sys.argv[2])
