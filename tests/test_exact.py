"""Exact (MILP) factorizer: validity, optimality against brute force, Eq. 3, time limits, errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strnn_fast import _C
from strnn_fast.exact import MAX_VARIABLES, factorize_exact

TRIANGLE = np.tril(np.ones((3, 3), np.uint8), -1)


def _brute_force(A: np.ndarray, sizes: tuple[int, ...], var_penalty: float) -> float:
    """Best Eq. 3 value over every assignment of every mask entry."""
    widths = (A.shape[1], *sizes, A.shape[0])
    shapes = list(zip(widths[:-1], widths[1:]))
    n_bits = sum(a * b for a, b in shapes)
    bits = np.array(list(itertools.product((0, 1), repeat=n_bits)), np.int64)
    product, offset = None, 0
    for a, b in shapes:
        M = bits[:, offset : offset + a * b].reshape(-1, a, b)
        product = M if product is None else product @ M
        offset += a * b
    counts = product.transpose(0, 2, 1)  # (batch, n_out, n_in)
    valid = ((counts > 0) == (A > 0)).all(axis=(1, 2))
    totals = counts[valid].sum(axis=2)
    values = totals.sum(axis=1) - var_penalty * totals.var(axis=1)
    return float(values.max())


def _variance(masks: list[np.ndarray]) -> float:
    return float(_C.path_counts(masks).sum(axis=1).var())


@pytest.mark.parametrize(
    ("A", "sizes", "var_penalty"),
    [
        (TRIANGLE, (2,), 0.0),
        (np.array([[1, 0, 1], [1, 1, 0]], np.uint8), (3,), 0.0),
        (TRIANGLE, (2, 2), 0.0),
        (TRIANGLE, (3,), 2.0),
    ],
)
def test_matches_brute_force(A: np.ndarray, sizes: tuple[int, ...], var_penalty: float) -> None:
    res = factorize_exact(A, sizes, var_penalty=var_penalty, time_limit=20)
    assert res.optimal and res.status == "optimal"
    assert res.objective == pytest.approx(_brute_force(A, sizes, var_penalty))
    assert _C.check_masks(res.masks, A)


@st.composite
def _problems(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...]]:
    n_out = draw(st.integers(1, 5))
    n_in = draw(st.integers(1, 5))
    bits = draw(st.lists(st.integers(0, 1), min_size=n_out * n_in, max_size=n_out * n_in))
    A = np.array(bits, np.uint8).reshape(n_out, n_in)
    if not A.any():
        A[draw(st.integers(0, n_out - 1)), draw(st.integers(0, n_in - 1))] = 1
    sizes = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2)))
    return A, sizes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problems())
def test_valid_and_at_least_greedy(problem: tuple[np.ndarray, tuple[int, ...]]) -> None:
    A, sizes = problem
    greedy, _ = _C.greedy_factorize(A, sizes)
    greedy_valid = _C.check_masks(greedy, A)
    try:
        res = factorize_exact(A, sizes, time_limit=1.0)
    except (ValueError, RuntimeError) as err:
        assert not greedy_valid, err  # only layers too narrow for greedy may fail
        return
    assert _C.check_masks(res.masks, A)
    assert [m.dtype for m in res.masks] == [np.uint8] * (len(sizes) + 1)
    assert res.paths == _C.connections(res.masks) == res.objective
    if greedy_valid:
        assert res.greedy_paths == _C.connections(greedy)
        assert res.paths >= res.greedy_paths
    if res.optimal:
        assert res.bound == res.paths
        assert 0 <= res.gap < 1 or not greedy_valid


def test_variance_penalty_lowers_variance_and_objective_is_eq3() -> None:
    A = np.tril(np.ones((4, 4), np.uint8), -1)
    plain = factorize_exact(A, (6,), time_limit=20)
    penalized = factorize_exact(A, (6,), var_penalty=1.0, time_limit=20)
    assert plain.optimal and penalized.optimal
    assert _variance(penalized.masks) <= _variance(plain.masks)
    assert penalized.objective == pytest.approx(_C.connections(penalized.masks) - _variance(penalized.masks))
    # The Eq. 2 optimum is a candidate for Eq. 3, so it cannot score better there.
    assert penalized.objective >= _C.connections(plain.masks) - _variance(plain.masks) - 1e-9
    assert penalized.paths <= plain.paths


def test_time_limit_returns_valid_masks_at_least_greedy() -> None:
    A = np.tril(np.ones((6, 6), np.uint8), -1)
    res = factorize_exact(A, (8, 8), time_limit=0.5)
    assert not res.optimal and res.status in ("feasible", "greedy")
    assert _C.check_masks(res.masks, A)
    assert res.paths >= res.greedy_paths > 0
    assert res.bound >= res.paths


def test_too_narrow_raises() -> None:
    # The identity needs one hidden unit per variable: no two allowed pairs share a unit.
    with pytest.raises(ValueError, match="too narrow"):
        factorize_exact(np.eye(3), (2,), time_limit=5)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"adjacency": [[0, 2], [1, 0]]}, ValueError, "adjacency"),
        ({"adjacency": np.zeros((3, 3))}, ValueError, "adjacency"),
        ({"hidden_sizes": ()}, ValueError, "hidden_sizes"),
        ({"hidden_sizes": (4, 0)}, ValueError, "hidden_sizes"),
        ({"hidden_sizes": (2.5,)}, TypeError, "hidden_sizes"),
        ({"var_penalty": -1.0}, ValueError, "var_penalty"),
        ({"var_penalty": float("nan")}, ValueError, "var_penalty"),
        ({"time_limit": 0}, ValueError, "time_limit"),
        ({"time_limit": "1"}, TypeError, "time_limit"),
        ({"warm_start": 1}, TypeError, "warm_start"),
        ({"adjacency": np.tril(np.ones((40, 40)), -1), "hidden_sizes": (80, 80)}, ValueError, str(MAX_VARIABLES)),
    ],
)
def test_bad_input_raises(kwargs: dict, error: type, name: str) -> None:
    args = {"adjacency": TRIANGLE, "hidden_sizes": (3,), **kwargs}
    with pytest.raises(error, match=name):
        factorize_exact(args.pop("adjacency"), args.pop("hidden_sizes"), **args)


def test_without_warm_start_finds_the_same_optimum() -> None:
    A = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]], np.uint8)
    warm = factorize_exact(A, (5,), time_limit=20)
    cold = factorize_exact(A, (5,), time_limit=20, warm_start=False)
    assert warm.optimal and cold.optimal
    assert warm.paths == cold.paths


def test_ctrl_c_stops_the_wait_for_highs_at_once() -> None:
    # HiGHS never checks signals; the solve runs in a worker so the waiting thread takes Ctrl-C.
    import signal
    import threading
    import time

    from strnn_fast.exact import _interruptible

    main = threading.get_ident()
    threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT)).start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        _interruptible(lambda: time.sleep(5))
    assert time.perf_counter() - start < 1.5
    with pytest.raises(ZeroDivisionError):  # the worker's errors reach the caller
        _interruptible(lambda: 1 / 0)
