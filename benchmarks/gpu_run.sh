#!/usr/bin/env bash
# One accelerator run of everything the GPU issue asks for, results in one folder.
#
#   benchmarks/gpu_run.sh DATA_DIR OUT_DIR [--quick] [STAGES]
#
# DATA_DIR holds Fashion-MNIST's four .gz files (train-images-idx3-ubyte.gz, ...); OUT_DIR
# receives gpu_run.log (everything printed), env.json (versions, device), checks.jsonl
# (benchmarks/gpu_checks.py), bench.jsonl (benchmarks/run.py's records, keys as run.py prints
# them), profile.tar.gz (a jax.profiler trace and the HLO of one fused epoch) and summary.md
# (every goal met or missed, benchmarks/gpu_summary.py). Six files: the device tool returns 8.
#
# STAGES (default "checks,cnn,wide,mlp"): a comma-separated subset, to rerun part of a run.
# Each stage has a time limit (seconds below) so that one slow stage cannot eat the others.
# The limits come from the H200 run of 2026-12-04 (each benchmark row costs 16-25 s there:
# process start, data, compilation, timing) and add up to 780 s, more than the device tool's
# 600 s per command: run it as two commands, "checks,cnn" (330 s) and "wide,mlp" (450 s).
# --quick: the CPU smoke test of this script: tiny subsets, every stage and implementation run.
set -u -o pipefail

if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0"; exit 2
fi
DATA=$1; OUT=$2; shift 2
QUICK=""; STAGES="checks,cnn,wide,mlp"
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    *) STAGES=$a ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export FNN_DATA=$DATA PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

echo "# gpu_run.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) stages=$STAGES quick=${QUICK:-0}"
echo "# command: benchmarks/gpu_run.sh DATA_DIR OUT_DIR ${QUICK:+--quick} $STAGES"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
"$PY" - "$OUT/env.json" <<'EOF'
import importlib, json, platform, sys
env = {"python": platform.python_version()}
for name in ("jax", "jaxlib", "flax", "equinox", "optax", "torch", "numpy"):
    try:
        env[name] = importlib.import_module(name).__version__
    except Exception as e:
        env[name] = f"missing ({type(e).__name__})"
import jax
env["jax_backend"] = jax.default_backend()
env["jax_devices"] = [d.device_kind for d in jax.devices()]
try:
    import torch
    env["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    env["cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version()
except Exception:
    pass
print("# versions: " + json.dumps(env))
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

# On a GPU "auto" is custom_vjp (measured faster on cnn, 2026-12-04): fnn-fused is the custom_vjp
# epoch, and fnn-autodiff-fused is the third mode of the "auto picks the fastest" goal.
REFS=(stax equinox flax-nnx torch-eager torch-compile)
WIDE_IMPLS=(fnn-fused fnn-step "${REFS[@]}")
if [ -n "$QUICK" ]; then
  # On 2 CPU cores one wide step takes seconds to a minute (bf16 is emulated): fnn-fused alone
  # there, in both precisions; the other implementations' wide rows are exercised on the GPU.
  BENCH_OPTS=(--quick --batches 4 --timed 3 --timeout 600)
  WIDE_OPTS=(--quick --batches 1 --timed 1 --timeout 900)
  WIDE_IMPLS=(fnn-fused)
  CHECK_OPTS=(--quick)
  SCALE=10     # stage time limits: CPU, not GPU
else
  BENCH_OPTS=(--timeout 120)
  WIDE_OPTS=(--timeout 120)
  CHECK_OPTS=()
  SCALE=1
fi

stage() {  # name, time limit in seconds, command...
  local name=$1 limit=$(( $2 * SCALE )); shift 2
  case ",$STAGES," in *",$name,"*) ;; *) return 0 ;; esac
  echo; echo "## stage $name (limit ${limit} s) at $(elapsed) s"
  local tmp; tmp=$(mktemp)
  timeout --signal=INT --kill-after=15 "$limit" "$@" | tee "$tmp"
  local rc=$?
  # run.py prints one JSON record per (impl, workload, precision) at its end; a run cut short by its
  # limit printed them to stderr as it went ("-> {...}"), so those are taken from the log instead.
  if grep -q '^{"impl"' "$tmp"; then
    grep '^{"impl"' "$tmp" >> "$OUT/bench.jsonl"
  fi
  echo "## stage $name: exit status $rc after $(elapsed) s"
  rm -f "$tmp"
}

stage checks 130 "$PY" "$HERE/gpu_checks.py" --out "$OUT" "${CHECK_OPTS[@]}"
stage cnn 200 "$PY" "$HERE/run.py" --workload cnn "${BENCH_OPTS[@]}" \
  --impl fnn-fused fnn-step fnn-manual-fused fnn-autodiff-fused "${REFS[@]}"
stage wide 300 "$PY" "$HERE/run.py" --workload wide --precision float32 bfloat16 "${WIDE_OPTS[@]}" \
  --impl "${WIDE_IMPLS[@]}"
stage mlp 150 "$PY" "$HERE/run.py" --workload mlp "${BENCH_OPTS[@]}" \
  --impl fnn-fused fnn-step fnn-manual-fused "${REFS[@]}"

# Records of a stage cut short: the children's lines in the log that the parent never reprinted.
"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
have = {(r["impl"], r["workload"], r.get("precision", "float32"))
        for r in map(json.loads, (out / "bench.jsonl").read_text().splitlines())} if (out / "bench.jsonl").exists() else set()
extra = []
for line in (out / "gpu_run.log").read_text().splitlines():
    line = line.strip()
    if line.startswith("-> {"):
        r = json.loads(line[3:])
        k = (r["impl"], r["workload"], r.get("precision", "float32"))
        if k not in have:
            have.add(k); r["from_log"] = True; extra.append(r)
with open(out / "bench.jsonl", "a") as f:
    f.writelines(json.dumps(r) + "\n" for r in extra)
print(f"# {len(extra)} records recovered from the log of stages cut short")
EOF
echo; echo "## summary at $(elapsed) s"
"$PY" "$HERE/gpu_summary.py" "$OUT" | tee "$OUT/summary.md"
echo "# gpu_run.sh done in $(elapsed) s"
