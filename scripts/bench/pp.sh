#!/usr/bin/env bash
# Pipeline step time on real worker processes: PP=1 (one process) against
# PP=4 with the vocabulary layers on the end stages (naive) and spread over
# all stages (vocabulary parallelism), for a model whose vocabulary is large
# next to its width (cl100k_base, 100,277 tokens, dim 512, 8 layers).
#
#   scripts/bench/pp.sh CORPUS [STEPS]
#
# Needs a machine with at least 16 cores to show anything: each PP=4 worker
# gets a quarter of them. TERNCTL overrides the binary. Prints a markdown
# table (median step time over steps 2..STEPS).
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus=${1:?corpus path}
steps=${2:-4}
bin=${TERNCTL:-bin/ternctl}
if [ -z "${TERNCTL:-}" ] && command -v go >/dev/null; then CGO_ENABLED=0 go build -o bin/ ./cmd/ternctl; fi
out=$(mktemp -d)
cores=$(nproc)
common=(--set model.preset=medium --set model.tokenizer=cl100k_base --set data.tokenizer=cl100k_base
  --set model.seqLen=128 --set batch.microBatchSize=1 --set batch.microBatches=8
  --set data.kind=dir --set data.path="$corpus" --set data.include='["*"]' --set data.cacheDir="${CACHE:-$out/cache}"
  --set data.valFraction=0 --set eval.everySteps=0 --set steps="$steps" --set optimizer.warmupSteps=0)
median() { python3 -c "
import json,sys,statistics
xs=[json.loads(l)['step_ms'] for l in open(sys.argv[1])]
print(round(statistics.median(xs[1:] if len(xs)>1 else xs)))" "$1"; }
echo "| layout | processes | GOMAXPROCS each | ms/step | vs PP=1 |"
echo "|---|---:|---:|---:|---:|"
base=""
for r in "PP=1|1|$cores|" "PP=4 naive|4|$((cores/4))|--set parallel.pipeline=4 --set parallel.vocabParallel=false" "PP=4 vocabulary parallel|4|$((cores/4))|--set parallel.pipeline=4"; do
  IFS='|' read -r name procs gmp args <<<"$r"
  # shellcheck disable=SC2086
  GOMAXPROCS=$gmp "$bin" train -f examples/demo.yaml -q -o json "${common[@]}" $args --metrics-out "$out/m.jsonl" > "$out/s.json" 2>"$out/err" || { cat "$out/err"; exit 1; }
  ms=$(median "$out/m.jsonl")
  [ -z "$base" ] && base=$ms
  python3 -c "print(f'| $name | $procs | $gmp | $ms | {$base/$ms:.2f}x |')"
done
