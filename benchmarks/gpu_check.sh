#!/usr/bin/env bash
# The prepared GPU check of issue 24: one script, one GPU, at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--shared DIR] [--wheelhouse DIR] [--no-install]
#                                [--budget SECONDS]
#
# Steps (each with its own time limit inside the total budget; a failed step is recorded and the
# next one runs; a step that would start with too little time left is recorded as skipped, one
# whose limit the budget shortened and that runs out of it as "cut by the budget", not failed):
#   env                 python, jax, devices, cuequivariance (+ ops) versions        -> env.json
#   install             pip install the gpu extra (not with --dry-run / --no-install) -> install.step.json
#   reference_float64   tests/test_reference_reproduction.py, float64, on the device  -> reference_float64.step.json
#   calculator_tests    tests/test_calculator.py + tests/test_cuequivariance.py       -> calculator_tests.step.json
#   then for message passing native and cuequivariance:
#   kernel_cost_MP      benchmarks/kernel_cost.py           (XLA flops / bytes)       -> kernel_cost_MP.json
#   reference_cmp_MP    benchmarks/reference_comparison.py  (ms per call)             -> reference_cmp_MP.json
#   model_scaling_MP    benchmarks/model_scaling.py         (to the largest N that fits: time, host and device memory)
#   md_throughput_MP    benchmarks/md_throughput.py         (jax engine, 1-256 replicas)
#   summary.json        every result above in one file, and the measured GPU default:
#                       decision.gpu_default = the kernel with the larger geometric-mean speed
#                       over the timed rows (set efa_calc.nn.tensor.GPU_MESSAGE_PASSING from it).
#
# --dry-run: the same steps on CPU with small sizes (a CI step, < 5 minutes): no install, one
# reference checkpoint, the fast calculator tests, C9H4 only, N <= 100, one replica.
# --shared: the folder holding reference/ (default $EFA_CALC_SHARED, else ../shared; the
# reference steps are skipped, and say so, when it is absent).  --wheelhouse: install from
# these wheels (pip --no-index --find-links), for a machine without network.
# Exit status: 0 when every step that ran passed, 1 otherwise.  Units in the JSON files: s, ms,
# GiB, MFLOP, MB, steps/s as each benchmark documents.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0; OUT=""; SHARED="${EFA_CALC_SHARED:-$ROOT/../shared}"; WHEELS=""; INSTALL=1; BUDGET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --shared) SHARED="$2"; shift ;;
    --wheelhouse) WHEELS="$2"; shift ;;
    --no-install) INSTALL=0 ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1'; allowed: --dry-run --out DIR --shared DIR --wheelhouse DIR" \
            "--no-install --budget SECONDS" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$ROOT/benchmarks/results/gpu_check}"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 EFA_CALC_SHARED="$SHARED"
# One persistent compilation cache for this run (fresh, so timings stay honest): the benchmarks
# compile the same calculator programs several times (kernel_cost, md_throughput's ASE engine,
# the cost analyses of md_throughput), and each repeat is then a cache hit.
CACHE="$(mktemp -d "${TMPDIR:-/tmp}/efa_gpu_check_cache.XXXXXX")"; trap 'rm -rf "$CACHE"' EXIT
export JAX_COMPILATION_CACHE_DIR="$CACHE" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
if [ "$DRY" = 1 ]; then
  BUDGET="${BUDGET:-290}"; export JAX_PLATFORMS=cpu; INSTALL=0
else
  BUDGET="${BUDGET:-480}"
fi
FAILED=0

# step NAME LIMIT_S CMD...: run CMD with a time limit inside the budget; log and step JSON in $OUT.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((BUDGET - SECONDS)) rc=0 t0=$SECONDS cut=0
  [ "$limit" -gt "$left" ] && { limit=$left; cut=1; }
  if [ "$limit" -lt 15 ]; then
    echo "== $name: skipped (${left}s of the ${BUDGET}s budget left)"
    "$PY" -c 'import json,sys; json.dump({"step": sys.argv[1], "status": "skipped", "why": "time budget"},
              open(sys.argv[2], "w"))' "$name" "$OUT/$name.step.json"
    return 0
  fi
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  tail -n 4 "$OUT/$name.log"
  # a time-out under a limit the budget shortened is a cut, not a failure
  if [ "$rc" != 0 ] && ! { [ "$cut" = 1 ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; }; then FAILED=1; fi
  "$PY" - "$name" "$rc" "$((SECONDS - t0))" "$OUT" "$cut" <<'EOF'
import json, re, sys
name, rc, secs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cut = sys.argv[5] == "1" and rc in (124, 137)
log = open(f"{out}/{name}.log", errors="replace").read()
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", log[-3000:])}
status = "passed" if rc == 0 else ("cut by the budget" if cut else "timed out" if rc in (124, 137) else "failed")
json.dump({"step": name, "status": status, "rc": rc, "seconds": secs, "pytest": counts or None,
           "log_tail": log[-4000:]}, open(f"{out}/{name}.step.json", "w"), indent=1)
EOF
}

# ------------------------------------------------------------------ environment and install
if [ "$INSTALL" = 1 ]; then
  step install 150 "$PY" -m pip install -q ${WHEELS:+--no-index --find-links "$WHEELS"} -e ".[gpu,test,md]"
fi
"$PY" - "$OUT/env.json" "$DRY" <<'EOF'
import importlib.metadata as md, json, subprocess, sys
import jax
def version(m):
    try:
        return md.version(m)
    except md.PackageNotFoundError:
        return None
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True) if not int(sys.argv[2]) else None
from efa_calc.nn.tensor import GPU_MESSAGE_PASSING
env = {"dry_run": bool(int(sys.argv[2])), "python": sys.version, "devices": [str(d) for d in jax.devices()],
       "platform": jax.default_backend(), "nvidia_smi": smi.stdout.strip() if smi else None,
       "gpu_message_passing_before": GPU_MESSAGE_PASSING,
       "versions": {m: version(m) for m in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "e3x", "flax",
                                           "cuequivariance", "cuequivariance-jax", "cuequivariance-ops-jax-cu12",
                                           "cuequivariance-ops-jax-cu13", "jax-md")}}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print("== env:", env["platform"], env["devices"][:2], env["versions"]["jax"], env["nvidia_smi"] or "")
if not env["dry_run"] and env["platform"] != "gpu":
    sys.exit("gpu_check.sh: jax sees no GPU (install the gpu extra, or use --dry-run on CPU)")
EOF
[ $? = 0 ] || { echo "gpu_check.sh: no GPU, stopping" >&2; exit 1; }

# ------------------------------------------------------------------ correctness on the device
if [ -f "$SHARED/reference/reference_predictions.json" ]; then
  if [ "$DRY" = 1 ]; then SEL="float64 and cumulene_local"; else SEL="float64"; fi
  step reference_float64 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_reference_reproduction.py \
       -k "test_reproduces_reference_predictions and $SEL"
else
  echo "== reference_float64: skipped (no reference data at $SHARED/reference; pass --shared DIR)"
  echo '{"step": "reference_float64", "status": "skipped", "why": "no reference data"}' > "$OUT/reference_float64.step.json"
fi
if [ "$DRY" = 1 ]; then
  step calculator_tests 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuequivariance.py \
       -k "misspelt or missing or defaults or traced"
else
  step calculator_tests 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_calculator.py tests/test_cuequivariance.py
fi

# ------------------------------------------------------------------ benchmarks, both kernels
# Benchmark by benchmark, both kernels in turn: a budget cut then removes a benchmark for both.
if [ "$DRY" = 1 ]; then
  for MP in native cuequivariance; do
    step "kernel_cost_$MP" 60 "$PY" benchmarks/kernel_cost.py --large 0 --small --message-passing "$MP" \
         --out "$OUT/kernel_cost_$MP.json"
  done
  for MP in native cuequivariance; do
    step "model_scaling_$MP" 60 "$PY" benchmarks/model_scaling.py --sizes 32 --repeats 1 --message-passing "$MP" \
         --out "$OUT/model_scaling_$MP.json"
  done
  for MP in native cuequivariance; do
    step "md_throughput_$MP" 120 "$PY" benchmarks/md_throughput.py --systems C9H4 --dtypes float32 --replicas 1 \
         --chunk 5 --ase-steps 3 --repeats 1 --no-drift --message-passing "$MP" --out "$OUT/md_throughput_$MP.json"
  done
else
  for MP in native cuequivariance; do
    step "kernel_cost_$MP" 40 "$PY" benchmarks/kernel_cost.py --large 4000 --message-passing "$MP" \
         --out "$OUT/kernel_cost_$MP.json"
  done
  if [ -f "$SHARED/reference/reference_predictions.json" ]; then
    for MP in native cuequivariance; do
      step "reference_cmp_$MP" 40 "$PY" benchmarks/reference_comparison.py --shared "$SHARED" --sizes 2000 \
           --repeats 5 --message-passing "$MP" --out "$OUT/reference_cmp_$MP.json"
    done
  fi
  for MP in native cuequivariance; do
    step "model_scaling_$MP" 60 "$PY" benchmarks/model_scaling.py --sizes 1000 4000 16000 64000 --repeats 3 \
         --message-passing "$MP" --out "$OUT/model_scaling_$MP.json"
  done
  for MP in native cuequivariance; do
    step "md_throughput_$MP" 45 "$PY" benchmarks/md_throughput.py --systems C9H4 --dtypes float32 \
         --replicas 1,8,64,256 --chunk 100 --ase-steps 50 --repeats 1 --no-drift --message-passing "$MP" \
         --out "$OUT/md_throughput_$MP.json"
  done
fi

# ------------------------------------------------------------------ one summary, and the GPU default
"$PY" benchmarks/gpu_check_summary.py "$OUT" || FAILED=1
echo "gpu_check.sh: ${SECONDS}s; results in $OUT (summary.json holds them all)"
exit "$FAILED"
