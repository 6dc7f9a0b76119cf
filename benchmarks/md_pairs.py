"""The jax engine's pair list: its dense on-device search against jax-md's ``partition.neighbor_list``.

For C9H4 (13 atoms, ``cumulene-efa``) and the Cl⁻···CH3Br complex (6 atoms, ``sn2-efa``),
NVE in float32, the chunk of :class:`efa_calc.md_jax.JaxMD` is compiled three ways, the
pair list of every force call built by

* ``dense``: :func:`efa_calc.md_jax.pairs.dense_pairs` (all N² distances, ``jnp.nonzero``
  into ``capacity`` slots; the engine's);
* ``jaxmd-dense``: ``partition.neighbor_list(..., format=Sparse, disable_cell_list=True)``,
  ``update`` at every call (``dr_threshold=0``: rebuilt every step, as the engine needs);
* ``jaxmd-cells``: the same with jax-md's cell list (positions shifted into a box of the
  molecule's extent plus two cutoffs).

Reported per variant: XLA's ``cost_analysis()`` of the compiled chunk (flops, bytes
accessed: a loop body is counted once, so these are one step plus the chunk's starting
force call) and of the pair search alone — steady on a loaded machine — and a rough wall
time per step (best of ``--repeats`` chunks of ``--chunk`` steps, the variants interleaved;
only indicative on a shared machine).

    python benchmarks/md_pairs.py [--chunk 20] [--repeats 5] [--out benchmarks/results/md_pairs.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import efa_calc.md_jax.model as model_mod
from efa_calc import EFACalculator
from efa_calc.md_jax import JaxMD, clear_compiled
from efa_calc.structures import cumulene, sn2_complex
from md_protocols.dynamics import initial_velocities


def jaxmd_pairs(start, cutoff: float, capacity: int, cells: bool, box: float):
    """A drop-in for :func:`dense_pairs` built on jax-md's neighbour list (Sparse format,
    ``capacity`` slots, allocated once at the ``start`` positions (N, 3) Å)."""
    from jax_md import partition, space

    n = len(start)
    displacement, _ = space.periodic(box) if cells else space.free()
    fn = partition.neighbor_list(displacement, box, cutoff, dr_threshold=0.0, capacity_multiplier=1.0,
                                 disable_cell_list=not cells, format=partition.Sparse)
    offset = box / 2 - start.mean(axis=0) if cells else np.zeros(3)
    count0 = int(np.sum(np.linalg.norm(start[:, None] - start[None], axis=-1) < cutoff) - n)
    template = fn.allocate(start + offset, extra_capacity=capacity - count0)

    def pairs(positions, cutoff_, capacity_):
        x = positions + (box / 2 - jnp.mean(positions, axis=0) if cells else 0.0)
        nbrs = fn.update(x, template)
        recv, send = nbrs.idx[0], nbrs.idx[1]
        mask = recv < n
        count = jnp.where(nbrs.did_buffer_overflow, capacity + 1, jnp.sum(mask))
        return jnp.where(mask, recv, 0).astype(jnp.int32), jnp.where(mask, send, 0).astype(jnp.int32), mask, count

    return pairs


def _pair_cost(pairs, positions, cutoff: float, capacity: int) -> float:
    """XLA flops of the pair search alone, for one structure (N, 3) Å."""
    import jax

    fn = jax.jit(lambda x: pairs(x, cutoff, capacity))
    cost = fn.lower(jnp.asarray(positions, jnp.float32)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def measure(name: str, atoms, model: str, chunk: int, repeats: int) -> list[dict]:
    """Compile the chunk with each pair search, then time them interleaved (A B C A B C …,
    best of ``repeats`` each), so that a changing load hits all variants alike."""
    calc = EFACalculator(model, dtype="float32")
    atoms = atoms.copy()
    initial_velocities(atoms, 300.0, np.random.default_rng(0))
    ckpt = calc.checkpoints[0]
    extent = float(np.ptp(atoms.positions, axis=0).max())
    original = model_mod.dense_pairs
    runs = {}
    for variant in ("dense", "jaxmd-dense", "jaxmd-cells"):
        clear_compiled()  # each variant compiles its own chunk
        md = JaxMD(ckpt, atoms.numbers, atoms.get_masses(), "nve", timestep_fs=0.5, dtype="float32")
        state = md.init(atoms.positions[None], atoms.get_momenta()[None])
        pairs = original if variant == "dense" else jaxmd_pairs(atoms.positions, md.cutoff, md.capacity,
                                                                variant == "jaxmd-cells", extent + 2 * md.cutoff)
        model_mod.dense_pairs = pairs
        try:
            row = {"system": name, "variant": variant, "capacity": md.capacity,
                   "pair_search_flops": _pair_cost(pairs, atoms.positions, md.cutoff, md.capacity)}
            cost = md.cost_analysis(state, chunk)
            out = md.run_chunk(state, chunk)  # compiles
            row.update({"chunk_mflop_per_step": cost["flops"] / 1e6,
                        "chunk_mbytes_accessed": cost["bytes accessed"] / 1e6,
                        "final_epot_eV": float(out.epot[0])})
            runs[variant] = (md, out.state, row)
        finally:
            model_mod.dense_pairs = original
    best = {v: np.inf for v in runs}
    for _ in range(repeats):
        for variant, (md, state, _) in runs.items():
            t = time.perf_counter()
            md.run_chunk(state, chunk)  # the compiled chunk: the patch is needed at trace time only
            best[variant] = min(best[variant], time.perf_counter() - t)
    rows = []
    for variant, (_, _, row) in runs.items():
        row["ms_per_step"] = 1e3 * best[variant] / chunk
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunk", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/md_pairs.json")
    a = p.parse_args()
    rows = measure("C9H4", cumulene(9, 90.0), "cumulene-efa", a.chunk, a.repeats)
    rows += measure("SN2", sn2_complex("Cl", "Br", 3.3, 1.95), "sn2-efa", a.chunk, a.repeats)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
