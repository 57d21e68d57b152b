"""Argument checks shared by the public entry points (clear errors instead of crashes)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def as_binary_matrix(value: Any, name: str = "adjacency", *, allow_zero: bool = False,
                     square: bool = False) -> np.ndarray:
    """Returns `value` as a 2-D uint8 0/1 array or raises ValueError/TypeError naming `name`.

    Accepts numpy arrays, torch tensors and nested lists of bool, integer or float entries; the
    one binary-matrix check, rectangular (masks, ``n_out x n_in``) or, with ``square``, a (d, d)
    graph (:mod:`strnn_fast.graph`). ``allow_zero``: accept a matrix without any one.

    Example:
        >>> as_binary_matrix([[0, 1], [0, 0]]).dtype
        dtype('uint8')
        >>> as_binary_matrix([[0, 1, 0]], square=True)
        Traceback (most recent call last):
        ...
        ValueError: adjacency must be a square (d, d) matrix, got shape (1, 3)
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor, without importing torch
        value = value.detach().cpu()
        # Floats as float64 (0/1 and any other value exactly): bfloat16 has no numpy dtype.
        value = (value.double() if value.is_floating_point() else value).numpy()
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged nested lists: a shape error
        raise ValueError(f"{name} must be a {'square ' if square else ''}2-D array of 0/1 values; "
                         "its rows have different lengths") from err
    except Exception as err:
        raise TypeError(f"{name} must be a 2-D array of 0/1 values, got {type(value).__name__}") from err
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold bool, integer or float 0/1 values, got dtype {arr.dtype}")
    if square and (arr.ndim != 2 or arr.shape[0] != arr.shape[1]):
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {arr.shape}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_out x n_in), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty (at least one variable), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; it must be binary (0/1)")
    if arr.dtype.kind != "b":  # bools are binary; two comparisons beat np.isin by ~10x at d=10,000
        not_binary = (arr != 0) & (arr != 1)
        if not_binary.any():
            i, j = np.argwhere(not_binary)[0]
            raise ValueError(f"{name} must be binary (every entry 0 or 1), found {arr[i, j].item()!r} at [{i}, {j}]")
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


def as_int(value: Any, name: str) -> int:
    """Returns `value` as an int (numpy ints too; bools refused) or raises TypeError, e.g. a seed."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def as_seed(value: Any, name: str = "seed") -> int:
    r"""Returns ``value`` as a seed torch's generators take (an int in [0, 2**64)) or raises naming it.

    Example:
        >>> as_seed(2**70)
        Traceback (most recent call last):
        ...
        ValueError: seed must be an integer from 0 to 2**64 - 1, got 1180591620717411303424
    """
    value = as_int(value, name)
    if not 0 <= value < 2**64:
        raise ValueError(f"{name} must be an integer from 0 to 2**64 - 1, got {value}")
    return value


def as_non_negative_int(value: Any, name: str) -> int:
    """Returns `value` as an int >= 0 or raises (TypeError for a non-int, ValueError below 0)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {int(value)}")
    return int(value)


def as_real(value: Any, name: str, *, positive: bool = False, non_negative: bool = False,
            finite: bool = True) -> float:
    r"""Returns a real number as a float or raises: a wrong type (bools, strings, arrays) is a
    TypeError; NaN, an infinity (unless ``finite=False``) or a wrong sign is a ValueError.

    Example:
        >>> as_real(2, "tol", positive=True)
        2.0
        >>> as_real(float("inf"), "tol", positive=True)
        Traceback (most recent call last):
        ...
        ValueError: tol must be positive and finite, got inf
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    sign = "positive" if positive else "non-negative" if non_negative else ""
    if math.isnan(out) or (finite and math.isinf(out)) or (positive and not out > 0) or (non_negative and out < 0):
        need = " and ".join(w for w in (sign, "finite" if finite else "not NaN") if w)
        raise ValueError(f"{name} must be {need}, got {out}")
    return out


def as_block(value: Any, name: str = "block") -> tuple[Any, Any]:
    r"""Returns a tile shape ``(block_out, block_in)`` given as a tuple or list of two, or raises
    TypeError; the C++ core checks that both sides are ints in [1, 65536] (its own error).

    Example:
        >>> as_block([32, 64])
        (32, 64)
    """
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (block_out, block_in), got {value!r}")
    return value[0], value[1]


def choice(value: Any, options: Sequence[str], name: str) -> str:
    """Returns the lower-cased option or raises ValueError listing the valid ones."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(options)}; got {value!r}")
    key = value.lower()
    if key not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of: {', '.join(options)}")
    return key


def is_scipy_sparse(value: Any) -> bool:
    """Whether `value` is a scipy.sparse array or matrix (scipy is not imported when not loaded).

    Example:
        >>> is_scipy_sparse(np.eye(2))
        False
    """
    import sys

    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(value)


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


def as_sample_shape(value: Any, name: str = "sample_shape") -> tuple[int, ...]:
    r"""Returns a tuple of non-negative ints: an int (numpy ints too) ``n`` means ``(n,)``.

    Strings, floats and bools are refused (``"12"`` is not the shape (1, 2)).

    Example:
        >>> as_sample_shape(np.int64(3)), as_sample_shape((2, 3))
        ((3,), (2, 3))
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
        if v < 0:
            raise ValueError(f"{name} must hold non-negative ints, got {value!r}")
        out.append(int(v))
    return tuple(out)


def column_stats(x: np.ndarray, names: Sequence[str] | None = None,
                 what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    r"""Per-column mean and standard deviation (float64) of training rows, for standardizing.

    The policy for constant columns, shared by every place that standardizes (``strnn-fast fit``,
    CausalFlow, :func:`strnn_fast.data.dataset.standardize`, :class:`strnn_fast.standardize.Standardized`):
    a column with zero spread is refused with a ValueError naming it, and so is one whose spread
    no model can represent (std below float32's smallest normal number, or at float64 rounding
    level relative to its mean). Statistics are float64 and standardization happens in float64
    (large offsets such as Unix timestamps keep their spread). A continuous density of a
    constant is infinite, and scaling it by 1 instead would let the model spread it out and sample
    values the data never take; drop such a column (it carries no information) and fit the rest.

    Example:
        >>> column_stats(np.array([[1.0, 7.0], [3.0, 7.0]]), ["a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: data column 'b' is constant (always 7) in the training rows; a density model cannot be fitted to a constant: drop that column
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty 2-D array (rows x columns), got shape {arr.shape}")
    mean, std = arr.mean(axis=0), arr.std(axis=0)
    # A spread at the level of float64 rounding is noise, not data; one below float32's smallest
    # normal number cannot be represented by a float32 model (its values flush to 0).
    unrepresentable = np.flatnonzero((std > 0) & ((std <= np.abs(mean) * 64 * np.finfo(np.float64).eps)
                                                  | (std < np.finfo(np.float32).tiny)))
    if unrepresentable.size:
        c = int(unrepresentable[0])
        label = repr(names[c]) if names is not None else str(c)
        raise ValueError(f"{what} column {label} has mean {mean[c]:.17g} and std {std[c]:.3g}: a spread that small "
                         f"cannot be represented (it is below float64 resolution relative to the mean, or below "
                         f"float32's smallest number {np.finfo(np.float32).tiny:.3g}); rescale or re-centre that column")
    constant = np.flatnonzero(~(std > 0))
    if constant.size:
        labels = [repr(names[c]) if names is not None else str(int(c)) for c in constant]
        noun = "column" if len(labels) == 1 else "columns"
        values = ", ".join(f"{arr[0, c]:g}" for c in constant[:5])
        raise ValueError(f"{what} {noun} {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''} "
                         f"{'is' if len(labels) == 1 else 'are'} constant (always {values}) in the training rows; "
                         f"a density model cannot be fitted to a constant: drop that {noun}")
    return mean, std


def check_fits_dtype(x: Any, dtype: Any, what: str = "data", names: Sequence[str] | None = None) -> None:
    r"""Raises ValueError when finite values of ``x`` overflow the floating ``dtype`` (e.g. 1e40 in float32).

    Example:
        >>> import torch
        >>> check_fits_dtype(np.array([[1e40]]), torch.float32, "train")
        Traceback (most recent call last):
        ...
        ValueError: train column 0 holds 1e+40 at row 0 (0-based), beyond the range of the model's float32 (max 3.4e+38); rescale the data or use a float64 model
    """
    import torch

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        return
    name, limit = str(dtype).removeprefix("torch."), float(torch.finfo(dtype).max)
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() and float(torch.finfo(x.dtype).max) <= limit:
            return  # cannot overflow: skip the copy
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f" and float(np.finfo(arr.dtype).max) <= limit):
        return
    big = np.isfinite(arr) & (np.abs(arr.astype(np.float64)) > limit)
    if big.any():
        idx = tuple(int(i) for i in np.argwhere(big)[0])
        col = idx[-1] if arr.ndim >= 1 else 0
        label = repr(names[col]) if names is not None and col < len(names) else str(col)
        raise ValueError(f"{what} column {label} holds {float(arr[idx]):g} at row {idx[0] if arr.ndim > 1 else 0} (0-based), "
                         f"beyond the range of the model's {name} (max {limit:.2g}); "
                         "rescale the data or use a float64 model")


def as_flag(value: Any, name: str) -> bool:
    r"""Returns ``value`` if it is a bool, else raises TypeError naming ``name``.

    Example:
        >>> as_flag(1, "as_frame")
        Traceback (most recent call last):
        ...
        TypeError: as_frame must be True or False, got 1
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def as_rows(value: Any, name: str, dtype: Any, names: Any = None) -> Any:
    r"""``value`` (array, tensor or DataFrame) as a finite (n, d) CPU tensor of ``dtype``, or raises naming ``name``.

    A DataFrame is matched by name to ``names`` (an unnamed model reads it by position).

    Example:
        >>> import torch
        >>> as_rows([[1, 2], [3, 4]], "train", torch.float32).dtype
        torch.float32
    """
    import torch

    from .variables import Variables, is_frame

    if is_frame(value):  # matched by name to a named model; an unnamed one reads it by position
        value = Variables(names).frame_rows(value, name) if names is not None else value.to_numpy()
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        t = value.detach().cpu()
    else:
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric (n, d) array or tensor, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n samples x d variables), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    check_fits_dtype(t, dtype, name, names)
    t = t.to(dtype)
    if not torch.isfinite(t).all():
        row = int((~torch.isfinite(t)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name} contains NaN or infinite values (first in row {row}); drop or impute those rows")
    return t


def as_input(x: Any, width: int, like: Any, name: str = "x") -> Any:
    r"""Returns tensor ``x`` of shape (..., width) cast to ``like``'s dtype and device, or raises.

    Example:
        >>> import torch
        >>> as_input(torch.zeros(2, 3, dtype=torch.float64), 3, torch.zeros(1)).dtype
        torch.float32
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., {width}), got {type(x).__name__}; "
                        "convert it with torch.as_tensor(x)")
    if x.ndim == 0 or x.shape[-1] != width:
        raise ValueError(f"{name} must have shape (..., {width}), got {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.dtype != like.dtype or x.device != like.device:
        x = x.to(dtype=like.dtype, device=like.device)
    return x


def is_binary_array(value: Any) -> bool:
    """A non-empty 2-D uint8/bool numpy array holding only 0 and 1 (checked in one pass): a
    factorizer's mask, which needs none of the general (slow at 10^8 entries) validation.

    Example:
        >>> is_binary_array(np.eye(2, dtype=np.uint8)), is_binary_array(np.eye(2))
        (True, False)
    """
    return (isinstance(value, np.ndarray) and value.ndim == 2 and value.size > 0
            and value.dtype in (np.uint8, np.bool_) and int(value.max()) <= 1)


def warn_if_unstandardized(model: Any, x: Any) -> None:
    """Warns (once per call) when training columns are far from zero mean and unit variance.

    The policy for Python fits: warn and point to Standardized, leaving the data as given (the
    CLI and CausalFlow standardize themselves, so they never see this). Binary density data are
    modelled as 0/1 and are exempt."""
    import torch

    if getattr(model, "data_type", None) == "binary" or not isinstance(x, torch.Tensor) or len(x) < 2:
        return
    x64 = x.detach().double()
    mean, std = x64.mean(0), x64.std(0, correction=0)
    far = ((mean.abs() > 3 * std.clamp(min=1)) | (std > 10) | (std < 0.1)).nonzero().flatten().tolist()
    if far:
        c = far[0]
        warnings.warn(f"training columns {far[:10]} are far from standardized (column {c}: mean {float(mean[c]):.4g}, "
                      f"std {float(std[c]):.4g}); a flow with a standard-normal base trains poorly in raw units. Fit "
                      "on strnn_fast.standardize.Standardizer.fit(x).transform(x) and wrap the model in "
                      "strnn_fast.standardize.Standardized (as strnn-fast fit and CausalFlow do)",
                      UserWarning, stacklevel=3)
