"""Named columns and data kinds: unnamed models take their x0.. names, binary models refuse other data,
edge-list headers, log_prob refuses NaN, inf and complex rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _cli_world import A2
from _cli_world import cli as _cli
from _cli_world import write as _write

from strnn_fast.causal import CausalFlow
from strnn_fast.data import load_adjacency
from strnn_fast.density import StrNNDensityEstimator


def test_unnamed_model_takes_its_x_names_and_refuses_other_headers(tmp_path, capsys):
    torch.manual_seed(0)
    model = CausalFlow(A2, hidden_sizes=(4,), flow_steps=1)
    model.fit(np.random.default_rng(0).normal(size=(40, 2)), epochs=1, verbose=False)
    model.save(tmp_path / "c.pt")
    code, _ = _cli(["intervene", tmp_path / "c.pt", "--do", "x0=1", "-n", "20"], capsys)
    assert code == 0
    rows = [[0.5, -1.0], [1.0, 2.0]]
    straight = _write(tmp_path / "s.csv", "x0,x1\n" + "\n".join(",".join(map(repr, r)) for r in rows))
    swapped = _write(tmp_path / "w.csv", "x1,x0\n" + "\n".join(",".join(map(repr, r[::-1])) for r in rows))
    renamed = _write(tmp_path / "r.csv", "p,q\n" + "\n".join(",".join(map(repr, r)) for r in rows))
    assert _cli(["logprob", tmp_path / "c.pt", straight, "-o", tmp_path / "a.csv"], capsys)[0] == 0
    assert _cli(["logprob", tmp_path / "c.pt", swapped, "-o", tmp_path / "b.csv"], capsys)[0] == 0
    a, b = (pd.read_csv(tmp_path / n)["log_prob"].to_numpy() for n in ("a.csv", "b.csv"))
    assert np.array_equal(a, b)  # matched by name, not by position
    code, err = _cli(["logprob", tmp_path / "c.pt", renamed], capsys)
    assert code == 2 and "x0" in err


def test_binary_model_refuses_non_binary_data():
    model = StrNNDensityEstimator(np.tril(np.ones((3, 3)), -1), hidden_sizes=(4,), data_type="binary")
    with pytest.raises(ValueError, match="0 and 1"):
        model.log_prob(torch.tensor([[0.0, 1.0, 0.5]]))


@pytest.mark.parametrize("header", ["source,target", "from,to", "Source,Target"])
def test_edge_list_headers_are_accepted(tmp_path, header):
    A, names = load_adjacency(_write(tmp_path / "g.csv", f"{header}\na,b\nb,c\n"))
    assert names == ["a", "b", "c"] and A.astype(int).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("bad", [torch.tensor([[0.0, float("nan")]]), torch.tensor([[float("inf"), 0.0]]),
                                 torch.zeros(1, 2, dtype=torch.complex64)])
def test_log_prob_refuses_nan_inf_and_complex(model_file, bad):
    from strnn_fast.serialization import load

    with pytest.raises((ValueError, TypeError), match="x"):
        load(model_file).log_prob(bad)
