r"""Generators of DAG adjacency matrices (``A[i, j]`` iff i depends on j; zero diagonal; bool).

Example:
    >>> A = random_dag(6, parents=(1, 2), seed=0)
    >>> A.shape, bool(A.diagonal().any()), int(A[1:].sum(axis=1).min())
    ((6, 6), False, 1)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import as_positive_int

__all__ = ["banded", "block_graph", "full_triangle", "random_dag"]


def random_dag(
    d: int,
    *,
    density: float | None = None,
    parents: int | tuple[int, int] | None = None,
    seed: Any = None,
    ordered: bool = True,
    sparse: bool = False,
) -> Any:
    r"""Random DAG on ``d`` variables, drawn over the order 0, 1, ..., d-1 and then optionally shuffled.

    Arguments:
        d: number of variables.
        density: probability of each edge j -> i with j < i (Erdos-Renyi on the lower triangle).
        parents: parent count per variable: an int k (exactly k) or a range (lo, hi), inclusive,
            drawn uniformly per variable. Variable i has only i candidates in the drawing order, so
            it gets ``min(count, i)`` parents. Give exactly one of ``density`` and ``parents``.
        seed: anything ``numpy.random.default_rng`` accepts.
        ordered: if False, relabel the variables with a random permutation, so index order is no
            longer a topological order.
        sparse: return a ``scipy.sparse.csr_array`` (bool) instead, the same graph for the same
            seed; with ``parents`` no dense (d, d) array is made, so d can be large.

    Returns:
        (d, d) bool array, or a CSR array with ``sparse=True``.

    Example:
        >>> random_dag(4, parents=3).astype(int)
        array([[0, 0, 0, 0],
               [1, 0, 0, 0],
               [1, 1, 0, 0],
               [1, 1, 1, 0]])
    """
    d = as_positive_int(d, "d")
    if (density is None) == (parents is None):
        raise ValueError("give exactly one of density and parents")
    if not isinstance(sparse, bool):
        raise TypeError(f"sparse must be a bool, got {sparse!r}")
    rng = np.random.default_rng(seed)
    if density is not None:
        _check_probability(density, "density")
        A = np.tril(rng.random((d, d)) < density, k=-1)
    else:
        lo, hi = _parent_range(parents)
        rows, cols = [], []
        for i in range(1, d):
            k = min(int(rng.integers(lo, hi + 1)), i)
            cols.append(rng.choice(i, size=k, replace=False))
            rows.append(np.full(k, i))
        edges = (np.concatenate(rows or [[]]).astype(np.int64), np.concatenate(cols or [[]]).astype(np.int64))
        if sparse:
            import scipy.sparse

            A = scipy.sparse.csr_array((np.ones(edges[0].size, dtype=bool), edges), shape=(d, d))
        else:
            A = np.zeros((d, d), dtype=bool)
            A[edges] = True
    if sparse and isinstance(A, np.ndarray):
        import scipy.sparse

        A = scipy.sparse.csr_array(A)
    if not ordered:
        perm = rng.permutation(d)
        A = A[perm][:, perm] if sparse else A[np.ix_(perm, perm)]
    if sparse:
        A.sort_indices()
    return A


def banded(d: int, width: int) -> np.ndarray:
    r"""Each variable depends on the ``width`` variables just before it.

    Arguments:
        d: number of variables.
        width: band width (>= 1); ``width >= d - 1`` gives the full lower triangle.

    Example:
        >>> banded(4, 1).astype(int)
        array([[0, 0, 0, 0],
               [1, 0, 0, 0],
               [0, 1, 0, 0],
               [0, 0, 1, 0]])
    """
    d = as_positive_int(d, "d")
    width = as_positive_int(width, "width")
    i, j = np.indices((d, d))
    return (i - j >= 1) & (i - j <= width)


def full_triangle(d: int) -> np.ndarray:
    r"""The fully autoregressive graph: variable i depends on every j < i.

    Example:
        >>> int(full_triangle(5).sum())
        10
    """
    d = as_positive_int(d, "d")
    return np.tril(np.ones((d, d), dtype=bool), k=-1)


def block_graph(d: int, n_blocks: int, p_in: float, p_out: float, seed: Any = None) -> np.ndarray:
    r"""Community DAG: contiguous blocks of variables, dense inside a block, sparse across blocks.

    Edges j -> i (j < i) appear with probability ``p_in`` when i and j share a block and ``p_out``
    otherwise. Block sizes differ by at most one.

    Arguments:
        d: number of variables.
        n_blocks: number of blocks (1 <= n_blocks <= d).
        p_in: edge probability within a block.
        p_out: edge probability between blocks.
        seed: anything ``numpy.random.default_rng`` accepts.

    Example:
        >>> A = block_graph(6, 2, 1.0, 0.0)
        >>> bool(A[3:, :3].any()), int(A[:3, :3].sum())
        (False, 3)
    """
    d = as_positive_int(d, "d")
    n_blocks = as_positive_int(n_blocks, "n_blocks")
    if n_blocks > d:
        raise ValueError(f"n_blocks must be at most d={d}, got {n_blocks}")
    _check_probability(p_in, "p_in")
    _check_probability(p_out, "p_out")
    block = np.arange(d) * n_blocks // d
    same = block[:, None] == block[None, :]
    p = np.where(same, p_in, p_out)
    return np.tril(np.random.default_rng(seed).random((d, d)) < p, k=-1)


def _parent_range(parents: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(parents, (int, np.integer)) and not isinstance(parents, bool):
        lo = hi = int(parents)
    elif isinstance(parents, (tuple, list)) and len(parents) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in parents
    ):
        lo, hi = int(parents[0]), int(parents[1])
    else:
        raise TypeError(f"parents must be an int or a (lo, hi) pair of ints, got {parents!r}")
    if lo < 0 or hi < lo:
        raise ValueError(f"parents range must satisfy 0 <= lo <= hi, got ({lo}, {hi})")
    return lo, hi


def _check_probability(p: float, name: str) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1], got {p!r}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {p}")
