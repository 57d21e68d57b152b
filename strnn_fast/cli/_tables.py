r"""Input tables of the commands that read a saved model: data rows and ``--context`` rows.

One home for what ``sample``, ``logprob``, ``intervene`` and ``counterfactual`` read besides the
model file:

* :func:`read_rows`: a data table in the model's variable order (named columns matched by name
  through :class:`strnn_fast.variables.Variables`), refused if the model's dtype cannot hold it;
* :func:`read_context`: the ``--context FILE`` table of a conditional model (``fit --context``), in
  the model's context order, one row for all or one row per sample / data row; the errors name
  ``--context`` (missing or extra context, wrong columns or row count, NaN);
* :func:`in_batches`: a per-row function over a table (and its context rows) in batches.

Example:
    >>> order_columns(np.array([[1.0, 2.0]]), ["b", "a"], ["a", "b"], 2, "x.csv").tolist()
    [[2.0, 1.0]]
    >>> in_batches(lambda x, c: x.sum(1) + c[:, 0], 2, np.ones((5, 3)), np.arange(5.0)[:, None]).tolist()
    [3.0, 4.0, 5.0, 6.0, 7.0]
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from .._validate import check_fits_dtype
from ..data import load_table
from ..variables import Variables

__all__ = ["add_context_option", "add_table_arguments", "context_of", "in_batches", "input_files", "order_columns",
           "read_context", "read_rows"]


def order_columns(x: np.ndarray, names: list[str] | None, model_names: list[str] | None, d: int,
                  path: str, kind: str = "variables") -> np.ndarray:
    r"""Returns the data's columns in the model's order, or raises ValueError.

    Named columns are matched by name (any order); unnamed ones must be ``d`` in the model's
    order. ``kind`` is what the columns are to the model, for the error messages.

    Example:
        >>> order_columns(np.ones((1, 3)), None, None, 2, "c.csv", "context features")
        Traceback (most recent call last):
        ...
        ValueError: c.csv has 3 columns but the model has 2 context features
    """
    if x.shape[1] != d:
        raise ValueError(f"{path} has {x.shape[1]} columns but the model has {d} {kind}")
    order = Variables(model_names, None if model_names else d).column_order(list(names), path) if names else None
    return x if order is None else x[:, order]


def _dtype(model: nn.Module) -> Any:
    return next(model.parameters()).dtype


def read_rows(path: str | os.PathLike, model: nn.Module) -> np.ndarray:
    """The (n, d) rows of the table at ``path`` in the model's variable order (see :func:`order_columns`)."""
    x, names = load_table(path)
    x = order_columns(x, names, getattr(model, "names", None), getattr(model, "d", x.shape[1]), str(path))
    check_fits_dtype(x, _dtype(model), str(path), names)
    return x


def context_of(model: nn.Module) -> tuple[int, list[str] | None]:
    r"""The number of context features of a saved model and their names (None when unnamed).

    Wrappers keep the names on the flow inside (:class:`~strnn_fast.standardize.Standardized` in
    ``base``, :class:`~strnn_fast.causal.CausalFlow` in ``flow``).

    Example:
        >>> from strnn_fast.flows import StrAF
        >>> context_of(StrAF([[0, 0], [1, 0]], (4,), 1, context_features=2, context_names=["u", "v"]))
        (2, ['u', 'v'])
    """
    C = int(getattr(model, "context_features", 0) or 0)
    holders = (model, getattr(model, "base", None), getattr(model, "flow", None))
    names = next((list(n) for n in (getattr(m, "context_names", None) for m in holders) if n), None)
    return C, names


def read_context(args: argparse.Namespace, model: nn.Module, rows: int | None, per: str) -> np.ndarray | None:
    r"""The ``args.context`` table of a conditional model, as ``rows`` rows of its C context features.

    The file holds one row (shared by all) or one row per ``per`` (a sample, a data row);
    ``rows=None`` takes as many as the file holds. Named columns are matched to the model's
    context names. None for an unconditional model without ``--context``.

    Raises:
        ValueError: --context given to an unconditional model or missing for a conditional one,
            a table that does not match (columns, row count, NaN or infinite values, beyond the
            model's dtype); the message starts with ``--context``.
        FileNotFoundError: no such file.
    """
    C, names = context_of(model)
    path = args.context
    if not C:
        if path:
            raise ValueError(f"--context: {args.model} is not a conditional model; drop --context")
        return None
    if not path:
        listed = f" ({', '.join(names)})" if names else ""
        raise ValueError(f"{args.model} is conditional on {C} context features{listed}; "
                         "give them with --context FILE")
    try:
        c, columns = load_table(path)
        c = order_columns(c, columns, names, C, str(path), "context features")
        check_fits_dtype(c, _dtype(model), str(path), columns)
    except (ValueError, OSError) as err:
        raise type(err)(f"--context: {err}") from None
    rows = len(c) if rows is None else rows
    if len(c) not in (1, rows):
        raise ValueError(f"--context: {path} has {len(c)} rows; give one row (shared by every {per}) "
                         f"or {rows} rows (one per {per})")
    return np.broadcast_to(c, (rows, C)).copy()  # writable: torch refuses to share read-only arrays


def input_files(args: argparse.Namespace) -> list[str]:
    r"""The files a command reads: the model, the data table when it takes one, ``--context`` when
    given. Outputs may not overwrite them.

    Example:
        >>> input_files(argparse.Namespace(model="m.pt", data="x.csv", context=None))
        ['m.pt', 'x.csv']
    """
    return [f for f in (args.model, getattr(args, "data", None), getattr(args, "context", None)) if f]


def in_batches(fn: Callable[[np.ndarray, np.ndarray | None], Any], batch_size: int, x: np.ndarray,
               context: np.ndarray | None = None) -> np.ndarray:
    """``fn(rows, context rows or None)`` over consecutive batches of ``x``, concatenated.

    The rows are independent given the model: batches only bound the memory."""
    return np.concatenate([np.asarray(fn(x[s:s + batch_size], None if context is None else context[s:s + batch_size]))
                           for s in range(0, len(x), batch_size)])


def add_context_option(p: argparse.ArgumentParser, per: str) -> None:
    """Adds ``--context FILE`` (read with :func:`read_context`); ``per`` names what a row goes with."""
    p.add_argument("--context", metavar="FILE",
                   help=f"context of a conditional model (.csv, .npy, .npz): one row for all, or one per {per}")


def add_table_arguments(p: argparse.ArgumentParser, model_help: str, data_help: str, per: str) -> None:
    """Adds the ``model`` and ``data`` files and ``--context`` of a command that reads a data table
    (read them with :func:`read_rows` and :func:`read_context`)."""
    p.add_argument("model", help=model_help)
    p.add_argument("data", help=f"{data_help}: .csv (optional header of names), .npy or .npz")
    add_context_option(p, per)
