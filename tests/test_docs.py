"""Every docstring example in the package runs (doctest)."""
from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import pytest

import strnn_fast

# Walk the package folder itself: an editable install's __path__ also lists the repo root.
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages([os.path.dirname(strnn_fast.__file__)], prefix="strnn_fast.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
