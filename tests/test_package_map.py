"""The package map and its imports: ARCHITECTURE.md names every source file, and the package's
imports form no circle."""
from __future__ import annotations

import ast
from pathlib import Path

import strnn_fast

# ---------------------------------------------------------------------------------- the package map

ROOT = Path(__file__).resolve().parents[1]  # the checkout (tests/ lives there), installed package or not


def _source_files() -> list[str]:
    """Every Python module of the package and of kernels/, and every C++ source, as repository paths."""
    files = [*ROOT.glob("strnn_fast/**/*.py"), *ROOT.glob("kernels/*.py"), *ROOT.glob("csrc/*.cpp")]
    return sorted(str(p.relative_to(ROOT)) for p in files if p.name != "__init__.py")  # packages: by folder


def test_package_map_names_every_source_file() -> None:
    """ARCHITECTURE.md holds the map: every file is named there (two hops to any feature)."""
    doc = (ROOT / "ARCHITECTURE.md").read_text()
    # A file counts as named by its path, its path inside the package, or its name after a folder
    # of the same bullet ("`gnf.py`" next to "`strnn_fast/flows/straf.py`").
    missing = [f for f in _source_files()
               if f not in doc and f.removeprefix("strnn_fast/") not in doc and f"`{Path(f).name}`" not in doc]
    assert not missing, f"name these files in the map of ARCHITECTURE.md: {missing}"


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its file (inside functions too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is the module's own package, 2 its parent, ...
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in modules and m != module}


def test_no_import_circle_inside_the_package() -> None:
    """Imports point one way (ARCHITECTURE.md, Layers): no module reaches itself through imports."""
    pkg = Path(strnn_fast.__file__).resolve().parent
    paths = {".".join(["strnn_fast", *p.relative_to(pkg).with_suffix("").parts]).removesuffix(".__init__"): p
             for p in pkg.rglob("*.py")}
    # The compiled core (strnn_fast._C, known by its stub) is a module too: importing it is no circle.
    modules = set(paths) | {"strnn_fast." + p.stem for p in pkg.glob("*.pyi")}
    graph = {m: _imports(p, m, modules) & set(paths) for m, p in paths.items()}
    circles = []

    def visit(m: str, trail: list[str]) -> None:
        for n in graph[m]:
            if n in trail:
                circles.append(trail[trail.index(n):] + [n])
            elif n not in done:
                visit(n, trail + [n])
        done.add(m)

    done: set[str] = set()
    for m in graph:
        if m not in done:
            visit(m, [m])
    assert not circles, circles
