#!/usr/bin/env bash
# Installs strnn_fast and everything its tests and benchmarks need, on a fresh machine.
# torch is pinned first: a bare `torch` requirement with no torch installed pulls several GB of
# CUDA wheels, while with 2.13.0 present pip treats the package's `torch>=2.1` as satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PY=${PYTHON:-python3}
$PY -m pip install -q "torch==2.13.0"
# This package first, then the reference implementation (conformance oracle and benchmark baseline)
# with --no-deps: its own deps are ours, plus UMNN, without which its flow module does not import.
# Its exact pins (e.g. torchdiffeq==0.2.3) are deliberately not honoured, so pip's conflict report
# would print an ERROR line for them on every rerun; it is silenced here and `pip check` reports
# any other conflict instead.
$PY -m pip install -q --no-warn-conflicts ".[test,gpu,frames]"
$PY -m pip install -q --no-deps "strnn==0.2.0" "UMNN==1.71"
$PY -m pip check 2>/dev/null | grep -v -i -E "^(strnn|umnn) " || true
# pyenv only sees the new `strnn-fast` console script after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
