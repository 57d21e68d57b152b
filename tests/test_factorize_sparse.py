"""Sparse masks (``factorize(..., sparse=True)``), sparse adjacencies, and the memory limit.

The dense masks are the oracle (they are bit-identical to the reference, see
test_factorize_conformance.py): the CSR masks must hold exactly the same entries.
"""
from __future__ import annotations

import resource
import time

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strnn_fast import _C, check_masks, connections, factorize, path_counts
from strnn_fast.factorize import MAX_BYTES_ENV, estimate_bytes, memory_limit


def assert_same_masks(sparse_masks: list, dense_masks: list) -> None:
    assert len(sparse_masks) == len(dense_masks)
    for s, d in zip(sparse_masks, dense_masks):
        assert isinstance(s, sp.csr_array)
        assert s.dtype == np.uint8 and s.shape == d.shape
        assert s.has_canonical_format  # sorted indices, no duplicates
        assert np.all(s.data == 1)
        np.testing.assert_array_equal(s.toarray(), d)


@st.composite
def adjacency_and_hidden(draw, max_side: int = 14):
    """Rectangular, with zero and duplicate rows; hidden layers from far too narrow to wide."""
    n_out, n_in = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    A = draw(arrays(np.uint8, (n_out, n_in), elements=st.integers(0, 1)))
    if n_out > 2 and draw(st.booleans()):
        A[draw(st.integers(0, n_out - 1))] = A[draw(st.integers(0, n_out - 1))]
        A[draw(st.integers(0, n_out - 1))] = 0
    if not A.any():
        A[draw(st.integers(0, n_out - 1)), draw(st.integers(0, n_in - 1))] = 1
    hidden = draw(st.lists(st.integers(1, 2 * max_side + 3), min_size=0, max_size=3))
    return A, tuple(hidden)


def _both(A, hidden, method, **options):
    """(dense, sparse) masks, or the ValueError message of each when the layers are too narrow."""
    out = []
    for sparse in (False, True):
        try:
            out.append(factorize(A, hidden, method, sparse=sparse, **options))
        except ValueError as err:
            out.append(str(err))
    return out


@pytest.mark.parametrize("method, options", [("greedy", {}), ("greedy", {"improve": True}), ("zuko", {})])
@given(case=adjacency_and_hidden())
def test_sparse_equals_dense(method, options, case) -> None:
    A, hidden = case
    dense, sparse = _both(A, hidden, method, **options)
    if isinstance(dense, str):
        assert sparse == dense  # too narrow: the same error either way
        return
    assert_same_masks(sparse, dense)
    # A given as any scipy sparse format gives the same masks, dense or sparse.
    for fmt in (sp.csr_array, sp.csr_matrix, sp.coo_array, sp.csc_matrix):
        assert_same_masks(factorize(fmt(A), hidden, method, sparse=True, **options), dense)
        for m, d in zip(factorize(fmt(A), hidden, method, **options), dense):
            np.testing.assert_array_equal(m, d)


@given(st.integers(2, 25), st.lists(st.integers(1, 60), min_size=0, max_size=3))
def test_made_sparse_equals_dense(d: int, hidden: list[int]) -> None:
    A = np.tril(np.ones((d, d), dtype=np.uint8), -1)
    dense, sparse = _both(A, tuple(hidden), "made")
    if isinstance(dense, str):
        assert sparse == dense
    else:
        assert_same_masks(sparse, dense)


@pytest.mark.parametrize("method", ["greedy", "zuko"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 50), (50, 3), (65, 129)])
def test_odd_shapes_and_zero_rows(method: str, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    A = (rng.random(shape) < 0.3).astype(np.float32)
    A[-1, -1] = 1
    if shape[0] > 1:
        A[0] = 0  # a zero row (output 0 depends on nothing)
    hidden = (2 * shape[0] + 1, shape[0] + 64)
    dense, sparse = _both(A, hidden, method)
    assert_same_masks(sparse, dense)
    if shape[0] > 1:
        assert sparse[-1][:, [0]].nnz == 0  # nothing reaches the zero row's output
    assert check_masks(sparse, A) and check_masks(sparse, sp.csr_array(A))


def test_strict_false_returns_too_narrow_masks_with_empty_rows() -> None:
    """strict=False hands back invalid masks (as the reference does), CSR with empty rows too."""
    A = np.tril(np.ones((2, 2)), -1)
    with pytest.raises(ValueError, match="too narrow"):
        factorize(A, (1,), "made", sparse=True)
    dense = factorize(A, (1,), "made", strict=False)
    sparse = factorize(A, (1,), "made", sparse=True, strict=False)
    assert_same_masks(sparse, dense)
    assert sparse[1].nnz == 0 and not check_masks(sparse, A)
    with pytest.raises(TypeError, match="strict"):
        factorize(A, (2,), strict=1)


@pytest.mark.parametrize("kwargs", [{"parents": (2, 5)}, {"parents": 1}, {"density": 0.3}])
@pytest.mark.parametrize("ordered", [True, False])
def test_random_dag_sparse_is_the_same_graph(kwargs, ordered) -> None:
    from strnn_fast.data import random_dag

    for d in (1, 2, 9, 40):
        S = random_dag(d, seed=d, ordered=ordered, sparse=True, **kwargs)
        assert isinstance(S, sp.csr_array) and S.dtype == bool and S.has_canonical_format
        np.testing.assert_array_equal(S.toarray(), random_dag(d, seed=d, ordered=ordered, **kwargs))
    with pytest.raises(TypeError, match="sparse"):
        random_dag(3, parents=1, sparse="yes")


def test_exact_method_sparse() -> None:
    A = np.tril(np.ones((4, 4)), -1)
    dense = factorize(A, (4,), "exact")
    assert_same_masks(factorize(A, (4,), "exact", sparse=True), dense)


@given(adjacency_and_hidden())
def test_checks_and_counts_take_sparse_and_mixed_masks(case) -> None:
    A, hidden = case
    try:
        dense = factorize(A, hidden)
    except ValueError:
        return
    sparse = [sp.csr_array(m) for m in dense]
    mixed = [sp.coo_matrix(m) if i % 2 else m for i, m in enumerate(dense)]
    expected = path_counts(dense)
    for masks in (sparse, mixed):
        np.testing.assert_array_equal(path_counts(masks), expected)
        assert connections(masks) == connections(dense)
        assert check_masks(masks, A) and check_masks(masks, sp.csr_array(A))
    # A changed chain gets the same verdict through sparse masks as through dense ones.
    full = np.ones(dense[0].shape, dtype=np.uint8)
    assert check_masks([sp.csr_array(full), *sparse[1:]], A) == check_masks([full, *dense[1:]], A)


def test_check_masks_detects_a_missing_sparse_path() -> None:
    A = np.tril(np.ones((5, 5)), -1)
    masks = factorize(A, (8, 8), sparse=True)
    missing = [m.copy() for m in masks]
    last = missing[-1].toarray()
    last[:, 4] = 0
    missing[-1] = sp.csr_array(last)
    assert not check_masks(missing, A)
    assert check_masks(masks, A)


@pytest.mark.parametrize(
    "adjacency, error, match",
    [
        (sp.csr_array(np.array([[0, 2], [1, 0]])), ValueError, "binary"),
        (sp.csr_array(np.array([[0.0, np.nan], [1, 0]])), ValueError, "NaN"),
        (sp.csr_array((np.array([1, 1]), np.array([0, 0]), np.array([0, 0, 2])), shape=(2, 2)), ValueError, "binary"),
        (sp.csr_array((2, 2), dtype=np.uint8), ValueError, "all zero"),
        (sp.csr_array((0, 3), dtype=np.uint8), ValueError, "empty"),
        (sp.coo_array(np.array([1, 0, 1])), ValueError, "2-D"),
        (sp.csr_array(np.array([[0, 1j], [1, 0]])), TypeError, "dtype"),
    ],
)
def test_bad_sparse_adjacency(adjacency, error, match) -> None:
    with pytest.raises(error, match=match):
        factorize(adjacency, (4,), sparse=True)
    with pytest.raises(error, match=match):
        factorize(adjacency, (4,))


def test_sparse_input_is_not_modified() -> None:
    A = sp.csr_array((np.array([1.0, 0.0, 1.0]), np.array([0, 1, 0]), np.array([0, 0, 2, 3])), shape=(3, 2))
    before = (A.data.copy(), A.indices.copy(), A.indptr.copy())
    factorize(A, (4,), sparse=True)
    for x, y in zip(before, (A.data, A.indices, A.indptr)):
        np.testing.assert_array_equal(x, y)


class _FakeCsr:
    """A CSR lookalike with hand-made (possibly broken) arrays, for the C++ reader."""

    format = "csr"

    def __init__(self, indptr, indices, data, shape):
        self.indptr, self.indices, self.data, self.shape = (np.asarray(indptr), np.asarray(indices),
                                                            np.asarray(data), shape)


@pytest.mark.parametrize(
    "obj, error, match",
    [
        (_FakeCsr([0, 1, 2], [0, 5], [1, 1], (2, 2)), ValueError, "out of range"),
        (_FakeCsr([0, 2, 1], [0, 1], [1, 1], (2, 2)), ValueError, "indptr"),
        (_FakeCsr([0, 1], [0], [1], (2, 2)), ValueError, "indptr"),
        (_FakeCsr([0, 1, 3], [0, 1], [1, 1], (2, 2)), ValueError, "indptr"),
        (_FakeCsr([0, 1, 2], [0, 0], [1, 1], (2, 2)), None, None),
        (_FakeCsr([0, 2, 2], [1, 1], [1, 1], (2, 2)), ValueError, "duplicate"),
        (_FakeCsr([0, 1, 2], [0, 1], [1, 3], (2, 2)), ValueError, "binary"),
        (_FakeCsr([0, 1, 2], [0, 1], [1.0, 1.0], (2,)), ValueError, "shape"),
        (_FakeCsr([0, 1, 2], [0.0, 1.0], [1, 1], (2, 2)), TypeError, "integers"),
        (sp.csc_array(np.eye(2)), TypeError, "tocsr"),
    ],
)
def test_c_core_validates_csr(obj, error, match) -> None:
    if error is None:
        masks, _ = _C.greedy_factorize(obj, (3,))
        assert masks[0].shape == (2, 3)
        return
    with pytest.raises(error, match=match):
        _C.greedy_factorize(obj, (3,))
    with pytest.raises(error, match=match):
        _C.check_masks([obj], np.eye(2))


def test_c_core_csr_triples_and_index_dtype() -> None:
    A = np.tril(np.ones((6, 6)), -1)
    masks, info = _C.greedy_factorize(A, (9, 4), False, True)
    dense, dense_info = _C.greedy_factorize(A, (9, 4))
    assert info == dense_info
    for (indptr, indices, shape), d in zip(masks, dense):
        assert indptr.dtype == indices.dtype == np.int32
        assert shape == d.shape
        np.testing.assert_array_equal(sp.csr_array((np.ones(indices.size, np.uint8), indices, indptr), shape).toarray(), d)


# --- memory limit ---

def test_huge_hidden_layer_is_refused_before_allocating() -> None:
    A = np.tril(np.ones((10, 10)), -1)
    for sparse in (False, True):
        with pytest.raises(ValueError, match=r"hidden_sizes=\(1000000000,\).*bytes.*max_bytes=4,294,967,296"):
            factorize(A, (10**9,), sparse=sparse)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20  # KiB: nothing near 4 GiB touched


def test_limit_from_argument_and_environment(monkeypatch) -> None:
    A = np.tril(np.ones((10, 10)), -1)
    need = estimate_bytes(A, (16,))
    assert need == 10 * 16 * 2
    assert len(factorize(A, (16,), max_bytes=need)) == 2
    with pytest.raises(ValueError, match=f"about {need:,} bytes.*max_bytes={need - 1:,}"):
        factorize(A, (16,), max_bytes=need - 1)
    monkeypatch.setenv(MAX_BYTES_ENV, str(need - 1))
    assert memory_limit() == need - 1
    with pytest.raises(ValueError, match=MAX_BYTES_ENV):
        factorize(A, (16,))
    assert len(factorize(A, (16,), max_bytes=need)) == 2  # the argument wins
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_BYTES_ENV):
        factorize(A, (16,))
    monkeypatch.setenv(MAX_BYTES_ENV, "0")
    with pytest.raises(ValueError, match=MAX_BYTES_ENV):
        factorize(A, (16,))


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-5, ValueError), (1.5e9, TypeError), (True, TypeError),
                                        ("4GB", TypeError)])
def test_bad_max_bytes(bad, error) -> None:
    with pytest.raises(error, match="max_bytes"):
        factorize(np.tril(np.ones((3, 3)), -1), (4,), max_bytes=bad)


@pytest.mark.parametrize("method", ["greedy", "zuko", "made"])
def test_sparse_estimate_is_a_lower_bound_and_the_core_checks_the_rest(method: str) -> None:
    A = np.tril(np.ones((40, 40)), -1)  # the full triangle: far more nonzeros than the bound
    hidden = (80, 80)
    masks = factorize(A, hidden, method, sparse=True)
    actual = sum(m.indptr.nbytes + m.indices.nbytes + m.data.nbytes for m in masks)
    estimate = estimate_bytes(A, hidden, method, sparse=True)
    # The bound counts the core's per-row counters and per-unit arrays on top of the CSR arrays.
    assert estimate <= actual + 8 * sum(m.shape[0] + 1 for m in masks) + 4 * sum(hidden)
    assert estimate < actual
    # Between the estimate and the real size: the core refuses after counting, before filling.
    with pytest.raises(ValueError, match=rf"hidden_sizes=\(80, 80\).*above max_bytes={estimate}.*{MAX_BYTES_ENV}"):
        factorize(A, hidden, method, sparse=True, max_bytes=estimate)
    assert len(factorize(A, hidden, method, sparse=True, max_bytes=actual)) == 3


def test_too_narrow_is_reported_for_sparse_adjacency() -> None:
    A = sp.csr_array(np.tril(np.ones((6, 6)), -1))
    with pytest.raises(ValueError, match="at least 5 units"):
        factorize(A, (3, 8), sparse=True)
    with pytest.raises(ValueError, match="at least 5 units"):
        factorize(A, (3, 8), "zuko", sparse=True)


# --- scale ---

@pytest.mark.slow
def test_d10000_sparse_factorization_scale(record_property) -> None:
    """d=10,000, hidden (20000, 20000), random DAG with 2-5 parents: no dense h x d array anywhere.

    Reports time and peak RSS (nothing is asserted on time). The masks are checked for validity
    (check_masks on the CSR masks) and against the dense masks' nonzero counts per row.
    """
    from strnn_fast.data import random_dag

    A = random_dag(10_000, parents=(2, 5), seed=0, sparse=True)
    assert isinstance(A, sp.csr_array) and A.shape == (10_000, 10_000)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    masks = factorize(A, (20_000, 20_000), sparse=True)
    seconds = time.perf_counter() - start
    assert check_masks(masks, A)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert [m.shape for m in masks] == [(10_000, 20_000), (20_000, 20_000), (20_000, 10_000)]
    # Greedy: hidden unit k copies nonzero row k mod n, so the first mask has exactly those nonzeros.
    counts = np.diff(A.indptr)
    nonzero = counts[counts > 0]
    assert masks[0].nnz == sum(int(nonzero[k % nonzero.size]) for k in range(20_000))
    nbytes = sum(m.indptr.nbytes + m.indices.nbytes + m.data.nbytes for m in masks)
    assert nbytes < 2**24  # a few MB, where the dense masks take 800 MB
    record_property("factorize_seconds", round(seconds, 3))
    record_property("peak_rss_growth_mb", round((rss_after - rss_before) / 1024, 1))
    print(f"d=10000 hidden=(20000, 20000) sparse: factorize {seconds:.2f} s, masks {nbytes / 2**20:.1f} MiB, "
          f"nnz {[m.nnz for m in masks]}, peak RSS {rss_after / 1024:.0f} MB (+{(rss_after - rss_before) / 1024:.0f} MB)")
