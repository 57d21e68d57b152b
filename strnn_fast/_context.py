r"""Context (conditioning features) checks shared by the conditional flows and density estimators.

A conditional model of d variables on C context features reads a (d, C) 0/1 context adjacency
(row i: the features variable i may read) and a context of one (C,) row or one row per sample.

The one home of the context checks: every public entry point (a flow's ``log_prob``, ``sample``,
``transform``, ``inverse`` and Distribution, a density model's ``log_prob`` and ``sample``) calls
:func:`check_context` or :func:`broadcast_context` once; what lies below (flow steps,
conditioners, which concatenate ``[x, c]``, ODE dynamics) takes the checked (B, C) rows as given.

Example:
    >>> as_context_adjacency(None, 3, 2).astype(int).tolist()
    [[1, 1], [1, 1], [1, 1]]
    >>> import torch
    >>> check_context(torch.zeros(2), 4, 2, torch.zeros(1, dtype=torch.float64)).shape
    torch.Size([4, 2])
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._validate import as_binary_matrix, as_non_negative_int

__all__ = ["as_context_adjacency", "as_context_features", "as_context_names", "broadcast_context",
           "check_context"]


def as_context_features(value: Any) -> int:
    """Returns ``value`` as a non-negative int or raises naming context_features."""
    return as_non_negative_int(value, "context_features")


def as_context_adjacency(value: Any, d: int, C: int) -> np.ndarray:
    """The (d, C) bool context adjacency (all ones when None), or a ValueError/TypeError naming it."""
    if value is None:
        return np.ones((d, C), dtype=bool)
    if not C:
        raise ValueError("context_adjacency needs context_features > 0")
    out = as_binary_matrix(value, "context_adjacency", allow_zero=True).astype(bool)
    if out.shape != (d, C):
        raise ValueError(f"context_adjacency must have shape (d, context_features) = ({d}, {C}), got {out.shape}")
    return out


def as_context_names(value: Any, C: int) -> list[str] | None:
    r"""The C context feature names as a list (None stays None), or a ValueError naming context_names.

    Example:
        >>> as_context_names(("age", "dose"), 2)
        ['age', 'dose']
        >>> as_context_names(["age"], 2)
        Traceback (most recent call last):
        ...
        ValueError: context_names must have context_features=2 entries, got ['age']
    """
    if value is None:
        return None
    if isinstance(value, str) or len(value) != C:
        raise ValueError(f"context_names must have context_features={C} entries, got {value!r}")
    return [str(v) for v in value]


def check_context(context: Any, rows: int, C: int, like: torch.Tensor) -> torch.Tensor | None:
    """Returns ``context`` as (rows, C) in ``like``'s dtype and device (a (C,) one is repeated), or raises.

    None is returned (and required) when C = 0. For the entry points that take rows
    (``transform``, ``inverse``, density models); :func:`broadcast_context` for batch shapes.
    """
    context = _checked(context, C, f"({rows}, {C}) or ({C},)")
    if context is None:
        return None
    if context.ndim == 1:
        context = context.expand(rows, C)
    if context.shape != (rows, C):
        raise ValueError(f"context must have shape ({rows}, {C}) or ({C},), got {tuple(context.shape)}")
    return context.to(dtype=like.dtype, device=like.device)


def broadcast_context(context: Any, batch: torch.Size, C: int,
                      like: torch.Tensor) -> tuple[torch.Size, torch.Tensor | None]:
    r"""The broadcast of the batch shape ``batch`` and the leading shape of ``context`` (..., C), and
    the context as one (C,) row per element of that shape, in ``like``'s dtype and device.

    For the entry points that take batch shapes (``log_prob``, ``sample``, a flow's Distribution);
    without context (C = 0, ``context`` None) the batch shape is returned as it is.

    Example:
        >>> shape, rows = broadcast_context(torch.zeros(3, 1, 2), torch.Size([4]), 2, torch.zeros(1))
        >>> tuple(shape), tuple(rows.shape)
        ((3, 4), (12, 2))
    """
    context = _checked(context, C, f"(..., {C})")
    if context is None:
        return batch, None
    try:
        shape = torch.broadcast_shapes(batch, context.shape[:-1])
    except RuntimeError as err:
        raise ValueError(f"context of shape {tuple(context.shape)} does not broadcast with the batch shape "
                         f"{tuple(batch)}") from err
    return shape, context.expand(*shape, C).reshape(-1, C).to(dtype=like.dtype, device=like.device)


def _checked(context: Any, C: int, shape: str) -> torch.Tensor | None:
    # What every entry point checks: None exactly when C = 0, a real tensor, C features last.
    if not C:
        if context is not None:
            raise ValueError("context must be None: this model has no context features (context_features=0)")
        return None
    if context is None:
        raise ValueError(f"context is required: this model is conditioned on context_features={C} features")
    if not isinstance(context, torch.Tensor):
        raise TypeError(f"context must be a torch.Tensor of shape {shape}, got {type(context).__name__}")
    if context.ndim == 0 or context.shape[-1] != C:
        raise ValueError(f"context must have shape {shape}, got {tuple(context.shape)}")
    return context
