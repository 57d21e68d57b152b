r"""A causal model's data in and out: observed rows, covariates, ``do`` values and the output kinds.

:class:`QueryIO` is the part of :class:`~strnn_fast.causal.CausalFlow` that turns what a user
passes (arrays, tensors, DataFrames matched by name, scalars or per-row ``do`` values) into
checked tensors in model order, and answers as a tensor, a dict of columns or a DataFrame. It
needs ``names``, ``d``, ``context_features``, ``flow`` (for the context names) and
``_device_dtype()`` from the class that mixes it in.

Example:
    >>> from strnn_fast.causal import CausalFlow
    >>> m = CausalFlow([("a", "b")])
    >>> m._rows([[1.0, 2.0]], "x_obs").tolist(), m._do({"b": 3.0}, 2)[0]
    ([[1.0, 2.0]], [1])
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validate import check_fits_dtype, choice
from ..variables import Variables, is_frame

__all__ = ["OUTPUTS", "QueryIO"]

OUTPUTS = ("auto", "tensor", "dict", "frame")


class QueryIO:
    """Rows, covariates and ``do`` values in; tensors, dicts or DataFrames out (see the module docstring)."""

    names: list[str] | None
    d: int
    context_features: int

    @property
    def variables(self) -> Variables:
        """The model's :class:`strnn_fast.variables.Variables` (names <-> indices)."""
        return Variables(self.names, self.d)

    def _do(self, do: Any, n: int, what: str = "do", dtype: torch.dtype | None = None) -> tuple[list[int], torch.Tensor]:
        """Resolves ``do`` into variable indices and an (n, k) value tensor on the model's device
        (in ``dtype``, the model's by default)."""
        if do is None:  # None is "no intervention" for an SEM, but a CausalFlow query needs one
            raise TypeError(f"{what} must be a mapping of variable -> value, e.g. {{'x': 1.5}}; got NoneType")
        device, model_dtype = self._device_dtype()
        dtype = dtype or model_dtype
        idx: list[int] = []
        cols: list[torch.Tensor] = []
        for i, key, value in self.variables.do_items(do, what):
            idx.append(i)
            column = self._do_column(value, n, f"{what}[{key!r}]")
            # Against the model's dtype even when the values are kept in float64: the flow reads
            # them in its own dtype (do=1e39 became inf, then NaN, in a float32 model).
            check_fits_dtype(column, model_dtype, f"{what}[{key!r}]")
            cols.append(column.to(device=device, dtype=dtype))
        values = torch.stack(cols, 1) if cols else torch.empty(n, 0, device=device, dtype=dtype)
        return idx, values

    @staticmethod
    def _do_column(value: Any, n: int, what: str) -> torch.Tensor:
        if isinstance(value, bool):
            raise TypeError(f"{what} must be a number or an array of numbers, got {value!r}")
        t = value.detach() if isinstance(value, torch.Tensor) else None
        if t is None:
            arr = np.asarray(value)
            if arr.dtype == object or arr.dtype.kind not in "iuf":
                raise TypeError(f"{what} must be a number or an array of numbers, got {value!r}")
            t = torch.from_numpy(np.array(arr, dtype=np.float64))
        elif not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                        torch.uint8)):
            raise TypeError(f"{what} must hold real numbers, got dtype {t.dtype}")
        if t.ndim == 0:
            t = t.reshape(1).expand(n)
        elif t.shape != (n,):
            raise ValueError(f"{what} must be a scalar or have shape ({n},) (one value per row), "
                             f"got shape {tuple(t.shape)}")
        if not torch.isfinite(t.double()).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return t

    def _rows(self, data: Any, what: str, *, adopt_names: bool = False, keep_precision: bool = False) -> torch.Tensor:
        """(m, d) float tensor on the model's device, columns in model order, in the model's dtype
        (or, with ``keep_precision``, in the data's when that is more precise)."""
        if is_frame(data):
            if self.names is None and data.shape[1] != self.d:
                raise ValueError(f"{what} has {data.shape[1]} columns but the model has {self.d} variables")
            if self.names is None and adopt_names and all(isinstance(c, str) for c in data.columns):
                self.names = [str(c) for c in data.columns]  # config reads it (see _resolved_config)
            data = self.variables.frame_rows(data, what) if self.names is not None else data.to_numpy()
        if isinstance(data, torch.Tensor):
            t = data.detach()
        else:
            arr = np.asarray(data)
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise TypeError(f"{what} must be a numeric array, tensor or DataFrame, got dtype {arr.dtype}")
            t = torch.from_numpy(np.array(arr, dtype=arr.dtype if arr.dtype.kind == "f" else np.float64))
        if t.ndim == 1:
            t = t.unsqueeze(0)
        if t.ndim != 2 or t.shape[1] != self.d:
            raise ValueError(f"{what} must have shape (m, {self.d}) (one column per variable), got {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError(f"{what} has no rows")
        device, dtype = self._device_dtype()
        if keep_precision and t.is_floating_point():
            dtype = torch.promote_types(t.dtype, dtype)
        check_fits_dtype(t, dtype, what, self.names)
        t = t.to(device=device, dtype=dtype)
        if not torch.isfinite(t).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return t

    def _context_rows(self, value: Any, what: str) -> np.ndarray:
        # Covariates as a float64 array: a DataFrame matched by the context names, tensors off their device.
        if is_frame(value):
            return Variables(self.flow.context_names, self.context_features).frame_rows(value, what)
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)

    def _keyed(self, x: torch.Tensor, output: str) -> Any:
        kind = self._output_kind(output)
        if kind == "tensor":
            return x
        if kind == "frame":
            return self.variables.to_frame(x)
        return {nm: x[:, i] for i, nm in enumerate(self._column_names())}

    def _keyed_row(self, row: torch.Tensor, output: str) -> Any:
        kind = self._output_kind(output)
        if kind == "tensor":
            return row
        values = row.detach().cpu().double().tolist()
        if kind == "frame":
            import pandas as pd

            return pd.Series(values, index=self._column_names())
        return dict(zip(self._column_names(), values))

    def _output_kind(self, output: str) -> str:
        kind = choice(output, OUTPUTS, "output")
        if kind == "auto":
            return "dict" if self.names is not None else "tensor"
        return kind

    def _column_names(self) -> list[str] | list[int]:
        return self.variables.labels()
