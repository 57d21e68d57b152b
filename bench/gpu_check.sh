#!/usr/bin/env bash
# One command for a GPU machine (issue 9): install, CUDA tests, benchmark, production inference.
#
#   bash bench/gpu_check.sh                      # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --out DIR --budget 480
#   bash bench/gpu_check.sh --dry-run --out DIR  # the same plumbing on the CPU (Triton interpreter,
#                                                # tiny sizes, no install); tests/test_gpu_check.py
#
# Steps, under one wall-clock budget the script enforces itself (default 480 s = 8 minutes):
#   1. pip install --no-build-isolation --no-deps .   (never scripts/setup.sh: it pins torch)
#   2. the CUDA tests, at most 150 s:
#      STRNN_FAST_AUTOTUNE=0 python -P -m pytest -o addopts= -p no:cacheprovider -m cuda tests/test_kernels_cuda.py
#      (-o addopts=: pyproject's addopts name the pytest-benchmark plugin, absent on that machine)
#   3. bench/bench_kernels_gpu.py in priority order (bf16 batch 4096 d=1024, 4096, 256; fp16; fp32;
#      batch 256), then the frozen-model latency, with what is left of the budget.
# Everything lands in --out (default: $OUT if set, else bench/results/gpu), written as it goes:
#   install.log, nvidia-smi.txt, cuda_tests.txt, bench.log, kernels_gpu.json, kernels_gpu.md,
#   gpu_check_summary.txt (one line per step: status and seconds).
set -u -o pipefail

dry_run=0
out="${OUT:-}"
budget=480
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run, --out DIR, --budget SECONDS)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${out:-bench/results/gpu}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$(date +%s)
summary="$out/gpu_check_summary.txt"
: > "$summary"
left() { echo $(( budget - ($(date +%s) - start) )); }
step() {  # step NAME STATUS SECONDS
  echo "$1: $2 (${3} s, $(left) s of ${budget} s left)" | tee -a "$summary"
}

python=python
if [ "$dry_run" = 1 ]; then
  export TRITON_INTERPRET=1
  step install "skipped (dry run: the package under test is the one installed here)" 0
else
  t=$(date +%s)
  if timeout 240 pip install --no-build-isolation --no-deps . > "$out/install.log" 2>&1; then
    step install ok $(( $(date +%s) - t ))
  else
    step install "FAILED, see install.log" $(( $(date +%s) - t ))
    tail -30 "$out/install.log"
    exit 1
  fi
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
fi

# 2. CUDA tests (they skip on a machine without a GPU: the dry run checks the plumbing).
t=$(date +%s)
test_limit=150
if [ "$dry_run" = 1 ]; then test_limit=60; fi
# -v: one line per finished test, so a run killed at the limit still says which passed.
STRNN_FAST_AUTOTUNE=0 timeout "$test_limit" $python -P -m pytest -o addopts= -p no:cacheprovider -m cuda -v -rfEs \
  --durations=10 tests/test_kernels_cuda.py > "$out/cuda_tests.txt" 2>&1
rc=$?
status="ok"
if [ $rc = 124 ]; then status="TIMED OUT after ${test_limit} s"; elif [ $rc != 0 ]; then status="FAILED (exit $rc)"; fi
step cuda_tests "$status: $(tail -1 "$out/cuda_tests.txt")" $(( $(date +%s) - t ))

# 3. Benchmark and inference latency, with what is left (minus a margin to write the summary).
t=$(date +%s)
remaining=$(( $(left) - 10 ))
if [ "$remaining" -lt 30 ]; then
  step bench "skipped: ${remaining} s left" 0
  exit 0
fi
args=(--out "$out" --budget $(( remaining - 15 )))
if [ "$dry_run" = 1 ]; then args+=(--dry-run); fi
timeout "$remaining" $python -P bench/bench_kernels_gpu.py "${args[@]}" > "$out/bench.log" 2>&1
rc=$?
grep -v -i warn "$out/bench.log" | tail -60
status="ok"
if [ $rc = 124 ]; then status="TIMED OUT (partial results kept)"; elif [ $rc != 0 ]; then status="FAILED (exit $rc)"; fi
step bench "$status: $(tail -1 "$out/bench.log")" $(( $(date +%s) - t ))
echo "results in $out"
