#!/usr/bin/env bash
# Builds the documentation site (docs/_build/html) from .venv, warnings as errors; the tutorials
# run during the build. Run scripts/setup.sh first (CI: .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${STRNN_FAST_VENV:-.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$VENV/bin/python" -m pip install -q --no-build-isolation ".[docs]" -Cbuild-dir=build/venv
cd docs && OMP_NUM_THREADS=1 "../$VENV/bin/python" -P -m sphinx -W --keep-going -b html . _build/html
