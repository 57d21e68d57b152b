r"""The container every data set generator and loader returns, and the split/standardize steps.

Example:
    >>> import numpy as np
    >>> x = np.arange(20.0).reshape(10, 2)
    >>> parts = split(x, (0.6, 0.2, 0.2))
    >>> [p.shape[0] for p in parts]
    [6, 2, 2]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..standardize import Standardizer

__all__ = ["Dataset", "split", "standardize"]


@dataclass(frozen=True, eq=False)
class Dataset:
    r"""Train/validation/test samples over the same d variables, with their ground-truth graph.

    Arguments:
        train, val, test: (n_split, d) float arrays.
        adjacency: (d, d) bool array, ``adjacency[i, j]`` iff variable i depends on j.
        names: d variable names, or None.

    Example:
        >>> import numpy as np
        >>> ds = Dataset(np.zeros((3, 2)), np.zeros((1, 2)), np.zeros((1, 2)), np.eye(2, k=-1, dtype=bool))
        >>> ds.d, ds.sizes
        (2, (3, 1, 1))
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    adjacency: np.ndarray
    names: list[str] | None = None

    def __post_init__(self) -> None:
        d = self.adjacency.shape[0] if self.adjacency.ndim == 2 else -1
        if self.adjacency.shape != (d, d) or self.adjacency.dtype != bool:
            raise ValueError(f"adjacency must be a square bool array, got {self.adjacency.dtype} {self.adjacency.shape}")
        for field in ("train", "val", "test"):
            part = getattr(self, field)
            if not isinstance(part, np.ndarray) or part.ndim != 2 or part.shape[1] != d:
                shape = getattr(part, "shape", type(part).__name__)
                raise ValueError(f"{field} must be a 2-D array with {d} columns (one per variable), got {shape}")
        if self.names is not None and len(self.names) != d:
            raise ValueError(f"names must have {d} entries, got {len(self.names)}")

    @property
    def d(self) -> int:
        """Number of variables."""
        return int(self.adjacency.shape[0])

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Row counts of (train, val, test)."""
        return (len(self.train), len(self.val), len(self.test))


def split(x: np.ndarray, fractions: Sequence[float], *, allow_empty: bool = False) -> list[np.ndarray]:
    r"""Cuts the rows of ``x`` into consecutive parts with the given fractions (rounded; the last takes the rest).

    Rows are not shuffled: generated samples are already i.i.d. (shuffle first otherwise, as
    ``strnn-fast fit`` and :meth:`strnn_fast.causal.CausalFlow.fit` do).

    Arguments:
        x: (n, d) array (or (n,) row indices).
        fractions: positive fractions summing to 1.
        allow_empty: accept zero fractions and parts that round to no rows (an optional
            validation share).

    Returns:
        One array per fraction.

    Example:
        >>> [len(p) for p in split(np.zeros((7, 1)), (0.5, 0.5))]
        [4, 3]
        >>> [len(p) for p in split(np.arange(7), (0.0, 1.0), allow_empty=True)]
        [0, 7]
    """
    f = np.asarray(fractions, dtype=np.float64)
    if (f.ndim != 1 or f.size == 0 or (f < 0).any() or (not allow_empty and (f == 0).any())
            or not np.isclose(f.sum(), 1.0)):
        raise ValueError(f"fractions must be positive and sum to 1, got {tuple(fractions)}")
    cuts = np.round(np.cumsum(f[:-1]) * len(x)).astype(int)
    parts = np.split(x, cuts)
    if not allow_empty and any(len(p) == 0 for p in parts):
        raise ValueError(f"{len(x)} rows are too few for the split {tuple(fractions)}: a part would be empty")
    return parts


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    r"""Shifts and scales every array by the training set's per-column mean and standard deviation.

    A constant training column is refused (ValueError naming it; see
    :class:`strnn_fast.standardize.Standardizer` for the convention).

    Arguments:
        train: (n, d) array whose statistics are used.
        others: further (m, d) arrays, transformed with the same statistics.

    Returns:
        ``[train, *others]`` standardized.

    Example:
        >>> [a.tolist() for a in standardize(np.array([[0.0], [2.0]]), np.array([[4.0]]))]
        [[[-1.0], [1.0]], [[3.0]]]
    """
    scaler = Standardizer.fit(train, what="train")
    return [scaler.transform(np.asarray(a, dtype=np.float64)) for a in (train, *others)]
