#!/usr/bin/env bash
# Sets everything up, then runs the default test suite (slow and CUDA tests deselected).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# -P keeps the source tree off sys.path, so the installed package (with its _C) is tested.
exec "${PYTHON:-python3}" -P -m pytest -p no:cacheprovider "$@"
