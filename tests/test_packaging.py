"""Packaging: one version everywhere, the metadata a wheel needs, py.typed shipped, and the
one-line message of a source build without a compiler."""
from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import strnn_fast

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_lives_in_one_place_and_every_file_agrees() -> None:
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["scikit-build"]["metadata"]["version"]["input"] == "strnn_fast/__init__.py"
    version = strnn_fast.__version__
    assert md.version("strnn_fast") == version  # what the build read from __init__.py
    # the newest release in the changelog (an "Unreleased" section may come first, as Keep a Changelog has it)
    released = re.findall(r"^## \[(.+?)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert [v for v in released if v != "Unreleased"][0] == version
    assert re.search(r"^version: (\S+)", (ROOT / "CITATION.cff").read_text(), re.M).group(1) == version


def test_installed_metadata_has_license_urls_and_classifiers() -> None:
    meta = md.metadata("strnn_fast")
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_py_typed_is_shipped() -> None:
    assert (Path(strnn_fast.__file__).parent / "py.typed").is_file()


def test_source_build_without_compiler_names_what_is_needed() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "check_language(CXX)" in cmake
    assert re.search(r"FATAL_ERROR \"strnn_fast: building from source needs a C\+\+17 compiler", cmake)


def test_help_is_for_users_and_the_map_is_in_architecture() -> None:
    doc = strnn_fast.__doc__
    assert "csrc/" not in doc and "DESIGN.md" not in doc
    assert "ARCHITECTURE.md" in doc and (ROOT / "ARCHITECTURE.md").is_file()
    assert not list(ROOT.glob("**/DESIGN.md"))
