"""Gather the results of ``benchmarks/gpu_check.sh`` into one ``summary.json``, and measure
which message-passing kernel is faster there.

    python benchmarks/gpu_check_summary.py DIR

``summary.json`` holds ``env`` (devices, versions), ``steps`` (every step's status, time and
pytest counts), ``results`` (every benchmark's JSON, by file name) and ``decision``:

* ``speed_ratios``: cuequivariance speed / native speed for every timed row both kernels ran
  (reference_comparison: the kernel and calculator medians per call (s); model_scaling: the
  best time per size (s); md_throughput: jax-engine replica·steps/s per replica count);
* ``geometric_mean``: of those ratios; ``gpu_default``: ``"cuequivariance"`` when it is > 1,
  else ``"native"`` — the value for :data:`efa_calc.nn.tensor.GPU_MESSAGE_PASSING` (meaningful
  only on a GPU: ``dry_run`` says whether these were CPU numbers).

Exit status 1 when a step failed or timed out (skipped steps do not count).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

KERNELS = ("native", "cuequivariance")


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _times(name: str, result: dict) -> dict[str, float]:
    """Timed rows of one benchmark result as {row key: seconds per unit of work} (smaller is faster)."""
    out: dict[str, float] = {}
    if name.startswith("reference_cmp"):
        for r in result.get("rows", []):
            out[f"{r['case']} kernel"] = r["efa_calc_kernel_s"]
            out[f"{r['case']} calculator"] = r["efa_calc_calculator_s"]
    elif name.startswith("model_scaling"):
        for r in result.get("rows", []):
            out[f"N={r['atoms']}"] = r["seconds"]
    elif name.startswith("md_throughput"):
        for r in result.get("rows", []):
            if r["engine"] == "jax":
                out[f"{r['system']} {r['dtype']} R={r['replicas']}"] = 1.0 / r["replica_steps_per_s"]
    return out


def decide(results: dict) -> dict:
    ratios: dict[str, float] = {}
    for bench in ("reference_cmp", "model_scaling", "md_throughput"):
        native = _times(bench, results.get(f"{bench}_native") or {})
        cueq = _times(bench, results.get(f"{bench}_cuequivariance") or {})
        for key in sorted(set(native) & set(cueq)):
            ratios[f"{bench}: {key}"] = native[key] / cueq[key]  # > 1: cuequivariance faster
    if not ratios:
        return {"speed_ratios": {}, "geometric_mean": None, "gpu_default": None,
                "why": "no timed row ran with both kernels"}
    gm = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
    return {"speed_ratios": ratios, "geometric_mean": gm, "gpu_default": "cuequivariance" if gm > 1 else "native"}


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    steps = {p.name[: -len(".step.json")]: _load(p) for p in sorted(out.glob("*.step.json"))}
    results = {p.stem: _load(p) for p in sorted(out.glob("*.json"))
               if not p.name.endswith(".step.json") and p.name not in ("summary.json", "env.json")}
    env = _load(out / "env.json") or {}
    for s in steps.values():  # the logs are in the files beside; keep the summary readable
        if s and s.get("status") == "passed":
            s.pop("log_tail", None)
    summary = {"env": env, "steps": steps, "results": results, "decision": {**decide(results),
                                                                            "dry_run": env.get("dry_run")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    bad = [k for k, s in steps.items() if s and s.get("status") in ("failed", "timed out")]
    d = summary["decision"]
    print(f"steps: {len(steps)}, failed: {bad or 'none'}; geometric-mean speed cuequivariance/native: "
          f"{d['geometric_mean'] if d['geometric_mean'] is None else round(d['geometric_mean'], 3)} "
          f"-> GPU default {d['gpu_default']!r}{' (dry run: CPU numbers)' if env.get('dry_run') else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
