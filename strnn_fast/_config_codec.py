r"""A model's constructor arguments as JSON plus tensors: what a model file's header holds.

``encode`` turns a config (numbers, strings, lists, dicts, numpy arrays, tensors, scipy sparse
matrices) into JSON-friendly values, moving every array into a dict of tensors under
``config/<k>`` keys; ``decode`` is its inverse. Nothing is pickled, so reading a header cannot
run code. Used by :mod:`strnn_fast.serialization`.

Example:
    >>> tensors = {}
    >>> header = encode({"adjacency": [[0, 0], [1, 0]], "names": ("a", "b")}, tensors, "config")
    >>> header["names"], sorted(tensors)
    ({'__tuple__': ['a', 'b']}, ['config/0'])
    >>> decode(header, tensors, "config")["adjacency"]
    [[0, 0], [1, 0]]
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ._validate import is_scipy_sparse

__all__ = ["decode", "encode"]


def encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """JSON-friendly copy of ``value``; arrays go to ``tensors`` and are replaced by references."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{where} holds {float(value)}, which a model file cannot store")
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, torch.Tensor):
        return _store(value.detach().cpu(), "torch", tensors, None)
    if isinstance(value, np.ndarray):
        return _store(_array_tensor(value, where), "numpy", tensors, str(value.dtype))
    if is_scipy_sparse(value):
        coo = value.tocoo()
        return {"__sparse__": value.format, "shape": list(coo.shape), "dtype": str(coo.dtype),
                "matrix": type(value).__name__.endswith("_matrix"),
                "row": _store(torch.from_numpy(np.asarray(coo.row, dtype=np.int64)), "numpy", tensors, "int64"),
                "col": _store(torch.from_numpy(np.asarray(coo.col, dtype=np.int64)), "numpy", tensors, "int64"),
                "data": _store(_array_tensor(np.asarray(coo.data), where), "numpy", tensors, str(coo.dtype))}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{where} has non-string keys; a model file stores string-keyed mappings only")
        if "__tensor__" in value or "__sparse__" in value:
            raise ValueError(f"{where} uses a reserved key (__tensor__ / __sparse__)")
        return {k: encode(v, tensors, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        matrix = _numeric_matrix(value)
        if matrix is not None:  # adjacency / masks as nested lists: a tensor, not JSON numbers
            return _store(torch.from_numpy(matrix), "list", tensors, str(matrix.dtype))
        items = [encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    raise TypeError(f"{where} holds a {type(value).__name__}, which a model file cannot store "
                    "(allowed: numbers, strings, bools, None, lists, dicts, arrays, tensors)")


def decode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, list):
        return [decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return _load_tensor(value, tensors, where)
    if "__tuple__" in value:
        items = value["__tuple__"]
        if not isinstance(items, list):
            raise ValueError(f"{where}: a tuple entry must hold a list")
        return tuple(decode(v, tensors, where) for v in items)
    if "__sparse__" in value:
        return _load_sparse(value, tensors, where)
    return {k: decode(v, tensors, where) for k, v in value.items()}


def _store(t: torch.Tensor, kind: str, tensors: dict[str, torch.Tensor], dtype: str | None) -> dict[str, Any]:
    key = f"config/{len([k for k in tensors if k.startswith('config/')])}"
    tensors[key] = t.contiguous()
    ref: dict[str, Any] = {"__tensor__": key, "kind": kind}
    if dtype is not None:
        ref["dtype"] = dtype
    return ref


def _load_tensor(ref: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> Any:
    key, kind = ref.get("__tensor__"), ref.get("kind")
    if not isinstance(key, str) or key not in tensors:
        raise ValueError(f"{where}: the header refers to a missing tensor {key!r}")
    t = tensors[key]
    if kind == "torch":
        return t.clone()
    if kind not in ("numpy", "list"):
        raise ValueError(f"{where}: unknown array kind {kind!r} for tensor {key!r}")
    try:
        host = t.cpu().numpy()  # map_location may have put it on a GPU
        dtype = np.dtype(ref.get("dtype", str(host.dtype)))
        if dtype.kind not in "biuf":
            raise TypeError(f"dtype {dtype} is not numeric")
        arr = host.astype(dtype, copy=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: bad dtype {ref.get('dtype')!r} for tensor {key!r} ({err})") from None
    return arr.tolist() if kind == "list" else arr


def _load_sparse(ref: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> Any:
    import scipy.sparse as sp

    try:
        shape = tuple(int(s) for s in ref["shape"])
        row, col, data = (np.asarray(_load_tensor(ref[k], tensors, where)) for k in ("row", "col", "data"))
        coo = (sp.coo_matrix if ref.get("matrix") else sp.coo_array)((data, (row, col)), shape=shape)
        return coo.asformat(str(ref["__sparse__"]))
    except ValueError as err:
        raise ValueError(f"{where}: bad sparse array in the header ({err})") from None
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: malformed sparse array entry ({type(err).__name__}: {err})") from None


def _array_tensor(arr: np.ndarray, where: str) -> torch.Tensor:
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{where} holds an array of dtype {arr.dtype}, which a model file cannot store")
    if arr.dtype.kind == "u" and arr.dtype != np.uint8:
        arr = arr.astype(np.int64)  # torch serializes uint8 only among unsigned types; dtype kept in header
    if arr.dtype == np.float16 or arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        arr = arr.astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _numeric_matrix(value: list | tuple) -> np.ndarray | None:
    """A rectangular list of lists of plain numbers (>= 2-D) as an array; None otherwise."""
    if not value or not all(isinstance(row, (list, tuple)) for row in value):
        return None
    flat: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        for v in item:
            if isinstance(v, (list, tuple)):
                stack.append(v)
            elif isinstance(v, (bool, int, float)) and not isinstance(v, np.generic):
                flat.append(v)
            else:
                return None
    try:
        arr = np.array(value)
    except ValueError:  # ragged
        return None
    if arr.dtype.kind not in "biuf" or arr.ndim < 2 or arr.size != len(flat):
        return None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return None
    return arr

