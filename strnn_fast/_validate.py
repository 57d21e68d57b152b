"""Argument checks shared by the public entry points (clear errors instead of crashes)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def as_binary_matrix(value: Any, name: str = "adjacency", *, allow_zero: bool = False) -> np.ndarray:
    """Returns `value` as a 2-D uint8 0/1 array or raises ValueError/TypeError naming `name`.

    Accepts numpy arrays, torch tensors and nested lists of bool, integer or float entries.

    Example:
        >>> as_binary_matrix([[0, 1], [0, 0]]).dtype
        dtype('uint8')
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name} must be a 2-D array of 0/1 values, got {type(value).__name__}") from err
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold bool, integer or float values, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_out x n_in), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; it must be binary (0/1)")
    if arr.dtype.kind != "b":  # bools are binary; two comparisons beat np.isin by ~10x at d=10,000
        not_binary = (arr != 0) & (arr != 1)
        if not_binary.any():
            raise ValueError(f"{name} must be binary (every entry 0 or 1), found {arr[not_binary].flat[0]!r}")
    out = arr.astype(np.uint8, copy=False)
    if not allow_zero and not out.any():
        raise ValueError(f"{name} is all zero: no output may depend on any input, so there is nothing to learn")
    return np.ascontiguousarray(out)


def as_sizes(value: Any, name: str = "hidden_sizes") -> tuple[int, ...]:
    """Returns a tuple of positive ints or raises (a bare int is accepted as one layer)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),)
    if not isinstance(value, Sequence) and not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a sequence of positive integers, got {type(value).__name__}")
    sizes = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must contain integers, got {v!r}")
        if v <= 0:
            raise ValueError(f"{name} entries must be positive, got {int(v)}")
        sizes.append(int(v))
    return tuple(sizes)


def as_positive_int(value: Any, name: str) -> int:
    """Returns `value` as a positive int or raises."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {int(value)}")
    return int(value)


def choice(value: Any, options: Sequence[str], name: str) -> str:
    """Returns the lower-cased option or raises ValueError listing the valid ones."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(options)}; got {value!r}")
    key = value.lower()
    if key not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of: {', '.join(options)}")
    return key


def as_binary_sparse(value: Any, name: str = "adjacency", *, allow_zero: bool = False) -> Any:
    """Returns a scipy sparse `value` as a canonical uint8 ``scipy.sparse.csr_array`` of ones.

    The sparse twin of :func:`as_binary_matrix`: any scipy sparse format is accepted, duplicates
    are summed (as scipy defines them) before the 0/1 check, and stored zeros are dropped. The
    input is never modified.

    Example:
        >>> import scipy.sparse as sp
        >>> as_binary_sparse(sp.coo_array(([1.0, 0.0], ([1, 0], [0, 1])), shape=(2, 2))).nnz
        1
    """
    import scipy.sparse as sp

    if value.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_out x n_in), got shape {value.shape}")
    if value.dtype == object or value.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold bool, integer or float values, got dtype {value.dtype}")
    if 0 in value.shape:
        raise ValueError(f"{name} must not be empty, got shape {value.shape}")
    out = sp.csr_array(value, copy=True)
    out.sum_duplicates()
    data = out.data
    if data.dtype.kind == "f" and np.isnan(data).any():
        raise ValueError(f"{name} contains NaN; it must be binary (0/1)")
    if not np.isin(data, (0, 1)).all():
        bad = data[~np.isin(data, (0, 1))][0]
        raise ValueError(f"{name} must be binary (every entry 0 or 1), found {bad!r}")
    out.eliminate_zeros()
    out = out.astype(np.uint8, copy=False)
    if not allow_zero and out.nnz == 0:
        raise ValueError(f"{name} is all zero: no output may depend on any input, so there is nothing to learn")
    return out
