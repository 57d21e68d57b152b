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

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _C
from ._validate import as_binary_matrix, as_sizes, choice

METHODS = ("greedy", "zuko", "made", "exact")


def factorize(
    adjacency: Any,
    hidden_sizes: Sequence[int],
    method: str = "greedy",
    **options: Any,
) -> list[np.ndarray]:
    r"""Factorizes ``adjacency`` (n_out x n_in) into len(hidden_sizes)+1 uint8 masks.

    Arguments:
        adjacency: binary matrix, A[i, j] = 1 iff output i may depend on input j.
        hidden_sizes: width of each hidden layer.
        method: one of "greedy", "zuko", "made", "exact".
        options: greedy: ``improve`` (bool). exact: ``var_penalty``, ``time_limit``.

    Returns:
        The masks, input side first, each (fan_in x fan_out).

    Raises:
        ValueError: non-binary/empty/all-zero adjacency, or layers too narrow to represent A.

    Example:
        >>> factorize([[0, 0], [1, 0]], (2,), method="zuko")[0].shape
        (2, 2)
    """
    method = choice(method, METHODS, "method")
    A = as_binary_matrix(adjacency, "adjacency")
    sizes = as_sizes(hidden_sizes)
    if method == "exact":
        from .exact import factorize_exact

        return factorize_exact(A, sizes, **options).masks
    improve = options.pop("improve", False)
    if options:
        raise TypeError(f"unexpected option(s) for method={method!r}: {', '.join(sorted(options))}")
    if not isinstance(improve, bool):
        raise TypeError(f"improve must be a bool, got {improve!r}")
    if improve and method != "greedy":
        raise ValueError("improve=True is only available for method='greedy'")
    if method == "greedy":
        masks, _ = _C.greedy_factorize(A, sizes, improve)
    elif method == "zuko":
        masks = _C.zuko_factorize(A, sizes)
    else:
        masks = _C.made_factorize(A, sizes)
    need = required_width(A, method)
    # Wide enough layers are valid by construction (every nonzero row gets a unit); narrower ones
    # may still work, so only they pay for the full check.
    if min(sizes, default=need) < need and not _C.check_masks(masks, A):
        raise ValueError(
            f"hidden_sizes={sizes} is too narrow to represent the adjacency exactly with "
            f"method={method!r}: every hidden layer needs at least {need} units "
            f"({_WIDTH_REASON[method]})"
        )
    return list(masks)


_WIDTH_REASON = {
    "greedy": "the number of nonzero rows of the adjacency",
    "zuko": "the number of distinct nonzero rows of the adjacency",
    "made": "the number of variables",
}


def required_width(adjacency: Any, method: str = "greedy") -> int:
    """Hidden width from which ``method`` is guaranteed to represent ``adjacency`` exactly.

    Example:
        >>> required_width([[0, 0], [1, 0], [1, 0]], "zuko")
        1
    """
    A = as_binary_matrix(adjacency, "adjacency")
    rows = A[A.any(axis=1)]
    if method == "zuko":
        return int(np.unique(rows, axis=0).shape[0])
    if method == "made":
        return int(A.shape[1])
    return int(rows.shape[0])


def check_masks(masks: Sequence[Any], adjacency: Any) -> bool:
    """True iff the masks' product has exactly the adjacency's sparsity pattern.

    Example:
        >>> check_masks([np.eye(2)], [[1, 0], [0, 1]])
        True
    """
    return bool(_C.check_masks([np.asarray(m) for m in masks], as_binary_matrix(adjacency, allow_zero=True)))


def path_counts(masks: Sequence[Any]) -> np.ndarray:
    """Integer (n_out x n_in) matrix of input->output path counts; its sum is Eq. 2.

    Example:
        >>> path_counts([np.ones((2, 3)), np.ones((3, 1))]).tolist()
        [[3, 3]]
    """
    return _C.path_counts([np.asarray(m) for m in masks])


def connections(masks: Sequence[Any]) -> int:
    """Total number of input->output paths (the paper's Eq. 2) without forming path_counts.

    Example:
        >>> connections([np.ones((2, 3)), np.ones((3, 1))])
        6
    """
    return int(round(_C.connections([np.asarray(m) for m in masks])))
