#!/usr/bin/env bash
# Sets everything up in .venv (scripts/setup.sh), adds the test tools, then runs the default test
# suite there (slow and CUDA tests deselected).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${STRNN_FAST_VENV:-.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PIP=("$VENV/bin/python" -m pip install -q)
# The test extra and Triton (its kernels are tested on the CPU in the interpreter; incremental rebuild), then the
# reference implementation (conformance oracle and benchmark baseline) with --no-deps: its own
# deps are ours, plus UMNN, without which its flow module does not import. Its exact pins (e.g.
# torchdiffeq==0.2.3) are deliberately not honoured, so pip's conflict report is silenced here.
"${PIP[@]}" --no-warn-conflicts --no-build-isolation ".[test,gpu,frames]" -Cbuild-dir=build/venv
"${PIP[@]}" --no-deps "strnn==0.2.0" "UMNN==1.71"
# -P keeps the source tree off sys.path, so the installed package (with its _C) is tested. The
# tests run on every core (pytest-xdist; one torch thread per worker, see tests/conftest.py);
# STRNN_FAST_TEST_WORKERS=0 runs them in this process, and arguments given here come last, so
# they win.
exec "$VENV/bin/python" -P -m pytest -p no:cacheprovider -n "${STRNN_FAST_TEST_WORKERS:-auto}" "$@"
