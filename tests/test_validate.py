"""The shared argument checks (strnn_fast._validate): clear errors, the same everywhere."""
from __future__ import annotations

import math

import numpy as np
import pytest

from strnn_fast._validate import (
    as_binary_matrix,
    as_block,
    as_non_negative_int,
    as_real,
)

A2 = np.array([[0, 0], [1, 0]])


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
