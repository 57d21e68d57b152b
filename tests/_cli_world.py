"""Shared by the CLI-level robustness tests: run the CLI in-process, a small saved model, files.

``cli`` runs ``strnn-fast`` and asserts that no traceback reached stderr; ``save_small_model``
writes the 2-variable model behind conftest's ``model_file`` fixture.
"""
from __future__ import annotations

from pathlib import Path

import torch

from strnn_fast.cli import main
from strnn_fast.flows import StrAF
from strnn_fast.standardize import Standardized

A2 = [[0, 0], [1, 0]]
FIT = ["--epochs", "2", "--hidden", "4", "--flow-steps", "1", "-q"]


def cli(argv: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def save_small_model(path: Path) -> Path:
    """A saved 2-variable Standardized StrAF (names a, b): what the CLI tests read."""
    torch.manual_seed(0)
    flow = StrAF(A2, hidden_sizes=(4,), flow_steps=1, names=["a", "b"])
    Standardized(flow, mean=[1.0, 2.0], std=[1.0, 3.0]).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
