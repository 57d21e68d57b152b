"""Variables: names and indices, do lookups and table columns resolve alike in the SEM, CausalFlow, fit and the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from strnn_fast.causal import CausalFlow
from strnn_fast.data import LinearSEM
from strnn_fast.variables import Variables, parse_assignments

A2 = np.array([[0, 0], [1, 0]])


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
