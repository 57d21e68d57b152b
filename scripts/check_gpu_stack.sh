#!/usr/bin/env bash
# The GPU path against the GPU machine's own versions, on a CPU (issue 20).
#
#   bash scripts/check_gpu_stack.sh            # full: Python 3.12, torch 2.11, Triton 3.6, numpy >= 2.4
#   bash scripts/check_gpu_stack.sh --light    # CI (.ci/run): Triton 3.6 next to the torch of $PYTHON
#
# The GPU machine (bench/gpu_check.sh) has Python 3.12 as python3, torch 2.11.0+cu130 with its
# Triton 3.6.0, numpy 2.5 and no package registry; CI and the development machines have torch
# 2.13 and Triton 3.9. The environment is built once in a cache folder outside the repository and
# reused: ${STRNN_FAST_STACK_CACHE:-$HOME/.cache/strnn_fast/gpu-stack}/<env>, with the package's
# build folder beside it (incremental rebuilds). torch 2.11 on PyPI is the CUDA build (about 4 GB
# with its nvidia-* wheels); it imports without a GPU. In it, this runs:
#   1. the ahead-of-time sm_90a/sm_80 compile test (tests/test_kernels_compile.py, Triton's ptxas);
#   2. the kernel interpreter tests, fullgraph torch.compile of every backend included
#      (tests/test_kernels_interp.py), the forward triton_op traced for CUDA and decomposed into its
#      kernel (tests/test_triton_op.py), and the C++ CPU kernels' torch ops (tests/test_csr_ops.py);
#   3. bash bench/gpu_check.sh --dry-run, whose benchmark must report interpreted Triton times.
# Every step runs; the exit status is non-zero when any failed. The full environment's Python is
# the first found of $STACK_PYTHON, python3.12 on PATH, a pyenv 3.12, `uv python find 3.12`, else
# python3 (said in the output: the GPU machine's 3.12 is then not what was checked). The light one
# (about 1-2 minutes with cached wheels) uses CI's Python and pins the torch version it has.
set -u -o pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

mode=full
case "${1:-}" in
  "") ;;
  --light) mode=light ;;
  -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
  *) echo "check_gpu_stack.sh: unknown argument $1 (expected --light)" >&2; exit 2 ;;
esac
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
cache="${STRNN_FAST_STACK_CACHE:-$HOME/.cache/strnn_fast/gpu-stack}"
mkdir -p "$cache"

# The GPU machine's versions; the build tools pip needs for --no-build-isolation.
TRITON="triton==3.6.0"
BUILD_TOOLS=("scikit-build-core>=0.10" "pybind11>=2.12")
if [ "$mode" = full ]; then
  env_name="torch2.11-py3.12"
  # numpy: the GPU machine has 2.5; >= 2.4 is what breaks int() of 1-element arrays.
  requirements=("torch==2.11.0" "$TRITON" "numpy>=2.4" scipy networkx tqdm torchdiffeq pytest pandas cmake ninja
                "${BUILD_TOOLS[@]}")
  is312() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2> /dev/null; }
  base="${STACK_PYTHON:-}"
  if ! is312 "$base"; then base="$(command -v python3.12 || true)"; fi  # may be a pyenv shim that refuses
  if ! is312 "$base" && command -v pyenv > /dev/null; then
    v="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | tail -1)"
    base="$(pyenv root)/versions/$v/bin/python3"
  fi
  if ! is312 "$base" && command -v uv > /dev/null; then base="$(uv python find 3.12 2>/dev/null || true)"; fi
  if ! is312 "$base"; then
    base="$(command -v python3)"
    echo "check_gpu_stack: no Python 3.12 found; using $base (the GPU machine runs 3.12)" >&2
  fi
  venv_args=()
else
  env_name="triton3.6-ci"
  # CI's Python and the torch it has (however scripts/setup.sh installed it: $PYTHON, the project's
  # .venv, else python3), in a venv of its own with Triton 3.6 instead of torch's Triton 3.9.
  base="${PYTHON:-}"
  if [ -z "$base" ] && [ -x .venv/bin/python ]; then base=.venv/bin/python; fi
  base="$(command -v "${base:-python3}")"
  ci_torch="$("$base" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 2.13.0)"
  requirements=("torch==$ci_torch" "$TRITON" "numpy>=2.4" scipy networkx tqdm torchdiffeq pytest pytest-xdist
                "${BUILD_TOOLS[@]}")
  venv_args=()
fi
base="$("$base" -c 'import sys; print(sys.executable)')" || exit 1  # past pyenv's shims
venv="$cache/$env_name"
py="$venv/bin/python"
stamp="$venv/.requirements"
want="$("$base" -c 'import sys; print(sys.version)' | head -1) ${venv_args[*]} ${requirements[*]}"

start=$(date +%s)
failed=()
run_step() {  # run_step NAME COMMAND...: runs, times and records one step; never stops the script
  local name="$1" t rc
  shift
  t=$(date +%s)
  echo "== $name: $*"
  "$@"
  rc=$?
  echo "== $name: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") ($(( $(date +%s) - t )) s)"
  if [ $rc != 0 ]; then failed+=("$name"); fi
  return 0
}

if [ ! -x "$py" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== environment: building $venv from $base (once; reused while $stamp matches)"
  rm -rf "$venv"
  "$base" -m venv "${venv_args[@]}" "$venv" || exit 1
  "$py" -m pip install -q "${requirements[@]}" || { echo "check_gpu_stack: pip install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "== environment $venv ($(( $(date +%s) - start )) s)"
"$py" -c 'import sys, numpy, torch, triton; print("versions: python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__, "triton", triton.__version__)' || exit 1
run_step install "$py" -m pip install -q --no-build-isolation --no-deps . -Cbuild-dir="$cache/build/$env_name"
if [[ " ${failed[*]} " == *" install "* ]]; then exit 1; fi

# -o addopts=: the full environment has no pytest-benchmark (as on the GPU machine); -n when
# pytest-xdist is there (CI), serial otherwise. Run from the repository root with -P: the
# installed package is tested, not the source tree.
workers=()
if "$py" -c 'import xdist' 2> /dev/null; then workers=(-n "${STRNN_FAST_TEST_WORKERS:-auto}"); fi
pytest=("$py" -P -m pytest -o addopts= -p no:cacheprovider -q -m "not cuda" "${workers[@]}")
run_step compile_test "${pytest[@]}" tests/test_kernels_compile.py
run_step interpreter_tests "${pytest[@]}" tests/test_kernels_interp.py tests/test_triton_op.py tests/test_csr_ops.py
dry="$(mktemp -d "${TMPDIR:-/tmp}/gpu_stack_dry.XXXXXX")"
trap 'rm -rf "$dry"' EXIT
run_step dry_run env PYTHON="$py" bash bench/gpu_check.sh --dry-run --out "$dry"

echo "check_gpu_stack ($mode, $env_name): $(( $(date +%s) - start )) s"
if [ ${#failed[@]} != 0 ]; then
  echo "check_gpu_stack: FAILED: ${failed[*]}"
  exit 1
fi
echo "check_gpu_stack: ok"
