#!/usr/bin/env bash
# Convergence sweep: the demo job (small preset, Go source tree, byte
# tokenizer) trained with each optimizer for the same steps, seed and data.
# Prints a markdown table: final train and eval loss, eval loss relative to
# AdamW, optimizer state bytes (and per parameter) and median step time.
#
#   scripts/bench/optimizers.sh [STEPS] [optimizer=lr ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-450}
shift || true
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  # Peak learning rates: the demo's 3e-3 for the Adam family; 1e-2 for the
  # projection optimizers, as their papers use for small LLaMA models.
  runs=(adamw=3e-3 adafactor=3e-3 came=3e-3 adam-mini=3e-3 galore=1e-2 apollo=1e-2 apollo-mini=1e-2 microadam=3e-3 grass=1e-2)
fi
CGO_ENABLED=0 go build -o bin/ ./cmd/ternctl
out=$(mktemp -d)
echo "| optimizer | lr | train loss | eval loss | eval / adamw | state bytes | B/param | ms/step |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
base=""
for r in "${runs[@]}"; do
  name=${r%%=*}; lr=${r#*=}
  bin/ternctl train -f examples/demo.yaml -q -o json --set steps="$steps" \
    --set optimizer.name="$name" --set optimizer.lr="$lr" --set optimizer.minLR=0 \
    --set eval.everySteps="$steps" > "$out/$name.json"
  python3 - "$out/$name.json" "$name" "$lr" "${base}" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); name, lr, base = sys.argv[2], sys.argv[3], sys.argv[4]
ev = d["final_eval_loss"]; ratio = ev / float(base) if base else 1.0
print(f"| {name} | {lr} | {d['final_loss']:.4f} | {ev:.4f} | {ratio:.3f} | {d['optimizer_state_bytes']:,} | {d['optimizer_state_bytes']/d['params']:.2f} | {d['step_ms_median']:.0f} |")
PY
  if [ -z "$base" ]; then base=$(python3 -c "import json;print(json.load(open('$out/$name.json'))['final_eval_loss'])"); fi
done
