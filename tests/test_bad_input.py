"""Every documented bad input raises ValueError/TypeError naming the argument; _C never crashes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, scalar_dtypes

from strnn_fast import FastStrNN, MaskedLinear, _C, check_masks, factorize, path_counts

A3 = np.tril(np.ones((3, 3)), -1)


@pytest.mark.parametrize(
    "adjacency, error, match",
    [
        (np.array([[0, 2], [1, 0]]), ValueError, "binary"),
        (np.array([[0, np.nan], [1, 0]]), ValueError, "NaN"),
        (np.array([[0.5, 0], [1, 0]]), ValueError, "binary"),
        (np.zeros((3, 3)), ValueError, "all zero"),
        (np.ones(3), ValueError, "2-D"),
        (np.ones((0, 3)), ValueError, "empty"),
        (np.array([["a", "b"]]), TypeError, "dtype"),
        ("not an array", TypeError, "adjacency"),
    ],
)
def test_bad_adjacency(adjacency, error, match) -> None:
    with pytest.raises(error, match=match):
        factorize(adjacency, (4,))
    if isinstance(adjacency, np.ndarray) and adjacency.ndim == 2 and adjacency.size:
        with pytest.raises(error, match=match):
            FastStrNN(adjacency.shape[1], (4,), adjacency.shape[0], adjacency=adjacency)


@pytest.mark.parametrize(
    "hidden, error",
    [((0,), ValueError), ((-3,), ValueError), ((2.5,), TypeError), (("8",), TypeError), ("88", TypeError),
     ((True,), TypeError)],
)
def test_bad_hidden_sizes(hidden, error) -> None:
    with pytest.raises(error, match="hidden_sizes"):
        factorize(A3, hidden)


def test_too_narrow_says_how_wide() -> None:
    A = np.tril(np.ones((6, 6)), -1)
    with pytest.raises(ValueError, match="at least 5 units"):
        factorize(A, (3, 8))
    with pytest.raises(ValueError, match="too narrow"):
        FastStrNN(6, (3, 8), 6, adjacency=A)


def test_unknown_method_activation_opt_type() -> None:
    with pytest.raises(ValueError, match="method"):
        factorize(A3, (4,), method="magic")
    with pytest.raises(ValueError, match="opt_type"):
        FastStrNN(3, (4,), 3, opt_type="magic", adjacency=A3)
    with pytest.raises(ValueError, match="activation"):
        FastStrNN(3, (4,), 3, adjacency=A3, activation="swish2")
    with pytest.raises(ValueError, match="backend"):
        FastStrNN(3, (4,), 3, adjacency=A3, backend="cuda-magic")
    with pytest.raises(TypeError, match="option"):
        factorize(A3, (4,), "greedy", bogus=1)
    with pytest.raises(ValueError, match="made"):
        factorize(np.array([[0, 0], [1, 1]]), (4,), "made")


def test_nout_not_a_multiple() -> None:
    with pytest.raises(ValueError, match="nout"):
        FastStrNN(3, (6,), 7, adjacency=A3)
    with pytest.raises(ValueError, match="nin"):
        FastStrNN(4, (6,), 3, adjacency=A3)
    with pytest.raises(ValueError, match="nin"):
        FastStrNN(0, (6,), 3, adjacency=A3)


def test_bad_precomputed_masks() -> None:
    good = factorize(A3, (6,))
    with pytest.raises(ValueError, match="shapes"):
        FastStrNN(3, (5,), 3, adjacency=A3, precomputed_masks=good)
    wrong = [np.ones_like(m) for m in good]
    with pytest.raises(ValueError, match="sparsity"):
        FastStrNN(3, (6,), 3, adjacency=A3, precomputed_masks=wrong)


def test_masked_linear_bad_mask() -> None:
    with pytest.raises(ValueError, match="mask must have shape"):
        MaskedLinear(3, 2, mask=np.ones((3, 2)))


def test_mask_chain_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="columns"):
        path_counts([np.ones((2, 3)), np.ones((4, 1))])
    with pytest.raises(ValueError, match="adjacency has shape"):
        check_masks([np.ones((2, 3)), np.ones((3, 1))], np.ones((2, 2)))


def test_c_layer_validates_directly() -> None:
    with pytest.raises(TypeError):
        _C.greedy_factorize([[0, 1]], (2,))  # not an ndarray
    with pytest.raises(TypeError, match="byte order"):
        _C.greedy_factorize(np.array([[0, 1], [1, 0]], dtype=">f8"), (2,))
    with pytest.raises(ValueError, match="2\\*\\*31"):
        _C.greedy_factorize(np.ones((2, 2)), (2**31,))
    with pytest.raises(ValueError, match="2\\*\\*34"):
        _C.greedy_factorize(np.ones((2, 2)), (2**30, 2**30))
    with pytest.raises(ValueError):
        _C.zuko_factorize(np.zeros((2, 2)), (2,))
    # Non-contiguous views are read through their strides.
    big = np.tril(np.ones((8, 8)), -1)
    view = big[::2, ::2]
    assert np.array_equal(_C.path_counts(_C.greedy_factorize(view, (4,))[0]) > 0, view.astype(bool))


@given(
    arrays(scalar_dtypes(), array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    st.lists(st.integers(-3, 6), max_size=3),
)
def test_fuzz_c_entry_points(arr: np.ndarray, hidden: list[int]) -> None:
    """Random arrays of any dtype and shape: an exception or a valid answer, never a crash."""
    for call in (
        lambda: _C.greedy_factorize(arr, hidden, True),
        lambda: _C.zuko_factorize(arr, hidden),
        lambda: _C.made_factorize(arr, hidden),
        lambda: _C.path_counts([arr, arr]),
        lambda: _C.connections([arr]),
        lambda: _C.check_masks([arr], arr),
    ):
        try:
            call()
        except (ValueError, TypeError):
            pass


def test_torch_tensor_adjacency_accepted() -> None:
    masks = factorize(torch.tensor(A3), (4,))
    assert check_masks(masks, A3)
