#!/usr/bin/env bash
# Runs tern's CUDA checks and benchmarks from a bundle built by `make
# gpu-bundle`, on a machine with an NVIDIA GPU (no Go needed).
#
#   run.sh check          GPU facts, library discovery, the gpu-tagged tests
#   run.sh bench          GEMM throughput, tern vs PyTorch training steps
#   run.sh memory         GPU bytes per parameter, AdamW vs Adam-mini
#   run.sh parallel       two pipeline stages on one GPU (and on the CPU to
#                         compare); with two GPUs, two data-parallel workers
#   run.sh all            both
#
# Output also goes to $OUT/gpu-<mode>.log when OUT is set.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-check}
log=/dev/null
if [ -n "${OUT:-}" ]; then log=$OUT/gpu-$mode.log; fi
exec > >(tee -a "$log") 2>&1

for f in "$here"/*.gz; do [ -e "$f" ] && gunzip -f "$f"; done
chmod +x "$here"/ternctl "$here"/worker "$here"/bench "$here"/cuda.test 2>/dev/null || true
status=0

check() {
  echo "== $(date -u +%FT%TZ) GPU"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || status=1
  echo "== CUDA libraries the dynamic linker knows"
  ldconfig -p | grep -E 'libcuda\.so|libnvrtc\.so|libcublas(Lt)?\.so' | head -20
  python3 - <<'PY' 2>/dev/null || true
import glob, site
for sp in site.getsitepackages():
    for d in sorted(glob.glob(sp + "/nvidia/*/lib")):
        libs = [p.rsplit("/", 1)[1] for p in glob.glob(d + "/lib*.so*") if any(k in p for k in ("nvrtc", "cublas"))]
        if libs: print("pip:", d, " ".join(sorted(libs)))
PY
  echo "== gpu-tagged tests"
  "$here"/cuda.test -test.v -test.count=1 -test.timeout 300s || status=1
  echo "== a job through the whole training path on the GPU"
  "$here"/ternctl train -f "$here"/job.yaml || status=1
}

bench() {
  echo "== $(date -u +%FT%TZ) bench"
  "$here"/bench -gemm || status=1
  for p in fp32 tf32; do
    "$here"/bench -preset gpt2-shape -b 4 -t 64 -precision $p -steps 30 || status=1
    python3 "$here"/torch_baseline.py --b 4 --t 64 --precision $p --steps 30 || status=1
  done
  "$here"/bench -preset gpt2-shape -b 16 -t 1024 -precision bf16 -steps 10 || status=1
  "$here"/bench -preset gpt2-shape -b 16 -t 1024 -precision bf16 -steps 10 -optim adam-mini || status=1
  "$here"/bench -preset gpt2-shape -b 16 -t 1024 -precision bf16 -steps 5 -float-attn || status=1
  "$here"/bench -preset gpt2-shape -b 16 -t 1024 -precision bf16 -steps 5 -no-gemm-pad || status=1
  "$here"/bench -head-gemm || status=1
  python3 "$here"/torch_baseline.py --b 16 --t 1024 --precision bf16 --steps 10 || status=1
}

# memory: peak GPU bytes per parameter with AdamW and with Adam-mini, at a
# small batch (mostly weights, gradients and optimizer state) and a large one
memory() {
  echo "== $(date -u +%FT%TZ) memory"
  for o in adamw adam-mini; do
    "$here"/bench -preset gpt2-shape -b 1 -t 64 -precision bf16 -steps 3 -optim $o || status=1
  done
}

parallel() {
  local fp32="--set device.precision=fp32"
  echo "== $(date -u +%FT%TZ) pipeline 2 on GPU 0 (fp32, then bf16), then on the CPU"
  "$here"/ternctl train -f "$here"/job-pp.yaml $fp32 || status=1
  "$here"/ternctl train -f "$here"/job-pp.yaml || status=1
  "$here"/ternctl train -f "$here"/job-pp.yaml --set device.kind=cpu || status=1
  if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    echo "== $(date -u +%FT%TZ) data parallel 2: one worker process per GPU (--gpu), fp32; then on the CPU"
    p0=$((20000 + RANDOM % 20000)); p1=$((p0 + 1)); peers=127.0.0.1:$p0,127.0.0.1:$p1
    TERN_JOB_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n'); export TERN_JOB_TOKEN
    "$here"/worker -f "$here"/job.yaml --rank 0 --world 2 --peers $peers --gpu 0 $fp32 &
    w0=$!
    "$here"/worker -f "$here"/job.yaml --rank 1 --world 2 --peers $peers --gpu 1 $fp32 || status=1
    wait $w0 || status=1
    "$here"/ternctl train -f "$here"/job.yaml --set parallel.data=2 --set device.kind=cpu || status=1
    echo "== $(date -u +%FT%TZ) data parallel 2 through ternctl train with spec.device.gpu auto: each process takes its rank's GPU"
    "$here"/ternctl train -f "$here"/job.yaml --set parallel.data=2 --set steps=400 $fp32 &
    tp=$!
    gpus=0
    for _ in $(seq 1 120); do
      sleep 0.5
      apps=$(nvidia-smi --query-compute-apps=pid,gpu_bus_id --format=csv,noheader 2>/dev/null)
      gpus=$(printf '%s\n' "$apps" | awk -F', ' 'NF == 2 {print $2}' | sort -u | grep -c . || true)
      if [ "$gpus" -ge 2 ]; then printf '%s\n' "$apps"; break; fi
    done
    echo "ranks seen on $gpus distinct GPUs (want 2)"
    [ "$gpus" -ge 2 ] || status=1
    wait $tp || status=1
  fi
}

case $mode in
  check) check ;;
  bench) bench ;;
  memory) memory ;;
  parallel) parallel ;;
  all) check; bench; memory; parallel ;;
  *) echo "usage: run.sh check|bench|memory|parallel|all" >&2; exit 2 ;;
esac
exit $status
