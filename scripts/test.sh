#!/usr/bin/env bash
# Sets everything up, then runs the default test suite (slow and CUDA tests deselected).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# -P keeps the source tree off sys.path, so the installed package (with its _C) is tested. The
# tests run on every core (pytest-xdist; one torch thread per worker, see tests/conftest.py);
# STRNN_FAST_TEST_WORKERS=0 runs them in this process, and arguments given here come last, so
# they win.
exec "${PYTHON:-python3}" -P -m pytest -p no:cacheprovider -n "${STRNN_FAST_TEST_WORKERS:-auto}" "$@"
