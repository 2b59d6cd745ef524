#!/usr/bin/env bash
# Restore time of a lost rank from the durable checkpoint on local disk,
# to set against the in-memory restores (local copy, peer fragments) that
# `ternctl get jobs -o json` reports for a chaos run (restores[].restore_ms).
# Runs the demo job (small preset, DP=2 x PP=2) with no in-memory step
# ever committed (peer snapshots every 1000 steps: the coordinator then
# restores from the checkpoint and reports each rank's restore time; with
# snapshots off it reports none) and a checkpoint every 5 steps, SIGKILLs the worker of rank 0 after
# step 12, and prints each rank's restore source and time.
#
#   scripts/bench/restore_vs_checkpoint.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${BIN:-bin}
work=$(mktemp -d)
export TERN_HOME=$work/home
trap '"$bin/ternctl" down --dir "$work/cluster" >/dev/null 2>&1 || true' EXIT
"$bin/ternctl" up --dir "$work/cluster" --workers 4 --spares 1 --listen 127.0.0.1:0 --context bench >/dev/null
"$bin/ternctl" apply -f examples/demo.yaml --set metadata.name=ck --set steps=30 --set eval.everySteps=0 \
  --set snapshot.everySteps=1 --set snapshot.peerEverySteps=1000 --set checkpoint.dir="$work/ckpt" --set checkpoint.everySteps=5 >/dev/null
js() { "$bin/ternctl" get jobs ck -o json; }
until [ "$(js | python3 -c "import json,sys; print(json.load(sys.stdin)['committed_step'])")" -ge 12 ]; do sleep 0.5; done
w=$(js | python3 -c "import json,sys; print(json.load(sys.stdin)['ranks'][0]['worker'])")
pid=$(python3 -c "import json,sys; print([p['pid'] for p in json.load(open(sys.argv[1]))['procs'] if p['name']==sys.argv[2]][0])" "$work/cluster/state.json" "$w")
kill -9 "$pid"
echo "killed $w (pid $pid); checkpoint: $(du -sh "$work/ckpt" | cut -f1)"
"$bin/ternctl" wait ck 2>/dev/null || true
js | python3 -c "
import json,sys
j=json.load(sys.stdin)
print('phase', j['phase'])
for r in j['restores']: print('attempt %d rank %d from %s step %d: %.1f ms' % (r['attempt'], r['rank'], r['source'], r['step'], r['restore_ms']))"
