#!/usr/bin/env bash
# Sets strnn_fast up in a project venv (.venv) and leaves the system Python untouched: every pip
# call below is the venv's own pip. torch is installed only when the venv has none (a torch you
# put there yourself, e.g. a CUDA build, is kept): the CPU wheel without a GPU, the default
# (CUDA) wheel where nvidia-smi sees one; Triton (~1 GB) only where CUDA is present.
# STRNN_FAST_VENV picks another venv folder; PYTHON the interpreter that creates it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
VENV=${STRNN_FAST_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then CUDA=1; else CUDA=0; fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ "$CUDA" = 1 ]; then
    "${PIP[@]}" "torch==2.13.0"
  else
    # The CPU wheel (a bare `torch` from PyPI is the CUDA build, several GB): a local one (pip's
    # find-links) when there is one, so no unreachable index is retried, else PyTorch's CPU index
    # (its 2.13.0+cpu sorts above PyPI's 2.13.0); its dependencies come from the usual index.
    if "${PIP[@]}" --no-index --no-deps "torch==2.13.0" 2>/dev/null; then
      "${PIP[@]}" "torch==2.13.0"
    else
      "${PIP[@]}" "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu
    fi
  fi
fi
# The build backend and pybind11 go into the venv so that the package builds without isolation
# (an isolated build would download them again on every run).
"${PIP[@]}" "scikit-build-core>=0.11" "pybind11>=2.12"
EXTRAS="frames"
[ "$CUDA" = 1 ] && EXTRAS="$EXTRAS,gpu"
"${PIP[@]}" --no-build-isolation ".[$EXTRAS]" -Cbuild-dir=build/venv
"$VENV/bin/python" -m pip check
