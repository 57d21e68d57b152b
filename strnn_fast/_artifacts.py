r"""Source text that makes strnn_fast unimportable: for checking that an exported artifact runs without it.

tests/test_export.py and bench/gpu_export_check.py start their loader processes (``python -I``)
with :data:`BLOCK_STRNN_FAST`, so that a hidden import of the package fails the check.

Example:
    >>> import subprocess, sys
    >>> code = BLOCK_STRNN_FAST + "import strnn_fast"
    >>> "strnn_fast is blocked" in subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
    ...                                           text=True).stderr
    True
"""
from __future__ import annotations

__all__ = ["BLOCK_STRNN_FAST"]

BLOCK_STRNN_FAST = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "strnn_fast":
            raise ImportError("strnn_fast is blocked in this process")
sys.meta_path.insert(0, _Block())
"""
