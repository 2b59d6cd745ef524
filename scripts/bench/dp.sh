#!/usr/bin/env bash
# Data-parallel benchmarks with local worker processes (ternctl train with
# parallel.data > 1, workers over gRPC on loopback).
#
#   scripts/bench/dp.sh bytes CORPUS   # bytes per worker per step at DP=4, gpt2-shape
#   scripts/bench/dp.sh loss CORPUS [STEPS]  # dense AdamW vs DeMo vs GRASS, small preset, DP=4
#
# CORPUS is a text file or directory (kind dir). TERNCTL overrides the binary
# (default bin/ternctl, built here when Go is present). Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?usage: dp.sh bytes|loss CORPUS [STEPS]}
corpus=${2:?corpus path}
steps=${3:-300}
bin=${TERNCTL:-bin/ternctl}
if [ -z "${TERNCTL:-}" ] && command -v go >/dev/null; then CGO_ENABLED=0 go build -o bin/ ./cmd/ternctl; fi
out=$(mktemp -d)
cache=${CACHE:-$out/cache}

median() { python3 -c "
import json,sys,statistics
xs=[json.loads(l)[sys.argv[2]] for l in open(sys.argv[1])]
print(int(statistics.median(xs[1:] if len(xs)>1 else xs)))" "$@"; }

if [ "$mode" = bytes ]; then
  common=(--set model.preset=gpt2-shape --set model.tokenizer=gpt2 --set data.tokenizer=gpt2 --set model.seqLen=64 --set batch.microBatchSize=4 --set parallel.data=4
    --set data.kind=dir --set data.path="$corpus" --set data.include='["*"]' --set data.cacheDir="$cache"
    --set data.valFraction=0 --set eval.everySteps=0 --set steps=4 --set optimizer.warmupSteps=0)
  runs=(
    "dense fp32|--set communication.exchange=dense"
    "dense bf16|--set communication.exchange=bf16"
    "DeMo k=32 bf16|--set optimizer.name=demo --set optimizer.demo.topK=32 --set optimizer.demo.values=bf16"
    "DeMo k=8 1-bit|--set optimizer.name=demo --set optimizer.demo.topK=8 --set optimizer.demo.values=sign"
    "GRASS r=128|--set optimizer.name=grass --set optimizer.grass.rank=128"
  )
  echo "| exchange | sent B/step | recv B/step | payload sent | formula (payload) | vs dense fp32 | ms/step |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  base=""
  for r in "${runs[@]}"; do
    name=${r%%|*}; args=${r#*|}
    # shellcheck disable=SC2086
    "$bin" train -f examples/demo.yaml -q -o json "${common[@]}" $args --metrics-out "$out/m.jsonl" > "$out/s.json" 2>"$out/err" || { cat "$out/err"; exit 1; }
    sent=$(median "$out/m.jsonl" bytes_sent); recv=$(median "$out/m.jsonl" bytes_recv)
    pay=$(median "$out/m.jsonl" payload_sent); ms=$(median "$out/m.jsonl" step_ms)
    [ -z "$base" ] && base=$sent
    formula=$(python3 scripts/bench/dp_formula.py "$name")
    python3 -c "print(f'| $name | {$sent:,} | {$recv:,} | {$pay:,} | {$formula:,} | {$base/$sent:.1f}x | $ms |')"
  done
else
  common=(--set parallel.data=4 --set data.kind=dir --set data.path="$corpus" --set data.include='["*"]'
    --set data.cacheDir="$cache" --set steps="$steps" --set eval.everySteps="$steps" --set optimizer.minLR=0)
  runs=(
    "adamw dense|--set optimizer.name=adamw --set optimizer.lr=3e-3"
    "demo k=32 bf16|--set optimizer.name=demo --set optimizer.lr=1e-3"
    "demo k=32 bf16|--set optimizer.name=demo --set optimizer.lr=3e-3"
    "demo k=8 sign|--set optimizer.name=demo --set optimizer.lr=1e-3 --set optimizer.demo.topK=8 --set optimizer.demo.values=sign"
    "demo k=8 sign|--set optimizer.name=demo --set optimizer.lr=3e-3 --set optimizer.demo.topK=8 --set optimizer.demo.values=sign"
    "grass r=128|--set optimizer.name=grass --set optimizer.lr=1e-2"
  )
  echo "| run | lr | train loss | eval loss | eval / dense | sent B/step | ms/step |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  base=""
  for r in "${runs[@]}"; do
    name=${r%%|*}; args=${r#*|}
    # shellcheck disable=SC2086
    "$bin" train -f examples/demo.yaml -q -o json "${common[@]}" $args --metrics-out "$out/m.jsonl" > "$out/s.json" 2>"$out/err" || { cat "$out/err"; exit 1; }
    python3 - "$out/s.json" "$name" "$base" "$(median "$out/m.jsonl" bytes_sent)" "$args" <<'PY'
import json, sys, re
d = json.load(open(sys.argv[1])); name, base, sent, args = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
lr = re.search(r"optimizer.lr=(\S+)", args).group(1)
ev = d["final_eval_loss"]; ratio = ev / float(base) if base else 1.0
print(f"| {name} | {lr} | {d['final_loss']:.4f} | {ev:.4f} | {ratio:.3f} | {sent:,} | {d['step_ms_median']:.0f} |")
PY
    [ -z "$base" ] && base=$(python3 -c "import json;print(json.load(open('$out/s.json'))['final_eval_loss'])")
  done
fi
