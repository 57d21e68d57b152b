"""The documentation site's pieces are in place: every tutorial is in the table of contents and
every API entry names an object that exists (the full build, which runs the tutorials, is
scripts/docs.sh, run in CI)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_tutorial_is_in_the_toctree() -> None:
    index = (DOCS / "index.rst").read_text()
    for page in sorted((DOCS / "tutorials").glob("*.rst")):
        assert f"tutorials/{page.stem}" in index, f"{page.name} is not listed in docs/index.rst"


def test_api_reference_names_existing_objects() -> None:
    for target in re.findall(r"^\.\. auto(?:class|function):: (\S+)", (DOCS / "api.rst").read_text(), re.M):
        module, _, name = target.rpartition(".")
        assert hasattr(importlib.import_module(module), name), f"docs/api.rst: {target} does not exist"
