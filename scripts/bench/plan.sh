#!/usr/bin/env bash
# Memory plan check: for each case, `ternctl plan -o json` predicts the peak
# RSS of the job and `ternctl train -o json` runs it for a few steps and
# reports the measured peak (VmHWM). Prints a markdown table of predicted vs
# measured and the relative error; the plan aims to be within 10%.
#
# Cases are preset:optimizer:seqLen:microBatchSize. The byte-tokenizer
# presets read $GOROOT/src/net/http with the byte tokenizer (so the data line
# is estimated from file sizes); gpt2-shape reads it with the gpt2 tokenizer,
# as scripts/bench/step.sh does (the data line is then unknown, ~2 MiB). Runs
# go one at a time, so each has the machine to itself.
#
#   scripts/bench/plan.sh [STEPS] [preset:optimizer:seqLen:batch ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-3}
shift || true
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then
  cases=(tiny:adamw:64:8 small:adamw:256:4 small:apollo-mini:256:4 small:grass:256:4
    gpt2-shape:adamw:64:4 gpt2-shape:apollo-mini:64:4 gpt2-shape:grass:64:4)
fi
CGO_ENABLED=0 go build -o bin/ ./cmd/ternctl
goroot=$(go env GOROOT)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, GOMAXPROCS=${GOMAXPROCS:-$(nproc)}, $steps steps" >&2
echo "| preset | optimizer | seq x batch | params | state | activations+ws | runtime | predicted | measured peak RSS | error |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
for c in "${cases[@]}"; do
  IFS=: read -r preset opt seq batch <<<"$c"
  tok=byte
  [ "$preset" = gpt2-shape ] || [ "$preset" = medium ] && tok=gpt2
  job="$out/$preset-$opt.yaml"
  cat > "$job" <<YAML
apiVersion: tern/v1
kind: TrainingJob
metadata: {name: plan-$preset-$opt}
spec:
  seed: 1
  steps: $steps
  model: {preset: $preset, seqLen: $seq}
  data: {kind: dir, path: $goroot/src/net/http, include: ["*.go"], tokenizer: $tok}
  batch: {microBatchSize: $batch, microBatches: 1}
  optimizer: {name: $opt, lr: 3.0e-4, warmupSteps: 1, schedule: cosine, clipNorm: 1.0}
  eval: {everySteps: 0}
YAML
  bin/ternctl plan -f "$job" -o json > "$out/plan.json"
  bin/ternctl train -f "$job" -q -o json > "$out/train.json" 2>/dev/null
  jq -r -n --slurpfile p "$out/plan.json" --slurpfile t "$out/train.json" \
    --arg c "$preset | $opt | $seq x $batch" '
    def mib: . / 1048576 | . * 10 | round / 10 | tostring + " MiB";
    $p[0] as $p | $t[0] as $t |
    "| \($c) | \($p.params) | \($p.optimizer_bytes | mib) | \($p.activations_bytes + $p.workspace_bytes | mib) | \($p.runtime_bytes | mib) | \($p.total_bytes | mib) | \($t.peak_rss_bytes | mib) | \(($p.total_bytes - $t.peak_rss_bytes) / $t.peak_rss_bytes * 1000 | round / 10)% |"'
done
