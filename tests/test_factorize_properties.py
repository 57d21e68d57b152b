"""Structural properties of every factorization method (hypothesis)."""
from __future__ import annotations

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strnn_fast import check_masks, connections, factorize, path_counts, required_width
from strnn_fast import _C


@st.composite
def adjacency_and_hidden(draw, max_side: int = 12, max_layers: int = 3):
    n_out = draw(st.integers(1, max_side))
    n_in = draw(st.integers(1, max_side))
    A = draw(arrays(np.uint8, (n_out, n_in), elements=st.integers(0, 1)))
    assume(A.any())
    need = required_width(A, "greedy")
    hidden = draw(st.lists(st.integers(need, need + 2 * max_side), min_size=1, max_size=max_layers))
    return A, tuple(hidden)


@given(adjacency_and_hidden())
def test_every_method_gives_valid_masks(case) -> None:
    A, hidden = case
    for method in ("greedy", "zuko"):
        masks = factorize(A, hidden, method)
        assert check_masks(masks, A)
        assert [m.shape for m in masks] == list(zip((A.shape[1], *hidden), (*hidden, A.shape[0])))
        assert all(m.dtype == np.uint8 for m in masks)
    assert check_masks(factorize(A, hidden, "greedy", improve=True), A)


@given(adjacency_and_hidden())
def test_path_counts_equal_integer_product(case) -> None:
    A, hidden = case
    masks = factorize(A, hidden)
    product = masks[0].astype(np.int64)
    for m in masks[1:]:
        product = product @ m.astype(np.int64)
    np.testing.assert_array_equal(path_counts(masks), product.T)
    assert connections(masks) == product.sum()
    np.testing.assert_array_equal(path_counts(masks) > 0, A.astype(bool))


@given(adjacency_and_hidden())
def test_improvement_never_lowers_paths(case) -> None:
    A, hidden = case
    plain, info = _C.greedy_factorize(A, hidden, False)
    better, better_info = _C.greedy_factorize(A, hidden, True)
    assert connections(better) >= connections(plain)
    assert better_info["paths"] == connections(better)
    assert info["paths"] == connections(plain)


def test_improvement_gains_on_a_random_dag() -> None:
    rng = np.random.default_rng(0)
    A = np.tril(rng.random((60, 60)) < 0.2, -1)
    assert connections(factorize(A, (120, 120), improve=True)) > connections(factorize(A, (120, 120)))


@given(st.integers(2, 30), st.lists(st.integers(1, 70), min_size=1, max_size=3))
def test_made_valid_when_wide_enough(d: int, hidden: list[int]) -> None:
    A = np.tril(np.ones((d, d)), -1)
    assume(min(hidden) >= d)
    assert check_masks(factorize(A, hidden, "made"), A)


def test_no_hidden_layer_gives_the_adjacency() -> None:
    A = np.array([[0, 1, 1], [0, 0, 1]])
    (mask,) = factorize(A, ())
    np.testing.assert_array_equal(mask, A.T)


def test_check_masks_detects_extra_and_missing_paths() -> None:
    A = np.tril(np.ones((4, 4)), -1)
    masks = factorize(A, (8,))
    broken = [m.copy() for m in masks]
    broken[0][3, :] = 1  # input 3 now reaches everyone
    assert not check_masks(broken, A)
    missing = [m.copy() for m in masks]
    missing[1][:, 3] = 0  # output 3 loses its parents
    assert not check_masks(missing, A)
