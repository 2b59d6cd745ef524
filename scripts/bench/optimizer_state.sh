#!/usr/bin/env bash
# Optimizer state per parameter from `ternctl plan` (the exact accounting that
# the tests hold equal to each optimizer's StateBytes), on the gpt2-shape
# preset and a 1.4B LLaMA shape (dim 2048, 24 layers, 16 heads, ffn 5504,
# GPT-2 vocabulary), at the papers' ranks and at d/8. Nothing is allocated.
set -euo pipefail
cd "$(dirname "$0")/../.."
CGO_ENABLED=0 go build -o bin/ ./cmd/ternctl
B=bin/ternctl
base=(-f examples/demo.yaml --set data.tokenizer=gpt2 --set model.seqLen=64 --set batch.microBatchSize=4 -o json)
gpt2=(--set model.preset=gpt2-shape)
big=(--set model.preset=gpt2-shape --set model.dim=2048 --set model.layers=24 --set model.heads=16 --set model.kvHeads=16 --set model.ffn=5504)
row() { # label model-args... -- optimizer-args...
  local label=$1; shift
  local j; j=$($B plan "${base[@]}" "$@" 2>/dev/null) || { echo "| $label | error |"; return; }
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print('| %s | %d | %s | %.3f |' % (sys.argv[2], d['params'], format(d['optimizer_bytes'],','), d['optimizer_bytes']/d['params']))" "$j" "$label"
}
for m in gpt2 big; do
  if [ $m = gpt2 ]; then M=("${gpt2[@]}"); r8a=96; else M=("${big[@]}"); r8a=256; fi
  echo "### $m"
  echo "| optimizer | params | state bytes | B/param (whole model) |"
  echo "|---|---:|---:|---:|"
  row "adamw" "${M[@]}"
  row "adafactor" "${M[@]}" --set optimizer.name=adafactor --set optimizer.weightDecay=0
  row "came" "${M[@]}" --set optimizer.name=came
  row "adam-mini" "${M[@]}" --set optimizer.name=adam-mini
  row "microadam (1%, m=10)" "${M[@]}" --set optimizer.name=microadam
  for r in $(printf "%s\n" 128 256 512 $r8a | sort -un); do
    row "galore r=$r" "${M[@]}" --set optimizer.name=galore --set optimizer.galore.rank=$r
    row "apollo r=$r" "${M[@]}" --set optimizer.name=apollo --set optimizer.apollo.rank=$r
  done
  row "apollo-mini (r=1)" "${M[@]}" --set optimizer.name=apollo-mini
  row "grass r=$r8a (d/8)" "${M[@]}" --set optimizer.name=grass --set optimizer.grass.rank=$r8a
done
