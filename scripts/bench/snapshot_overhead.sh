#!/usr/bin/env bash
# In-memory snapshot overhead on a real local cluster: the demo job (small
# preset, DP=2 x PP=2, 4 worker processes, one rank each) run with
# snapshots off, with the local copy only, with the defaults (local copy
# every step, Reed-Solomon fragments to peers every 10 steps) and with
# fragments every step (to measure the bytes a peer snapshot sends).
#
#   scripts/bench/snapshot_overhead.sh [STEPS]
#
# For each it reports the job's median step time (coordinator summary),
# the workers' CPU time per step (utime+stime of the 4 worker processes,
# /proc/PID/stat) and bytes written per worker per step (wchar of
# /proc/PID/io: every write and send, sockets included, so gradient
# exchange and logs too: compare between rows). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-40}
bin=${BIN:-bin}
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'TERN_HOME=$work/home "$bin/ternctl" down --dir "$work/cluster" >/dev/null 2>&1 || true' EXIT
export TERN_HOME=$work/home
echo "| snapshots | median step (ms) | vs off | worker CPU s/step (4 workers) | MB written per worker per step |"
echo "|---|---:|---:|---:|---:|"
base=""
for cfg in "off:snapshot.everySteps=0:snapshot.peerEverySteps=0" \
           "local copy every step:snapshot.everySteps=1:snapshot.peerEverySteps=0" \
           "defaults (local every step, peers every 10):snapshot.everySteps=1:snapshot.peerEverySteps=10" \
           "local and peers every step:snapshot.everySteps=1:snapshot.peerEverySteps=1"; do
  IFS=: read -r name s1 s2 <<<"$cfg"
  "$bin/ternctl" up --dir "$work/cluster" --workers 4 --listen 127.0.0.1:0 --context bench >/dev/null
  pids=$(python3 -c "import json,sys; print(' '.join(str(p['pid']) for p in json.load(open(sys.argv[1]))['procs'] if p['role']!='coordinator'))" "$work/cluster/state.json")
  "$bin/ternctl" apply -f examples/demo.yaml --set metadata.name=ovh --set steps="$steps" --set eval.everySteps=0 \
    --set checkpoint.everySteps=0 --set "$s1" --set "$s2" >/dev/null
  # Count from step 5 on: start-up (reading and caching the corpus) is
  # the same in every row and not per step.
  until [ "$("$bin/ternctl" get jobs ovh -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['committed_step'])")" -ge 5 ]; do sleep 0.5; done
  sample() { local c=0 w=0 u s; for p in $pids; do
      read -r u s < <(awk '{print $14, $15}' /proc/$p/stat); c=$((c + u + s))
      w=$((w + $(awk '/^wchar/{print $2}' /proc/$p/io))); done; echo "$c $w"; }
  read -r cpu0 w0 < <(sample)
  s0=$("$bin/ternctl" get jobs ovh -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['committed_step'])")
  "$bin/ternctl" wait ovh 2>/dev/null
  read -r cpu1 w1 < <(sample)
  cpu=$((cpu1 - cpu0)); wchar=$((w1 - w0)); n=$((steps - s0))
  ms=$("$bin/ternctl" get jobs ovh -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['summary']['step_ms_median'])")
  [ -z "$base" ] && base=$ms
  python3 - "$name" "$ms" "$base" "$cpu" "$tick" "$n" "$wchar" <<'PY'
import sys
name, ms, base, cpu, tick, steps, wchar = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
print(f"| {name} | {ms:.0f} | {100*(ms/base-1):+.1f}% | {cpu/tick/steps:.3f} | {wchar/4/steps/1e6:.2f} |")
PY
  "$bin/ternctl" down --dir "$work/cluster" >/dev/null
done
