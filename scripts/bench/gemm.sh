#!/usr/bin/env bash
# Prints the GEMM throughput table (markdown) for asm, go and openblas at
# GOMAXPROCS 1 and 2. Extra arguments go to the Go driver, e.g.
#   scripts/bench/gemm.sh -reps 3 -mintime 500ms -layout tn
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "command: scripts/bench/gemm.sh $*"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(go env GOVERSION)"
echo
exec go run ./scripts/bench/gemm "$@"
