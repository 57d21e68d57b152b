"""Every documented bad input raises ValueError/TypeError naming the argument; _C never crashes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays, scalar_dtypes

from strnn_fast import FastStrNN, MaskedLinear, _C, check_masks, factorize, path_counts
from _trust_world import check_api_refuses

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


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    ("fast-nin-0", lambda w: FastStrNN(0, (4,), 3, adjacency=A3), ValueError, "nin"),
    ("fast-hidden-words", lambda w: FastStrNN(3, ("a",), 3, adjacency=A3), TypeError, "hidden_sizes"),
    ("fast-nonbinary", lambda w: FastStrNN(3, (4,), 3, adjacency=A3 * 2), ValueError, "adjacency"),
    ("fast-columns", lambda w: FastStrNN(4, (4,), 3, adjacency=A3), ValueError, "adjacency"),
    ("fast-opt-type", lambda w: FastStrNN(3, (4,), 3, adjacency=A3, opt_type="magic"), ValueError, "opt_type"),
    ("fast-activation", lambda w: FastStrNN(3, (4,), 3, adjacency=A3, activation="swish2"), ValueError, "activation"),
    ("fast-nout", lambda w: FastStrNN(3, (4,), 5, adjacency=A3), ValueError, "nout"),
    ("fast-forward-width", lambda w: FastStrNN(3, (4,), 3, adjacency=A3)(torch.zeros(2, 4)), ValueError, "x"),
    ("fast-forward-numpy", lambda w: FastStrNN(3, (4,), 3, adjacency=A3)(np.zeros((2, 3))), TypeError, "x"),
    ("fast-forward-complex", lambda w: FastStrNN(3, (4,), 3, adjacency=A3)(torch.zeros(2, 3, dtype=torch.cfloat)),
     TypeError, "x"),
    ("factorize-method", lambda w: factorize(A3, (4,), "magic"), ValueError, "method"),
    ("factorize-hidden", lambda w: factorize(A3, (0,)), ValueError, "hidden"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_faststrnn_and_factorize_bad_input_name_the_argument(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)


def test_faststrnn_forward_checks() -> None:
    net = FastStrNN(3, (8,), 3, adjacency=A3)
    with pytest.raises(ValueError, match="x must have shape \\(..., 3\\)"):
        net(torch.randn(2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net(np.zeros((2, 3)))
    x = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(net(x), net(x.float()))  # cast to the model's dtype



# The cases live with their features (CLI_BAD_INPUT / API_BAD_INPUT of each test file); the corpus
# as a whole keeps at least the size it had as one file (69 CLI and 60 API cases).

def test_bad_input_cases_cover_every_command() -> None:
    import test_cli
    import test_cli_causal
    import test_cli_factorize
    import test_cli_fit
    import test_cli_logprob
    import test_cli_sample

    cases = [c for m in (test_cli, test_cli_causal, test_cli_factorize, test_cli_fit, test_cli_logprob,
                         test_cli_sample) for c in m.CLI_BAD_INPUT]
    assert len(cases) >= 69
    assert {c[0].split("-")[0] for c in cases} >= {"fit", "sample", "logprob", "intervene", "cf", "factorize", "demo"}


def test_bad_input_cases_cover_the_python_api() -> None:
    import test_causal
    import test_data
    import test_flows
    import test_serialization
    import test_standardize
    import test_train

    modules = (test_causal, test_data, test_flows, test_serialization, test_standardize, test_train)
    cases = [c for m in modules for c in m.API_BAD_INPUT] + API_BAD_INPUT
    assert len(cases) >= 60
    assert {c[0].split("-")[0] for c in cases} >= {"load", "table", "adj", "fast", "flow", "fit", "nll", "causal",
                                                   "std", "save", "factorize"}
