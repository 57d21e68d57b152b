r"""The reference package's public names, backed by strnn_fast: migrating is one import line.

``from strnn_fast.compat import StrNN, GreedyFactorizer, ZukoFactorizer, MADEFactorizer, check_masks``
replaces ``from strnn import StrNN`` / ``from strnn.factorizers import ...`` (``strnn`` 0.2.0).

* The factorizers take ``(adjacency, opt_args=None)`` and ``.factorize(hidden_sizes)`` returns
  the reference's masks: the same values, in the same dtypes (greedy float64, MADE bool, Zuko
  float64 with the first mask in the adjacency's dtype), even when the layers are too narrow to
  represent the adjacency (then the masks are invalid, as the reference's are; ``check_masks``
  tells). They are computed by the C++ core (:func:`strnn_fast.factorize`).
* ``check_masks(masks, adjacency)`` answers as the reference's does, including its acceptance of
  an adjacency wrapped in singleton leading dimensions (its product broadcasts).
* ``StrNN`` is :class:`strnn_fast.FastStrNN` with the reference's defaults: ``init="kaiming"``
  (``nn.Linear``'s initialization) and ``opt_args={"var_penalty_weight": 0.0}``.

Deliberate differences: bad input raises ValueError/TypeError naming the argument (the
reference raises AssertionError for invalid precomputed masks, ZeroDivisionError for an all-zero
adjacency, KeyError for an unknown ``opt_type``); the greedy factorizer also accepts
``hidden_sizes=()``, where the reference crashes.

Example:
    >>> import numpy as np
    >>> A = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    >>> masks = GreedyFactorizer(A).factorize([4, 4])
    >>> [m.shape for m in masks], masks[0].dtype
    ([(3, 4), (4, 4), (4, 3)], dtype('float64'))
    >>> check_masks(masks, A)
    True
"""
from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from .factorize import check_masks as _check_masks
from .factorize import factorize
from .nn import FastStrNN

__all__ = ["GreedyFactorizer", "MADEFactorizer", "StrNN", "ZukoFactorizer", "check_masks"]


def check_masks(masks: list[np.ndarray], adjacency: np.ndarray) -> bool:
    r"""True iff ``(masks[0] @ ... @ masks[-1]).T`` has exactly the adjacency's sparsity pattern.

    Arguments:
        masks: binary masks, input side first, each (fan_in x fan_out).
        adjacency: (n_out x n_in) binary matrix; singleton leading dimensions are dropped, as
            the reference's broadcasting product ignores them.

    Example:
        >>> check_masks([np.eye(2)], [np.eye(2)])
        True
    """
    A = np.asarray(adjacency)
    if A.ndim > 2 and all(n == 1 for n in A.shape[:-2]):
        A = A.reshape(A.shape[-2:])
    return _check_masks(masks, A)


class _Factorizer:
    """The reference's ``AdjacencyFactorizer`` interface: ``(adjacency, opt_args)`` then ``factorize``."""

    method = ""

    def __init__(self, adjacency: np.ndarray, opt_args: dict | None = None):
        self.adjacency = adjacency
        self.opt_args = opt_args

    def factorize(self, hidden_sizes: Sequence[int]) -> list[np.ndarray]:
        masks = factorize(self.adjacency, tuple(hidden_sizes), self.method, strict=False, **self._options())
        return self._as_reference_dtypes(masks)

    def _options(self) -> dict[str, Any]:
        return {}

    def _as_reference_dtypes(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        return [m.astype(np.float64) for m in masks]


class GreedyFactorizer(_Factorizer):
    r"""The StrNN paper's greedy factorizer (Algorithm 1), bit-identical to the reference's.

    Arguments:
        adjacency: (n_out x n_in) binary matrix.
        opt_args: ignored as by the reference, except ``{"improve": True}``, which gives spare
            hidden units better patterns (never fewer paths; see :func:`strnn_fast.factorize`).

    Example:
        >>> GreedyFactorizer(np.array([[0, 0], [1, 0]])).factorize([2])[1].tolist()
        [[0.0, 1.0], [0.0, 1.0]]
    """

    method = "greedy"

    def _options(self) -> dict[str, Any]:
        improve = (self.opt_args or {}).get("improve", False)
        return {"improve": improve} if improve else {}


class ZukoFactorizer(_Factorizer):
    r"""Zuko's factorization, identical to the reference's ``ZukoFactorizer``.

    Arguments:
        adjacency: (n_out x n_in) binary matrix (not all zero).
        opt_args: ignored, as by the reference.

    Example:
        >>> ZukoFactorizer(np.array([[0, 0], [1, 0]])).factorize([2])[0].tolist()
        [[1, 1], [0, 0]]
    """

    method = "zuko"

    def _as_reference_dtypes(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        # The reference's first mask is a slice of the adjacency; the others come from float64 products.
        first = masks[0].astype(np.asarray(self.adjacency).dtype)
        return [first, *super()._as_reference_dtypes(masks[1:])]


class MADEFactorizer(_Factorizer):
    r"""MADE's deterministic degrees, for the full lower triangle only (as the reference's).

    Arguments:
        adjacency: the (d x d) strictly lower-triangular matrix of ones; anything else raises
            ValueError here, as in the reference's constructor.
        opt_args: ignored, as by the reference.

    Example:
        >>> MADEFactorizer(np.tril(np.ones((3, 3)), -1)).factorize([3])[1].dtype
        dtype('bool')
    """

    method = "made"

    def __init__(self, adjacency: np.ndarray, opt_args: dict | None = None):
        A = np.asarray(adjacency)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.array_equal(A, np.tril(np.ones_like(A), -1)):
            raise ValueError("adjacency must be the full strictly lower-triangular matrix for MADEFactorizer "
                             "(MADE can only be used on a fully autoregressive adjacency)")
        super().__init__(adjacency, opt_args)

    def _as_reference_dtypes(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        return [m.astype(bool) for m in masks]


class StrNN(FastStrNN):
    r"""``strnn.StrNN`` as a drop-in: :class:`strnn_fast.FastStrNN` with the reference's defaults.

    Arguments are the reference's (``nin, hidden_sizes, nout, opt_type, opt_args,
    precomputed_masks, adjacency, activation``) plus FastStrNN's ``backend``, ``init`` and
    ``reorder``; only the defaults differ: ``init`` "kaiming" (as ``nn.Linear`` and the reference)
    and ``opt_args`` ``{"var_penalty_weight": 0.0}``, FastStrNN's own ``__init__`` reading them
    from the two class attributes below.

    Example:
        >>> import torch
        >>> net = StrNN(3, [8, 8], 3, adjacency=np.tril(np.ones((3, 3)), -1))
        >>> net(torch.randn(2, 3)).shape
        torch.Size([2, 3])
    """

    default_init = "kaiming"
    default_opt_args = MappingProxyType({"var_penalty_weight": 0.0})

    def update_masks(self) -> None:
        r"""Re-reads ``nin`` and ``nout``, refuses a size the adjacency or the layers cannot give, then
        re-computes the masks as :meth:`strnn_fast.FastStrNN.update_masks`.

        The reference asserts ``nout % nin == 0`` and then fails copying a mask of the wrong shape
        into its layer; here both are a ValueError naming the attribute, before any layer changes.

        Example:
            >>> net = StrNN(2, [4], 2, adjacency=np.array([[0, 0], [1, 0]]))
            >>> net.nout = 3
            >>> net.update_masks()
            Traceback (most recent call last):
            ...
            ValueError: nout=3 must be a multiple k * adjacency.shape[0] of adjacency.shape[0]=2 (k outputs per row of the adjacency)
        """
        n_rows, n_cols = self.A.shape
        if self.nin != n_cols:
            raise ValueError(f"nin={self.nin} must equal the adjacency's number of columns {n_cols}")
        if self.nout % n_rows:
            raise ValueError(f"nout={self.nout} must be a multiple k * adjacency.shape[0] of adjacency.shape[0]="
                             f"{n_rows} (k outputs per row of the adjacency)")
        built_in, built_out = self.layers[0].in_features, self.layers[-1].out_features
        if (self.nin, self.nout) != (built_in, built_out):
            raise ValueError(f"nin={self.nin}, nout={self.nout} differ from the layers' sizes nin={built_in}, "
                             f"nout={built_out}: build a new StrNN for another size")
        super().update_masks()
