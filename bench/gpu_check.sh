#!/usr/bin/env bash
# One command for a GPU machine (issues 9 and 20): install, CUDA tests, benchmark, production inference.
#
#   bash bench/gpu_check.sh                      # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --out DIR --budget 480 --export-budget 120
#   bash bench/gpu_check.sh --dry-run --out DIR  # the same plumbing on the CPU (Triton interpreter,
#                                                # tiny sizes, no install); tests/test_gpu_check.py
#
# The interpreter is ${PYTHON:-python3} (the GPU machine has python3 only, no `python`, no `pip`,
# no package registry). Steps, under one wall-clock budget the script enforces itself (default 480 s):
#   1. $PYTHON -m pip install --no-index --no-build-isolation --no-deps .  (never scripts/setup.sh)
#   2. the CUDA tests, at most 150 s, in priority order (bf16 forward/backward correctness, then
#      fp16/tf32/fp32, compile, frozen; tests/test_kernels_cuda.py), so a cut loses the least:
#      STRNN_FAST_AUTOTUNE=0 $PYTHON -P -m pytest -o addopts= -p no:cacheprovider -m cuda tests/test_kernels_cuda.py
#      (-o addopts=: pyproject's addopts name the pytest-benchmark plugin, absent on that machine)
#   3. bench/bench_kernels_gpu.py in priority order (bf16 batch 4096 d=1024, 4096, 256; fp16; fp32;
#      batch 256), then the frozen-model latency, with what is left of the budget minus the export's
#      share. It exits non-zero, its last line saying "FAILED: n of m ...", when a point has a kernel
#      error or no Triton time.
#   4. bench/gpu_export_check.py (issue 22), with the --export-budget seconds kept for it (default
#      120; 0 skips it): a StrAF log_prob exported with device="cuda" to an AOTInductor .pt2, loaded
#      by torch._inductor.aoti_load_package in a python3 -I subprocess that cannot import strnn_fast,
#      compared with eager at batch 1 and 4096 (rtol = atol = 1e-4) and timed (do_bench medians),
#      the package checked for the Triton forward kernel. Its JSON goes to gpu_check.log and to
#      the summary's export line. The dry run exports a tiny model for the CPU (plumbing only).
# Triton's cache is its own ($TRITON_CACHE_DIR, else ~/.triton/cache): an sm_90a cache built ahead
# on CPU is not shipped, bench/results/gpu_stack.md says why.
# Everything lands in --out (default: $OUT if set, else bench/results/gpu), at most 6 files, written
# as they go (the GPU machine returns at most 8; a kill leaves no temporary file behind):
#   gpu_check.log (install, nvidia-smi, benchmark and export output), cuda_tests.txt, kernels_gpu.json,
#   kernels_gpu.md, dispatch_decisions.json, gpu_check_summary.txt (one line per step).
# The exit status is 0 only when every step passed.
set -u -o pipefail

dry_run=0
out="${OUT:-}"
budget=480
export_budget=120
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    --budget) budget="$2"; shift ;;
    --export-budget) export_budget="$2"; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (expected --dry-run, --out DIR, --budget SECONDS," \
            "--export-budget SECONDS)" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! command -v "$python" > /dev/null; then
  echo "gpu_check.sh: no interpreter '$python' (set PYTHON)" >&2
  exit 2
fi
out="${out:-bench/results/gpu}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
start=$(date +%s)
summary="$out/gpu_check_summary.txt"
log="$out/gpu_check.log"
: > "$summary"
: > "$log"
failed=0
cleanup() {  # on every exit, kill included: no temporary file may take one of the returned slots
  rm -f "$out"/*.tmp
}
trap cleanup EXIT
trap 'echo "gpu_check: interrupted" | tee -a "$summary"; exit 130' INT TERM
left() { echo $(( budget - ($(date +%s) - start) )); }
step() {  # step NAME STATUS SECONDS
  echo "$1: $2 (${3} s, $(left) s of ${budget} s left)" | tee -a "$summary"
}

if [ "$dry_run" = 1 ]; then
  export TRITON_INTERPRET=1
  step install "skipped (dry run: the package under test is the one installed for $python)" 0
else
  t=$(date +%s)
  echo "== install" >> "$log"
  if timeout 240 "$python" -m pip install --no-index --no-build-isolation --no-deps . >> "$log" 2>&1; then
    step install ok $(( $(date +%s) - t ))
  else
    step install "FAILED, see gpu_check.log" $(( $(date +%s) - t ))
    tail -30 "$log"
    exit 1
  fi
  { echo "== nvidia-smi"; nvidia-smi 2>&1; } >> "$log" || true
fi
"$python" -c 'import sys, numpy, torch, triton; print("versions: python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, "triton", triton.__version__)' 2>&1 | tee -a "$log" "$summary"

# 2. CUDA tests (they skip on a machine without a GPU: the dry run checks the plumbing).
t=$(date +%s)
test_limit=150
if [ "$dry_run" = 1 ]; then test_limit=60; fi
# -v: one line per finished test, so a run killed at the limit still says which passed.
STRNN_FAST_AUTOTUNE=0 timeout "$test_limit" "$python" -P -m pytest -o addopts= -p no:cacheprovider -m cuda -v -rfEs \
  --durations=10 tests/test_kernels_cuda.py > "$out/cuda_tests.txt" 2>&1
rc=$?
status="ok"
if [ $rc = 124 ]; then status="TIMED OUT after ${test_limit} s"; elif [ $rc != 0 ]; then status="FAILED (exit $rc)"; fi
if [ "$status" != ok ]; then failed=1; fi
step cuda_tests "$status: $(tail -1 "$out/cuda_tests.txt")" $(( $(date +%s) - t ))

# 3. Benchmark and inference latency, with what is left (minus a margin to write the summary and
# the export step's share; skipped when under 30 s remain, the export still runs).
t=$(date +%s)
remaining=$(( $(left) - 10 - export_budget ))
if [ "$remaining" -lt 30 ]; then
  step bench "FAILED: skipped, ${remaining} s left" 0
  failed=1
else
  args=(--out "$out" --budget $(( remaining - 15 )))
  if [ "$dry_run" = 1 ]; then args+=(--dry-run); fi
  echo "== bench" >> "$log"
  blog_start=$(wc -l < "$log")
  timeout "$remaining" "$python" -P bench/bench_kernels_gpu.py "${args[@]}" >> "$log" 2>&1
  rc=$?
  tail -n +"$(( blog_start + 1 ))" "$log" | grep -v -i warn | tail -60
  status="ok"
  if [ $rc = 124 ]; then status="TIMED OUT (partial results kept)"; elif [ $rc != 0 ]; then status="FAILED (exit $rc)"; fi
  if [ "$status" != ok ]; then failed=1; fi
  step bench "$status: $(tail -1 "$log")" $(( $(date +%s) - t ))
fi

# 4. Export to an AOTInductor package with the Triton kernels (issue 22), with what is left.
if [ "$export_budget" -gt 0 ]; then
  t=$(date +%s)
  limit=$(( $(left) - 5 ))
  echo "== export" >> "$log"
  export_args=()
  if [ "$dry_run" = 1 ]; then export_args+=(--dry-run); fi
  if [ "$limit" -lt 30 ]; then
    step export "FAILED: skipped, ${limit} s left" 0
    failed=1
  else
    timeout "$limit" "$python" -P bench/gpu_export_check.py ${export_args[@]+"${export_args[@]}"} > "$out/export.tmp" 2>&1
    rc=$?
    cat "$out/export.tmp" >> "$log"
    result="$(tail -1 "$out/export.tmp")"
    rm -f "$out/export.tmp"
    status="ok"
    if [ $rc = 124 ]; then status="TIMED OUT after ${limit} s"; elif [ $rc != 0 ]; then status="FAILED (exit $rc)"; fi
    if [ "$status" != ok ]; then failed=1; fi
    step export "$status: $result" $(( $(date +%s) - t ))
  fi
fi
echo "results in $out"
exit $failed
