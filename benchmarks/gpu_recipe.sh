#!/usr/bin/env bash
# The Fashion-MNIST recipe (issue #17) trained for longer on a GPU than the 2-core CPU allows.
#
#   benchmarks/gpu_recipe.sh DATA_DIR OUT_DIR [BUDGET_S] [--quick]
#
# Trains RUNS below (the README's recipe command: Nesterov, one-cycle peaking at 0.1, weight decay
# 5e-4, crop/flip/erase, label smoothing 0.1, 10% held out for validation) as concurrent
# `fnn train` processes on one GPU. The number of epochs is not fixed: a probe first trains every
# run for 2 epochs side by side, and the main runs then get as many epochs as fit in BUDGET_S
# (default 540) at the slowest probe's pace, at most MAX_EPOCHS (200). Everything is written to
# OUT_DIR: recipe.log (all output), results.jsonl (one `fnn train --json` line per run, with its
# model, seed, epochs; with test-time augmentation figures, --tta flip,shift), runs.tar.gz (each
# run's history.jsonl, results.json, curves.png and model.fnn, for fnn evaluate and fnn predict).
# --quick: a CPU smoke test (600 training images, 2 epochs).
set -u -o pipefail
if [ $# -lt 2 ]; then sed -n '2,14p' "$0"; exit 2; fi
DATA=$1; OUT=$2; shift 2
BUDGET=540; QUICK=""
for a in "$@"; do
  case "$a" in --quick) QUICK=1 ;; *) BUDGET=$a ;; esac
done
PY=${PYTHON:-python3}
MAX_EPOCHS=${MAX_EPOCHS:-200}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
# Several JAX processes share the GPU: no process may take most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/recipe.log") 2>&1
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

# RUNS_SPEC="model seed [flags];model seed [flags]" replaces the runs (flags for that run alone),
# EXTRA (flags) is appended to every run's recipe, EPOCHS fixes the epochs and skips the probe, e.g.
#   RUNS_SPEC="bn_vgg 0;bn_vgg 1;bn_vgg 0 --lr 0.05;bn_vgg 1 --lr 0.05" EPOCHS=200 gpu_recipe.sh D O 400
IFS=";" read -r -a RUNS <<<"${RUNS_SPEC:-bn_vgg_wide 0;bn_vgg_wide 1;bn_vgg 0;bn_vgg 1}"
RECIPE=(--dataset fashion-mnist --data-dir "$DATA" --no-download --batch-size 128 --optimizer nesterov
        --lr 0.1 --weight-decay 5e-4 --schedule onecycle --augment crop,flip,erase --label-smoothing 0.1
        --tta flip,shift --no-progress --json)
[ -n "$QUICK" ] && RECIPE+=(--limit 600)
# shellcheck disable=SC2206
RECIPE+=(${EXTRA:-})

echo "# gpu_recipe.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) budget=${BUDGET}s quick=${QUICK:-0}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$PY" -c 'import jax; print("# jax", jax.__version__, jax.devices())'

train_all() {  # phase, epochs, time limit (s): every run side by side, one JSON line each
  local phase=$1 epochs=$2 limit=$3 pids=() r model seed flags dir
  for r in "${RUNS[@]}"; do
    read -r model seed flags <<<"$r"
    dir=$WORK/$phase/${model}_seed$seed$(printf '%s' "${flags:+_$flags}" | tr -c 'A-Za-z0-9.-' '_')
    mkdir -p "$dir"
    set -f  # the flags are split on spaces but never globbed: --model-args '{"stages":[32,64]}'
    timeout --signal=INT --kill-after=10 "$limit" "$PY" -m fnn train --model "$model" --seed "$seed" \
      --epochs "$epochs" --out "$dir" "${RECIPE[@]}" ${flags:-} >"$dir/stdout" 2>"$dir/stderr" &
    set +f
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
}

if [ -n "${EPOCHS:-}" ]; then
  echo "## main: $EPOCHS epochs (EPOCHS given), at $(elapsed) s"
  train_all main "$EPOCHS" $(( BUDGET - $(elapsed) - 10 ))
else
echo "## probe: 2 epochs, ${#RUNS[@]} runs side by side, at $(elapsed) s"
train_all probe 2 150
# The slowest run's second epoch (the first one includes compilation) plus 10% for validation, and
# the most time a run spent outside training (start, data, compilation, test, plots).
PROBE=$("$PY" - "$WORK/probe" <<'EOF'
import json, pathlib, sys
t, over = [], []
for d in sorted(p for p in pathlib.Path(sys.argv[1]).iterdir() if (p / "history.jsonl").exists()):
    rows = [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]
    print(f"# probe {d.name}: epoch seconds {[round(r['seconds'], 2) for r in rows]}", file=sys.stderr)
    t.append(rows[-1]["seconds"])
    res = [json.loads(line) for line in (d / "stdout").read_text().splitlines() if line.startswith("{")]
    if res:
        over.append(res[-1]["wall_seconds"] - res[-1]["train_seconds"])
print(f"{1.1 * max(t):.3f} {max(over, default=60):.0f}" if t else "")
EOF
)
if [ -z "$PROBE" ]; then
  echo "# the probe trained nothing: see its stderr"; tail -n 20 "$WORK"/probe/*/stderr; exit 1
fi
read -r SLOWEST OVERHEAD <<<"$PROBE"
LEFT=$(( BUDGET - $(elapsed) ))
EPOCHS=$("$PY" -c "print(max(2, min($MAX_EPOCHS, int(($LEFT - $OVERHEAD - 20) / $SLOWEST))))")
[ -n "$QUICK" ] && EPOCHS=2
echo "## main: $EPOCHS epochs (about $SLOWEST s each side by side, $OVERHEAD s outside training, $LEFT s left), at $(elapsed) s"
train_all main "$EPOCHS" $(( LEFT - 10 ))
fi

for d in "$WORK"/main/*/; do
  name=$(basename "$d")
  line=$(grep '^{' "$d/stdout" | tail -n 1)
  if [ -n "$line" ]; then
    echo "$line" | "$PY" -c "import json,sys; r=json.loads(sys.stdin.read()); r['run']='$name'; print(json.dumps(r))" \
      >>"$OUT/results.jsonl"
  else
    echo "# $name: no result (cut short?); last lines of stderr:"; tail -n 5 "$d/stderr"
  fi
  rm -f "$d/checkpoint.fnn"  # the resumable state is 3x the model; model.fnn comes back
done
tar -czf "$OUT/runs.tar.gz" -C "$WORK" main
echo "## done at $(elapsed) s"
cat "$OUT/results.jsonl" 2>/dev/null
