"""One home per concept: Variables, Standardizer and the shared argument checks behave the same
wherever they are used (SEM, CausalFlow, fit, the CLI); the package map names every file and the
package's imports form no circle."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import strnn_fast
from strnn_fast._validate import as_binary_matrix, as_block, as_non_negative_int, as_real
from strnn_fast.causal import CausalFlow
from strnn_fast.data import LinearSEM
from strnn_fast.data.dataset import standardize
from strnn_fast.standardize import Standardized, Standardizer
from strnn_fast.variables import Variables, parse_assignments

A2 = np.array([[0, 0], [1, 0]])


# Variables --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "error", "fragment"), [
    ("q", ValueError, "unknown variable 'q'"),
    (3, ValueError, "out of range"),
    (-1, ValueError, "out of range"),
    (True, TypeError, "keys must be"),
    (1.0, TypeError, "keys must be"),
])
def test_sem_and_causal_flow_refuse_the_same_keys(key, error, fragment) -> None:
    sem = LinearSEM([("a", "b", 1.0)], 1.0)
    flow = CausalFlow(A2, names=["a", "b"], hidden_sizes=(4,), flow_steps=1)
    with pytest.raises(error, match=fragment):
        sem.index(key)
    with pytest.raises(error, match=fragment):
        flow.variables.index(key)


def test_do_items_resolve_names_and_indices_alike() -> None:
    v = Variables(["a", "b", "c"])
    assert v.do_items({"c": 1.0, 0: np.int64(2)}) == [(2, "c", 1.0), (0, 0, 2)]
    with pytest.raises(ValueError, match="twice"):
        v.do_items({"b": 1.0, 1: 2.0})
    with pytest.raises(TypeError, match="mapping"):
        v.do_items([("a", 1.0)])
    unnamed = Variables(None, 2)
    with pytest.raises(ValueError, match="no variable names"):
        unnamed.index("a")
    assert unnamed.labels() == [0, 1] and unnamed.label(1) == "1"


def test_column_order_matches_by_name_and_refuses_gaps() -> None:
    v = Variables(["a", "b", "c"])
    assert v.column_order(["c", "z", "a", "b"], "t") == [2, 3, 0]
    assert v.column_order([0, 1, 2], "t") is None  # unnamed columns: taken as they stand
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        v.column_order(["a", "b"], "t")
    with pytest.raises(ValueError, match=r"unknown \['z'\]"):
        v.column_order(["c", "z", "a", "b"], "t", allow_extra=False)
    with pytest.raises(ValueError, match="duplicated"):
        v.column_order(["a", "b", "c", "a"], "t")


def test_parse_assignments() -> None:
    assert parse_assignments(["a=1", " b = -2.5"], ["a", "b"]) == {"a": 1.0, "b": -2.5}
    for bad, fragment in ([[], "at least one"], [["a"], "VARIABLE=VALUE"], [["a=x"], "not a number"],
                          [["a=1", "a=2"], "twice"]):
        with pytest.raises(ValueError, match=fragment):
            parse_assignments(bad, ["a", "b"])


def test_causal_flow_orders_frame_columns_like_fit() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 2))
    flow = CausalFlow(A2, names=["a", "b"], hidden_sizes=(4,), flow_steps=1).double()
    frame = pd.DataFrame({"b": x[:, 1], "a": x[:, 0]})
    torch.testing.assert_close(flow._rows(frame, "data"), torch.from_numpy(x))
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):  # never silently dropped
        flow._rows(frame.assign(extra=1.0), "data")


# Standardizer -----------------------------------------------------------------------------------

def test_standardizer_matches_a_float64_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.5, size=(37, 5))
    s = Standardizer.fit(x)
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(s.std, np.sqrt(((x - x.mean(0)) ** 2).mean(0)), rtol=1e-13)  # ddof 0
    z = s.transform(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-13)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-13)
    np.testing.assert_allclose(s.inverse(z), x, rtol=1e-13)
    t = torch.from_numpy(x).float()
    torch.testing.assert_close(s.transform(t), torch.from_numpy(z).float())
    assert s.transform(t).dtype == torch.float32
    assert s.log_scale() == pytest.approx(float(np.log(s.std).sum()), rel=1e-14)
    np.testing.assert_allclose(standardize(x)[0], z, rtol=1e-14)


def test_standardizer_constant_column_policy() -> None:
    x = np.column_stack([np.arange(5.0), np.full(5, 7.0)])
    with pytest.raises(ValueError, match="'b' is constant"):
        Standardizer.fit(x, ["a", "b"])
    kept = Standardizer.fit(x, constant="keep")
    assert kept.std[1] == 1.0 and kept.mean[1] == 7.0
    with pytest.raises(ValueError, match="constant"):
        Standardizer.fit(x, constant="scale")
    with pytest.raises(ValueError, match="std must be positive"):
        Standardizer(np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        Standardizer(np.array([0.0, math.nan]), np.ones(2))


def test_causal_flow_standardizes_like_the_cli() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2)) * [1.0, 3.0] + [0.5, -2.0]
    c = rng.normal(size=(50, 1)) * 4.0 + 1.0
    flow = CausalFlow(A2, hidden_sizes=(4,), flow_steps=1, context_features=1)
    flow.fit(x[:40], val=x[40:], context=c[:40], val_context=c[40:], epochs=1, verbose=False)
    want = Standardizer.fit(x[:40])  # training rows only, ddof 0
    np.testing.assert_allclose(flow.loc.double().numpy(), want.mean, rtol=1e-6)
    np.testing.assert_allclose(flow.scale.double().numpy(), want.std, rtol=1e-6)
    want_c = Standardizer.fit(c[:40], constant="keep")
    np.testing.assert_allclose(flow.context_scale.double().numpy(), want_c.std, rtol=1e-6)
    with pytest.raises(ValueError, match="val_context"):
        flow.fit(x[:40], val=x[40:], context=c[:40], epochs=1, verbose=False)
    with pytest.raises(ValueError, match="val_context needs val"):
        flow.fit(x, context=c, val_context=c[:3], epochs=1, verbose=False)


def test_standardized_wrapper_uses_the_same_checks() -> None:
    from strnn_fast.flows import StrAF

    base = StrAF(A2, hidden_sizes=(4,), flow_steps=1)
    with pytest.raises(ValueError, match="std must be positive"):
        Standardized(base, mean=[0.0, 0.0], std=[1.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        Standardized(base, mean=[0.0, math.inf], std=[1.0, 1.0])


# _validate --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "kwargs", "error"), [
    ("1", {}, TypeError),
    (True, {}, TypeError),
    (None, {}, TypeError),
    (math.nan, {}, ValueError),
    (math.inf, {"positive": True}, ValueError),
    (0.0, {"positive": True}, ValueError),
    (-1e-9, {"non_negative": True}, ValueError),
    (math.nan, {"positive": True, "finite": False}, ValueError),
])
def test_as_real_refuses(value, kwargs, error) -> None:
    with pytest.raises(error, match="tol"):
        as_real(value, "tol", **kwargs)


def test_as_real_and_ints_accept() -> None:
    assert as_real(np.float32(0.5), "x", positive=True) == 0.5
    assert as_real(0, "x", non_negative=True) == 0.0
    assert as_real(math.inf, "x", positive=True, finite=False) == math.inf
    assert as_non_negative_int(np.int64(0), "n") == 0
    with pytest.raises(TypeError, match="n must"):
        as_non_negative_int(2.0, "n")
    with pytest.raises(ValueError, match="n must"):
        as_non_negative_int(-1, "n")
    assert as_block([8, 16]) == (8, 16)
    with pytest.raises(TypeError, match="block"):
        as_block(8)


@pytest.mark.parametrize("name", ["tol", "min_slope"])
def test_umnn_options_refuse_inf_and_wrong_types(name) -> None:
    from strnn_fast.flows import StrAF

    with pytest.raises(ValueError, match=name):
        StrAF(A2, hidden_sizes=(4,), flow_steps=1, normalizer="umnn", **{name: math.inf})
    with pytest.raises(TypeError, match=name):
        StrAF(A2, hidden_sizes=(4,), flow_steps=1, normalizer="umnn", **{name: "1e-3"})


def test_binary_matrix_square_mode_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"found 2 at \[1, 0\]"):
        as_binary_matrix([[0, 0], [2, 0]], square=True)
    with pytest.raises(ValueError, match="square"):
        as_binary_matrix([[0, 1, 0]], square=True)
    assert as_binary_matrix([[0, 1, 0]]).shape == (1, 3)


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
