r"""Binary factorization of an adjacency matrix into per-layer masks.

The masks come back in the reference's orientation: input side first, each (fan_in x fan_out),
so that ``(masks[0] @ ... @ masks[-1]).T`` has exactly the sparsity pattern of ``A`` (n_out x n_in).

Methods:
    greedy  the StrNN paper's Algorithm 1, bit-identical to ``strnn.factorizers.GreedyFactorizer``;
            ``improve=True`` gives spare hidden units better patterns (never fewer paths).
    zuko    identical to the reference's ``ZukoFactorizer``.
    made    MADE's degrees, full lower triangle only (the reference's ``MADEFactorizer``).
    exact   maximizes Eq. 2 (optionally Eq. 3) as a MILP with HiGHS; small problems only.

Example:
    >>> import numpy as np
    >>> A = np.tril(np.ones((4, 4)), -1)
    >>> masks = factorize(A, (8, 8))
    >>> [m.shape for m in masks]
    [(4, 8), (8, 8), (8, 4)]
    >>> check_masks(masks, A)
    True
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _C
from ._validate import as_binary_matrix, as_binary_sparse, as_sizes, choice, is_scipy_sparse

METHODS = ("greedy", "zuko", "made", "exact")

#: Default cap on the bytes a factorization may allocate for its masks (4 GiB); raise it with the
#: ``max_bytes=`` argument or the environment variable ``STRNN_FAST_MAX_BYTES``.
DEFAULT_MAX_BYTES = 2**32
MAX_BYTES_ENV = "STRNN_FAST_MAX_BYTES"


def factorize(
    adjacency: Any,
    hidden_sizes: Sequence[int],
    method: str = "greedy",
    *,
    sparse: bool = False,
    max_bytes: int | None = None,
    strict: bool = True,
    **options: Any,
) -> list[Any]:
    r"""Factorizes ``adjacency`` (n_out x n_in) into len(hidden_sizes)+1 uint8 masks.

    Arguments:
        adjacency: binary matrix, A[i, j] = 1 iff output i may depend on input j: a numpy array,
            torch tensor, nested list, or any scipy sparse matrix (for large graphs).
        hidden_sizes: width of each hidden layer.
        method: one of "greedy", "zuko", "made", "exact".
        sparse: return ``scipy.sparse.csr_array`` masks (uint8, same orientation and values as
            the dense ones), built without any dense (fan_in x fan_out) array.
        max_bytes: refuse (ValueError) when the masks would take more bytes than this; default
            the environment variable ``STRNN_FAST_MAX_BYTES``, else 4 GiB. The estimate is
            exact for dense masks and a lower bound for sparse ones, whose exact size is checked
            again before their index arrays are allocated.
        strict: raise when the hidden layers are too narrow to represent the adjacency exactly;
            ``strict=False`` returns the (then invalid) masks as the reference's factorizers do.
        options: greedy: ``improve`` (bool). exact: ``var_penalty``, ``time_limit``.

    Returns:
        The masks, input side first, each (fan_in x fan_out).

    Raises:
        ValueError: non-binary/empty/all-zero adjacency, layers too narrow to represent A, or
            masks larger than ``max_bytes``.

    Example:
        >>> factorize([[0, 0], [1, 0]], (2,), method="zuko")[0].shape
        (2, 2)
        >>> m = factorize(np.tril(np.ones((3, 3)), -1), (4,), sparse=True)
        >>> type(m[0]).__name__, m[0].dtype, m[0].shape
        ('csr_array', dtype('uint8'), (3, 4))
    """
    method = choice(method, METHODS, "method")
    for flag, value in (("sparse", sparse), ("strict", strict)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {value!r}")
    A = _as_adjacency(adjacency, "adjacency")
    sizes = as_sizes(hidden_sizes)
    limit = memory_limit(max_bytes)
    need_bytes = _estimate_bytes(A, sizes, method, sparse)
    if need_bytes > limit:
        kind = "sparse" if sparse else "dense"
        raise ValueError(
            f"hidden_sizes={sizes} would need about {need_bytes:,} bytes for the {kind} masks of a "
            f"{A.shape[0]} x {A.shape[1]} adjacency, above the limit max_bytes={limit:,}; use smaller "
            f"hidden_sizes{'' if sparse else ', sparse=True'}, or raise the limit with max_bytes= or "
            f"the environment variable {MAX_BYTES_ENV}"
        )
    if method == "exact":
        from .exact import factorize_exact

        dense = A.toarray() if is_scipy_sparse(A) else A
        masks = factorize_exact(dense, sizes, **options).masks
        return [_sparse_module().csr_array(m) for m in masks] if sparse else masks
    improve = options.pop("improve", False)
    if options:
        raise TypeError(f"unexpected option(s) for method={method!r}: {', '.join(sorted(options))}")
    if not isinstance(improve, bool):
        raise TypeError(f"improve must be a bool, got {improve!r}")
    if improve and method != "greedy":
        raise ValueError("improve=True is only available for method='greedy'")
    cap = min(limit, 2**63 - 1)
    try:
        if method == "greedy":
            raw, _ = _C.greedy_factorize(A, sizes, improve, sparse, cap)
        elif method == "zuko":
            raw = _C.zuko_factorize(A, sizes, sparse, cap)
        else:
            raw = _C.made_factorize(A, sizes, sparse, cap)
    except ValueError as err:
        if "above max_bytes" not in str(err):
            raise
        # The sparse estimate was a lower bound; the core counted the real size before allocating.
        raise ValueError(f"hidden_sizes={sizes}: {err} (or set {MAX_BYTES_ENV})") from None
    masks = [_from_csr_triple(t) for t in raw] if sparse else list(raw)
    if not strict:
        return masks
    need = _required_width(A, method)
    # Wide enough layers are valid by construction (every nonzero row gets a unit); narrower ones
    # may still work, so only they pay for the full check.
    if min(sizes, default=need) < need and not _C.check_masks(masks, A):
        raise ValueError(
            f"hidden_sizes={sizes} is too narrow to represent the adjacency exactly with "
            f"method={method!r}: every hidden layer needs at least {need} units "
            f"({_WIDTH_REASON[method]})"
        )
    return masks


_WIDTH_REASON = {
    "greedy": "the number of nonzero rows of the adjacency",
    "zuko": "the number of distinct nonzero rows of the adjacency",
    "made": "the number of variables",
}


def memory_limit(max_bytes: int | None = None) -> int:
    """The byte limit of a factorization: ``max_bytes``, else ``$STRNN_FAST_MAX_BYTES``, else 4 GiB.

    Example:
        >>> memory_limit(10**6)
        1000000
    """
    if max_bytes is None:
        env = os.environ.get(MAX_BYTES_ENV)
        if env is None:
            return DEFAULT_MAX_BYTES
        try:
            value = int(env.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"environment variable {MAX_BYTES_ENV} must be a positive integer (bytes), got {env!r}") from None
        if value <= 0:
            raise ValueError(f"environment variable {MAX_BYTES_ENV} must be a positive integer (bytes), got {env!r}")
        return value
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be a positive integer (bytes) or None, got {max_bytes!r}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer (bytes), got {int(max_bytes)}")
    return int(max_bytes)


def estimate_bytes(adjacency: Any, hidden_sizes: Sequence[int], method: str = "greedy", sparse: bool = False) -> int:
    """Bytes the masks of a factorization take, computed before anything large is allocated.

    Dense masks: exactly the sum of fan_in x fan_out. Sparse masks: a lower bound on the CSR
    arrays and the per-unit work arrays (every hidden unit reads at least one unit, every
    nonzero row of A is fed by at least one unit; the first greedy mask is counted exactly).

    Example:
        >>> estimate_bytes(np.tril(np.ones((3, 3)), -1), (4,))
        24
    """
    return _estimate_bytes(_as_adjacency(adjacency, "adjacency", allow_zero=True), as_sizes(hidden_sizes), method, sparse)


def _estimate_bytes(A: Any, sizes: tuple[int, ...], method: str, sparse: bool) -> int:
    n_out, n_in = A.shape
    fan = [n_in, *sizes, n_out]
    if not sparse:
        return sum(a * b for a, b in zip(fan[:-1], fan[1:]))
    counts = _row_counts(A)
    nonzero = counts[counts > 0]
    lower = [*sizes, int(nonzero.size)]  # nonzeros of each mask, at least
    if sizes and method == "greedy" and nonzero.size:
        full, rest = divmod(sizes[0], nonzero.size)
        lower[0] = full * int(nonzero.sum()) + int(nonzero[:rest].sum())
    # CSR: (rows + 1) int32 offsets and one int32 index + one uint8 value per nonzero; the
    # factorizer also counts each mask's rows (8 bytes each) and keeps one int per hidden unit.
    return sum(12 * (rows + 1) + 5 * nnz for rows, nnz in zip(fan[:-1], lower)) + 4 * sum(sizes)


def required_width(adjacency: Any, method: str = "greedy") -> int:
    """Hidden width from which ``method`` is guaranteed to represent ``adjacency`` exactly.

    Example:
        >>> required_width([[0, 0], [1, 0], [1, 0]], "zuko")
        1
    """
    return _required_width(_as_adjacency(adjacency, "adjacency"), method)


def _required_width(A: Any, method: str) -> int:
    if method == "made":
        return int(A.shape[1])
    if is_scipy_sparse(A):
        if method == "zuko":
            rows = np.split(A.indices, A.indptr[1:-1])  # canonical CSR: sorted column lists
            return len({r.tobytes() for r in rows if r.size})
        return int(np.count_nonzero(np.diff(A.indptr)))
    nonzero = A.any(axis=1)
    if method == "zuko":
        return int(np.unique(A[nonzero], axis=0).shape[0])
    return int(np.count_nonzero(nonzero))


def check_masks(masks: Sequence[Any], adjacency: Any) -> bool:
    """True iff the masks' product has exactly the adjacency's sparsity pattern.

    Masks and adjacency may be dense or scipy sparse, mixed freely.

    Example:
        >>> check_masks([np.eye(2)], [[1, 0], [0, 1]])
        True
    """
    return bool(_C.check_masks(_as_masks(masks), _as_adjacency(adjacency, "adjacency", allow_zero=True)))


def path_counts(masks: Sequence[Any]) -> np.ndarray:
    """Integer (n_out x n_in) matrix of input->output path counts; its sum is Eq. 2.

    Example:
        >>> path_counts([np.ones((2, 3)), np.ones((3, 1))]).tolist()
        [[3, 3]]
    """
    return _C.path_counts(_as_masks(masks))


def connections(masks: Sequence[Any]) -> int:
    """Total number of input->output paths (the paper's Eq. 2) without forming path_counts.

    Example:
        >>> connections([np.ones((2, 3)), np.ones((3, 1))])
        6
    """
    return int(round(_C.connections(_as_masks(masks))))


def _sparse_module() -> Any:
    import scipy.sparse

    return scipy.sparse


def _as_adjacency(value: Any, name: str, *, allow_zero: bool = False) -> Any:
    if is_scipy_sparse(value):
        return as_binary_sparse(value, name, allow_zero=allow_zero)
    return as_binary_matrix(value, name, allow_zero=allow_zero)


def _as_masks(masks: Any) -> Any:
    # The C++ core reads numpy arrays and canonical CSR matrices; anything else is converted here
    # and anything that is not a sequence is left for the core to reject with its message.
    if isinstance(masks, (str, bytes)) or not hasattr(masks, "__iter__"):
        return masks
    if is_scipy_sparse(masks):
        raise TypeError("masks must be a list of 2-D arrays, got a single sparse matrix")
    out = []
    for i, m in enumerate(masks):
        if is_scipy_sparse(m):
            m = as_binary_sparse(m, f"masks[{i}]", allow_zero=True)
        elif hasattr(m, "detach") and hasattr(m, "cpu"):  # torch tensor, without importing torch
            m = m.detach().cpu().numpy()
        else:
            m = np.asarray(m)
        out.append(m)
    return out


def _row_counts(A: Any) -> np.ndarray:
    if is_scipy_sparse(A):
        return np.diff(A.indptr)
    return np.count_nonzero(A, axis=1)


def _from_csr_triple(triple: tuple[np.ndarray, np.ndarray, tuple[int, int]]) -> Any:
    indptr, indices, shape = triple
    return _sparse_module().csr_array((np.ones(indices.size, dtype=np.uint8), indices, indptr), shape=shape)
