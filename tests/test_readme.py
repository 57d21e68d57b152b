"""The README's Python code blocks run, in order, in one namespace (as a reader pastes them)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3, "the README's examples are ```python blocks"


def test_readme_python_blocks_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(BLOCKS):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # name the block: the traceback's file name says which one too
            raise AssertionError(f"README python block {i + 1} failed: {err!r}\n{block}") from err
