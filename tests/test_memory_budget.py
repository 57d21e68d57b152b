"""The memory budget (STRNN_FAST_MEMORY_LIMIT): edge lists, CSV tables and model headers are estimated
before allocating."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli_world import FIT
from _cli_world import cli as _cli
from _cli_world import write as _write

from strnn_fast.data import load_adjacency, load_table


def test_edge_list_beyond_the_memory_limit_is_refused_before_the_dense_matrix(tmp_path, capsys, monkeypatch):
    graph = _write(tmp_path / "g.csv", "parent,child\n0,1\n1,29999\n")  # 30,000 variables: 9e8 bytes dense
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e8")
    with pytest.raises(ValueError, match=r"g\.csv.*30000 x 30000.*STRNN_FAST_MEMORY_LIMIT"):
        load_adjacency(graph)
    code, err = _cli(["factorize", graph, "-o", tmp_path / "out"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "g.csv" in err
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e10")  # within the limit: the same file reads
    A, _ = load_adjacency(_write(tmp_path / "small.csv", "parent,child\n0,1\n1,2999\n"))
    assert A.shape == (3000, 3000) and A[1, 0] and A[2999, 1] and A.sum() == 2


def test_csv_beyond_the_memory_limit_is_refused_from_its_size(tmp_path, capsys, monkeypatch):
    rows = np.random.default_rng(0).normal(size=(2000, 3))
    data = _write(tmp_path / "d.csv", "a,b,c\n" + "".join(",".join(map(repr, r)) + "\n" for r in rows.tolist()))
    graph = _write(tmp_path / "g.csv", "parent,child\na,b\nb,c\n")
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "5e4")  # the table is 48 kB of float64
    with pytest.raises(ValueError, match=r"table .*d\.csv.*STRNN_FAST_MEMORY_LIMIT"):
        load_table(data)
    code, err = _cli(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", *FIT], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "d.csv" in err
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e6")
    x, names = load_table(data)
    assert names == ["a", "b", "c"] and np.array_equal(x, rows)


def test_csv_with_comments_blank_lines_and_quotes_reads_as_before(tmp_path):
    # numpy's fast reader refuses these; the line-by-line reader takes them, as it always did.
    text = '# made by hand\n"a","b"\n1.5,"2"\n   \n# note\n3,4e-3\n'
    x, names = load_table(_write(tmp_path / "t.csv", text))
    assert names == ["a", "b"] and x.tolist() == [[1.5, 2.0], [3.0, 0.004]]
    with pytest.raises(ValueError, match=r"line 4 has 1 fields, expected 2"):
        load_table(_write(tmp_path / "r.csv", "a,b\n1,2\n3,4\n5\n"))


def _with_header(src: Path, dst: Path, edit) -> Path:
    """Copies the model file ``src`` to ``dst`` with ``edit(header)`` applied to its JSON header."""
    import json

    payload = torch.load(src, weights_only=True)
    header = json.loads(payload["header"])
    edit(header)
    payload["header"] = json.dumps(header)
    torch.save(payload, dst)
    return dst


def test_model_header_asking_for_200000_flow_steps_is_refused_before_building(model_file, tmp_path, capsys,
                                                                              monkeypatch):
    def steps(n):
        return lambda h: h["config"]["base"]["config"].update(flow_steps=n)

    crafted = _with_header(model_file, tmp_path / "steps.pt", steps(200_000))
    start = time.perf_counter()
    from strnn_fast.serialization import load

    with pytest.raises(ValueError, match=r"steps\.pt.*200000 flow steps"):
        load(crafted)
    code, err = _cli(["sample", crafted, "-n", "2", "-o", tmp_path / "s.csv"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "200000 flow steps" in err
    assert time.perf_counter() - start < 5  # it built 200,000 steps for minutes before
    # Within what the weights allow, the memory budget still applies (STEP_BYTES a step).
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e4")
    with pytest.raises(ValueError, match=r"m\.pt.*STRNN_FAST_MEMORY_LIMIT"):
        load(model_file)
    monkeypatch.delenv("STRNN_FAST_MEMORY_LIMIT")
    assert load(model_file).base.config["flow_steps"] == 1  # the real file loads
