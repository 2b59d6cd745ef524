#!/usr/bin/env bash
# Training-step benchmark: the gpt2-shape preset (GPT-2 124M's per-token FLOPs,
# 162M parameters untied) at microbatch 4 x seq 64 with AdamW, the shape of
# llm.c's CPU anchor (about 7.3 s/step on 2 cores). Prints the run summary as
# JSON: step_ms_median, tokens_per_s, model_gflop_per_s, peak RSS and the
# memory breakdown.
#
#   scripts/bench/step.sh [STEPS] [extra ternctl flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-8}
shift || true
CGO_ENABLED=0 go build -o bin/ ./cmd/ternctl
goroot=$(go env GOROOT)
cat > /tmp/tern-bench-step.yaml <<YAML
apiVersion: tern/v1
kind: TrainingJob
metadata: {name: bench-step}
spec:
  seed: 1
  steps: $steps
  model: {preset: gpt2-shape, seqLen: 64}
  data: {kind: dir, path: $goroot/src/net/http, include: ["*.go"], tokenizer: gpt2}
  batch: {microBatchSize: 4, microBatches: 1}
  optimizer: {name: adamw, lr: 3.0e-4, warmupSteps: 2, schedule: cosine, weightDecay: 0.1, clipNorm: 1.0}
  eval: {everySteps: 0}
YAML
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, GOMAXPROCS=${GOMAXPROCS:-$(nproc)}, gemm=${TERN_GEMM:-default}" >&2
bin/ternctl train -f /tmp/tern-bench-step.yaml -o json "$@"
