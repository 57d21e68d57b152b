"""A folder of good and hostile input files shared by the bad-input cases and the fuzz tests.

:func:`make_world` writes it (conftest's session fixture ``bad_world``); :func:`digest` checksums
every file in it so a test can assert that no input changed and no partial output was left. The
bad-input cases live in the test file of the feature they exercise (``CLI_BAD_INPUT`` and
``API_BAD_INPUT`` lists); :func:`check_cli_refuses` and :func:`check_api_refuses` run one case.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from strnn_fast import FastStrNN
from strnn_fast.causal import CausalFlow
from strnn_fast.cli import main
from strnn_fast.flows import StrAF
from strnn_fast.serialization import load
from strnn_fast.standardize import Standardized

A3 = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]])
X = np.random.default_rng(0).normal(size=(30, 3))
W = "{w}"  # stands for the world's folder in the argv of a CLI case
FIT_ONE_EPOCH = ["--epochs", "1", "--hidden", "4", "--flow-steps", "1", "-q"]
FIT_TWO_EPOCHS = ["--epochs", "2", "--hidden", "6", "--flow-steps", "1", "--quiet"]


class Payload:
    """Pickles to a shell command that creates a marker file (it must never run)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden temporaries included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _csv(rows: list[list[object]], header: str | None = "a,b,c") -> str:
    lines = [header] if header is not None else []
    return "\n".join(lines + [",".join(str(v) for v in r) for r in rows]) + "\n"


def make_world(folder: Path) -> Path:
    """Writes the input files; returns ``folder``."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    x[:, 1] += x[:, 0]
    good = x.round(5).tolist()
    w = folder
    texts = {
        "data.csv": _csv(good),
        "noheader.csv": _csv(good, None),
        "graph.csv": "parent,child\na,b\nb,c\n",
        "graph.txt": "a b\nb c\n",
        # hostile tables
        "empty.csv": "",
        "header_only.csv": "a,b,c\n",
        "ragged.csv": "a,b,c\n1,2,3\n4,5\n",
        "words.csv": "a,b,c\n1,2,3\n4,oops,6\n",
        "nan.csv": _csv(good[:5] + [[1, "nan", 3]]),
        "inf.csv": _csv(good[:5] + [[1, 2, "-inf"]]),
        "huge.csv": _csv(good[:20] + [[1e40, 2, 3]] + good[20:]),
        "far.csv": _csv(good[:3] + [[1, 2, 1e30]] + good[3:]),  # float32 holds it; the density underflows
        "const.csv": _csv([[r[0], r[1], 7.0] for r in good]),
        "few.csv": _csv(good[:2]),
        "two_cols.csv": "a,b\n1,2\n3,4\n",
        "other_names.csv": _csv(good, "a,b,zz"),
        "dup_names.csv": _csv(good, "a,a,c"),
        "nul.csv": "a,b\x00,c\n1,2,3\n",
        "table.xlsx": "not really",
        # hostile graphs
        "cycle.csv": "parent,child\na,b\nb,c\nc,a\n",
        "selfloop.csv": "parent,child\na,a\na,b\n",
        "unknown.csv": "parent,child\na,b\nb,q\n",
        "two_by_two.csv": "0,0\n1,0\n",
        "nonbinary.csv": "0,0,0\n2,0,0\n1,1,0\n",
        "mixed.csv": "parent,child\na,1\n",
        "three_fields.txt": "a b c\n",
        "zeros.csv": "0,0,0\n0,0,0\n0,0,0\n",
    }
    for name, text in texts.items():
        (w / name).write_text(text)
    # arrays and binary files, good and hostile
    np.save(w / "data.npy", x)
    np.savez(w / "data.npz", data=x, names=np.array(["a", "b", "c"]))
    (w / "binary.csv").write_bytes(b"\xff\xfe\x00\x01garbage\x00\n\x80\x81")
    np.save(w / "cube.npy", np.zeros((2, 2, 2)))
    np.save(w / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    (w / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    np.savez(w / "two.npz", p=np.zeros((2, 3)), q=np.zeros((2, 3)))
    np.savez(w / "badnames.npz", data=np.zeros((2, 3)), names=np.zeros(3))
    (w / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    np.save(w / "rect.npy", np.array([[1, 0, 1], [0, 1, 1]]))
    # models
    flow = StrAF(A3, hidden_sizes=(6,), flow_steps=1, names=["a", "b", "c"])
    Standardized(flow, mean=x.mean(0), std=x.std(0)).save(w / "straf.pt")
    causal = CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(6,), flow_steps=1)
    causal.fit(x, epochs=1, verbose=False)
    causal.save(w / "causal.pt")
    FastStrNN(3, (6,), 3, adjacency=A3).save(w / "fast.pt")
    nan_flow = StrAF(A3, hidden_sizes=(6,), flow_steps=1, names=["a", "b", "c"])
    with torch.no_grad():
        for p in nan_flow.parameters():
            p.fill_(float("nan"))
    nan_flow.save(w / "nanmodel.pt")
    cls = type(flow)
    torch.save({"format": "strnn_fast-model-v1", "class": f"{cls.__module__}:{cls.__qualname__}",
                "config": flow.config, "state_dict": flow.state_dict(), "dtype": "torch.float32", "extra": {}},
               w / "legacy.pt")
    torch.save({"format": "strnn_fast-model-v1", "config": Payload(str(w.parent / "PWNED"))}, w / "crafted.pt")
    (w / "crafted_raw.pt").write_bytes(pickle.dumps(Payload(str(w.parent / "PWNED"))))
    data = (w / "straf.pt").read_bytes()
    (w / "truncated.pt").write_bytes(data[: len(data) // 2])
    (w / "empty.pt").write_bytes(b"")
    torch.save({"weight": torch.zeros(3)}, w / "foreign.pt")
    (w / "existing.csv").write_text("keep me\n")
    (w / "existing_dir").mkdir()
    (w / "existing_dir" / "keep.txt").write_text("keep me\n")
    return w


def write_abc_files(folder: Path) -> tuple[Path, Path]:
    """data.csv (60 rows of a chain a -> b -> c, with a header) and graph.csv (its edge list)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    x[:, 1] += x[:, 0]
    x[:, 2] -= x[:, 1]
    data = folder / "data.csv"
    data.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    graph = folder / "graph.csv"
    graph.write_text("parent,child\na,b\nb,c\n")
    return data, graph


# ------------------------------------------------------------------------------ bad-input cases

def fit_argv(data: str, graph: str = "graph.csv", *extra: str, output: str = "o.pt") -> list[str]:
    """argv of ``strnn-fast fit`` on two files of the world, writing {w}/<output>."""
    return ["fit", f"{{w}}/{data}", "-a", f"{{w}}/{graph}", "-o", f"{{w}}/{output}", *extra]


def sample_argv(model: str = "straf.pt", *extra: str, n: str = "3", output: str = "o.csv") -> list[str]:
    """argv of ``strnn-fast sample``: n draws from a model file of the world into {w}/<output>."""
    return ["sample", f"{{w}}/{model}", "-n", n, "-o", f"{{w}}/{output}", *extra]


def cf_argv(model: str = "causal.pt", data: str = "data.csv", *extra: str, do: str = "a=1",
            output: str = "o.csv") -> list[str]:
    """argv of ``strnn-fast counterfactual`` of a model and a data file of the world into {w}/<output>."""
    return ["counterfactual", f"{{w}}/{model}", f"{{w}}/{data}", "--do", do, "-o", f"{{w}}/{output}", *extra]


def cli_refuses(command: str, argv: Callable[[str], list[str]], files: str) -> list[tuple[str, list[str], str]]:
    """Cases of a command that must refuse each of the (space-separated) files, naming the file."""
    return [(f"{command}-{name}", argv(name), name) for name in files.split()]


def api_refuses(prefix: str, reader: Callable[[Any], Any], error: type[Exception], files: str) -> list[tuple]:
    """API cases: ``reader(world / file)`` raises ``error`` naming the file, for each (space-separated) file."""
    return [(f"{prefix}-{name}", lambda w, name=name: reader(w / name), error, name) for name in files.split()]


def small_flow() -> StrAF:
    """An untrained 3-variable StrAF named a, b, c."""
    return StrAF(A3, hidden_sizes=(4,), flow_steps=1, names=["a", "b", "c"])


def saved_causal(world: Path) -> CausalFlow:
    """The world's fitted CausalFlow (a -> b -> c), read from its file."""
    return load(world / "causal.pt")


class NoLogProb(torch.nn.Module):
    """A module with parameters but no log_prob: fit must refuse it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def check_cli_refuses(world: Path, capsys: Any, argv: list[str], expected: str) -> None:
    """The CLI exits with 2 and a one-line message containing ``expected`` (no traceback), leaving
    every input as it was and no output or temporary behind."""
    before = digest(world)
    try:
        code = main([a.replace(W, str(world)) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.strip()
    assert expected in err, err
    assert digest(world) == before
    assert not (world.parent / "PWNED").exists()


def check_api_refuses(world: Path, call: Callable[[Path], Any], error: type[Exception], expected: str) -> None:
    """``call(world)`` raises exactly ``error`` with ``expected`` in its message, changing no file."""
    before = digest(world)
    with pytest.raises(error) as exc:
        call(world)
    assert type(exc.value) is error, repr(exc.value)
    assert expected in str(exc.value), str(exc.value)
    assert digest(world) == before
    assert not (world.parent / "PWNED").exists()
