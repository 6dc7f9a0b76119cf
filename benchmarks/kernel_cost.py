"""XLA's cost of one compiled energy+forces call: flops, bytes accessed, HLO instructions.

These figures come from the compiled executable (``compiled.cost_analysis()`` and its HLO
text), not from a clock, so they are steady on a busy machine and comparable between
commits.  ``bytes accessed`` sums, over every top-level HLO instruction (fusions count
once), the bytes of its operands and outputs: a proxy for memory traffic.

Cases (float32, the calculator's padded shapes):

* ``cumulene-efa C9H4``: the bundled model on a 13-atom C9H4 (16 atom slots, 80 pair slots);
* ``sn2-efa complex``: the bundled SN2 model on the 6-atom F⁻···CH3Cl complex;
* ``SN2 hyperparameters N=4000``: the paper's SN2 EFA hyperparameters (F = 128) with random
  parameters on a 4000-atom random cluster (``--large 0`` skips it).

Also prints the largest HLO instructions and a breakdown of output bytes by model layer
(forward / backward), which is where to look next.

    python benchmarks/kernel_cost.py [--large 4000] [--top 10] [--profile DIR] [--message-passing native] [--small]

``--profile DIR`` also records 200 warm C9H4 calls with ``jax.profiler`` (open DIR in
TensorBoard's profile plugin or Perfetto) to see where the wall time of the calls goes.

Writes ``benchmarks/results/kernel_cost.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from efa_calc.backends.base import Graph, Slots  # noqa: E402
from efa_calc.backends.single import Potential, tight_slots  # noqa: E402
from efa_calc.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from efa_calc.graphs.neighbors import neighbor_pairs  # noqa: E402
from efa_calc.graphs.padding import pad_graphs  # noqa: E402
from efa_calc.models import resolve_model  # noqa: E402
from efa_calc.structures import cumulene, sn2_complex  # noqa: E402

#: bytes per element of the HLO element types
HLO_DTYPE_BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "s32": 4, "u32": 4, "s64": 8, "u64": 8, "pred": 1, "s8": 1, "u8": 1}
_SKIP = {"bitcast", "parameter", "constant", "get-tuple-element", "tuple"}
_INSTR = re.compile(r"\s*(?:ROOT )?%?[\w.\-]+ = (\w+)\[([\d,]*)\]\S* ([\w\-]+)\(")


def top_level_instructions(hlo: str):
    """(bytes of the output, opcode, shape, op_name) of every instruction outside fused computations."""
    fused = False
    for line in hlo.splitlines():
        if line and not line.startswith(" "):
            head = line.split("(")[0]
            fused = not line.startswith("ENTRY") and ("fused" in head or "region" in head or "wrapped" in head)
            continue
        m = _INSTR.match(line)
        if fused or not m or m.group(3) in _SKIP:
            continue
        dims = [int(d) for d in m.group(2).split(",") if d]
        op = re.search(r'op_name="([^"]*)"', line)
        yield int(np.prod(dims)) * HLO_DTYPE_BYTES.get(m.group(1), 4), m.group(3), f"{m.group(1)}[{m.group(2)}]", (op.group(1) if op else "")


def layer_breakdown(hlo: str) -> dict[str, float]:
    """MB of instruction outputs per model layer, split into forward and backward."""
    groups = collections.Counter()
    for nbytes, _, _, op in top_level_instructions(hlo):
        direction = "backward" if "transpose(" in op else "forward"
        layer = re.sub(r"^.*EnergyModel\)*/", "", op).split("/")[0] or "?"
        groups[f"{direction}:{layer}"] += nbytes / 1e6
    return dict(groups.most_common())


def cost(lowered) -> dict:
    compiled = lowered.compile()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    hlo = compiled.as_text()
    instr = list(top_level_instructions(hlo))
    return {
        "flops": float(ca.get("flops", 0.0)),
        "bytes_accessed": float(ca.get("bytes accessed", 0.0)),
        "hlo_instructions": sum(1 for line in hlo.splitlines() if " = " in line),
        "top_level_instructions": len(instr),
        "fusions": sum(1 for i in instr if i[1] == "fusion"),
        "dots": hlo.count(" dot("),
        "largest": sorted(instr, reverse=True)[:10],
        "layers_MB": layer_breakdown(hlo),
    }


def molecule_call(model: str, atoms, message_passing=None):
    """(Potential, graph, slots) as the calculator builds them."""
    pot = Potential(load_checkpoint(resolve_model(model)), "float32", message_passing=message_passing)
    graph = Graph(atoms.numbers, atoms.positions, *neighbor_pairs(atoms.positions, pot.config.cutoff))
    return pot, graph, tight_slots([graph])


def profile(directory: str, calls: int = 200) -> None:
    pot, graph, slots = molecule_call("cumulene-efa", cumulene(9, 30.0))
    pot.predict([graph], slots)
    with jax.profiler.trace(directory):
        for _ in range(calls):
            pot.predict([graph], slots)
    print(f"profile of {calls} C9H4 calls written to {directory}")


def molecule_case(model: str, atoms, message_passing=None) -> dict:
    pot, graph, slots = molecule_call(model, atoms, message_passing)
    return {"atoms": len(atoms), "atom_slots": slots.nodes_per_graph, "pair_slots": slots.num_edges,
            **cost(pot.lower([graph], slots))}


def large_case(n: int, message_passing=None) -> dict:
    from model_scaling import SN2_EFA, cluster

    from efa_calc.nn.energy_model import init_params
    from efa_calc.reference import from_reference_hyperparameters

    cfg = from_reference_hyperparameters(SN2_EFA)
    pos = cluster(n)
    z = np.where(np.random.default_rng(1).random(n) < 0.5, 1, 6)
    graph = Graph(z, pos, *neighbor_pairs(pos, cfg.cutoff))
    slots = Slots(n, len(graph.dst), 1)
    probe = pad_graphs([z], [pos], [(graph.dst, graph.src)], *slots, dtype=np.float32)
    params = jax.tree_util.tree_map(np.asarray, init_params(cfg, jax.random.PRNGKey(0), probe))
    # XLA's cost analysis counts a loop body once: measure the program without edge chunks
    # (the chunked one computes the same sums in a loop, plus the rematerialised forward).
    pot = Potential(Checkpoint(cfg, params, ["H", "C"]), "float32", edge_chunk=0, message_passing=message_passing)
    return {"atoms": n, "pairs": int(len(graph.dst)), "edge_chunks": False, **cost(pot.lower([graph], slots))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=4000, help="atoms of the SN2-hyperparameter cluster (0: skip)")
    ap.add_argument("--top", type=int, default=8, help="layers to list per case")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kernel_cost.json"))
    ap.add_argument("--profile", metavar="DIR", help="also record a jax.profiler trace of C9H4 calls")
    ap.add_argument("--message-passing", choices=("native", "cuequivariance"), default=None,
                    help="message-passing kernel (default: the platform's)")
    ap.add_argument("--small", action="store_true", help="C9H4 only (a quick check)")
    args = ap.parse_args(argv)
    mp = args.message_passing
    if args.profile:
        profile(args.profile)
    cases = {
        "cumulene-efa C9H4": lambda: molecule_case("cumulene-efa", cumulene(9, 30.0), mp),
        "sn2-efa complex": lambda: molecule_case("sn2-efa", sn2_complex("F", "Cl", 3.0, 1.8), mp),
    }
    if args.small:
        del cases["sn2-efa complex"]
    if args.large:
        cases[f"SN2 hyperparameters N={args.large}"] = lambda: large_case(args.large, mp)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, float32, one energy+forces call, "
          f"message passing {mp or 'default'}")
    print(f"{'case':30s} {'MFLOP':>9s} {'MB accessed':>12s} {'HLO instr':>10s} {'fusions':>8s} {'dots':>5s}")
    results = {}
    for name, make in cases.items():
        r = make()
        results[name] = r
        print(f"{name:30s} {r['flops'] / 1e6:9.1f} {r['bytes_accessed'] / 1e6:12.2f} {r['hlo_instructions']:10d} "
              f"{r['fusions']:8d} {r['dots']:5d}", flush=True)
        for layer, mb in list(r["layers_MB"].items())[: args.top]:
            print(f"{'':32s}{mb:8.3f} MB out  {layer}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"jax": jax.__version__, "platform": jax.devices()[0].platform,
                               "message_passing": mp or "default", "cases": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
