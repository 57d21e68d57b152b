r"""Variables of a model: names <-> indices, ``do`` lookups and table column matching.

One home for what :class:`strnn_fast.data.SEM`, :class:`strnn_fast.causal.CausalFlow`, the flows'
``fit`` and the ``strnn-fast`` commands all need: a variable is addressed by name (``str``) or
0-based index (``int``), an intervention ``do`` maps variables to values, and a table's named
columns are matched to the model's variables by name.

Example:
    >>> v = Variables(["a", "b", "c"])
    >>> v.index("b"), v.index(2)
    (1, 2)
    >>> v.do_items({"c": 1.5, 0: 2.0})
    [(2, 'c', 1.5), (0, 0, 2.0)]
    >>> v.column_order(["c", "a", "b"], "data")
    [1, 2, 0]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

__all__ = ["Variable", "Variables", "is_frame", "parse_assignments"]

Variable = Union[str, int]


class Variables:
    r"""The ``d`` variables of a model, optionally named.

    Arguments:
        names: variable names in model order, or None (then variables are indices only).
        d: the number of variables (required without names; checked against them otherwise).

    Example:
        >>> Variables(None, 3).labels()
        [0, 1, 2]
    """

    def __init__(self, names: Sequence[str] | None, d: int | None = None):
        self.names = None if names is None else [str(n) for n in names]
        if self.names is not None and d is not None and len(self.names) != d:
            raise ValueError(f"names must hold one name per variable ({d}), got {len(self.names)}")
        if self.names is None and d is None:
            raise ValueError("give names or the number of variables d")
        self.d = len(self.names) if self.names is not None else int(d)  # type: ignore[arg-type]

    def index(self, key: Any, what: str | None = None) -> int:
        r"""0-based index of a variable given by name or index; ``what`` names the argument in errors.

        Example:
            >>> Variables(["a", "b"]).index("c", "do")
            Traceback (most recent call last):
            ...
            ValueError: unknown variable 'c' in do; variables are ['a', 'b']
        """
        label = what or "variable"
        if isinstance(key, str) and self.names is None and key in self.default_names():
            return self.default_names().index(key)  # the x0.. names the CLI writes for unnamed models
        if isinstance(key, str):
            if self.names is None:
                raise ValueError(f"{what + ': ' if what else ''}variable {key!r} is a name, but there are no variable names; "
                                 f"use an index 0..{self.d - 1}")
            if key not in self.names:
                raise ValueError(f"unknown variable {key!r}{f' in {what}' if what else ''}; variables are {self.names}")
            return self.names.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            if not 0 <= key < self.d:
                raise ValueError(f"{label} index {int(key)} is out of range for {self.d} variables")
            return int(key)
        raise TypeError(f"{label} keys must be variable names (str) or indices (int), got {key!r}")

    def default_names(self) -> list[str]:
        """``x0 .. x{d-1}``: the names an unnamed model's outputs carry (and its inputs may carry)."""
        return [f"x{i}" for i in range(self.d)]

    def label(self, i: int) -> str:
        """The name of variable ``i`` when there are names, else its index, as text."""
        return self.names[i] if self.names is not None else str(i)

    def labels(self) -> list[str] | list[int]:
        """Names when known, else the indices 0..d-1 (keys of dict and DataFrame outputs)."""
        return list(self.names) if self.names is not None else list(range(self.d))

    def do_items(self, do: Any, what: str = "do") -> list[tuple[int, Any, Any]]:
        r"""``(index, key, value)`` for each entry of an intervention mapping, in its order.

        Refuses a non-mapping and a variable set twice (by name and by index); the values are
        returned as given (each caller converts them to its own array type).

        Example:
            >>> Variables(["a", "b"]).do_items({"a": 1, 0: 2})
            Traceback (most recent call last):
            ...
            ValueError: do sets variable 'a' twice (by name and by index)
        """
        if do is None:
            return []
        if not isinstance(do, Mapping):
            raise TypeError(f"{what} must be a mapping of variable -> value, e.g. {{'x': 1.5}}; "
                            f"got {type(do).__name__}")
        items: list[tuple[int, Any, Any]] = []
        seen: set[int] = set()
        for key, value in do.items():
            i = self.index(key, what)
            if i in seen:
                raise ValueError(f"{what} sets variable {self.label(i)!r} twice (by name and by index)")
            seen.add(i)
            items.append((i, key, value))
        return items

    def column_order(self, columns: Sequence[Any], what: str, *, allow_extra: bool = True) -> list[int] | None:
        r"""Positions in ``columns`` of the model's variables, in model order (columns matched by name).

        None when there is nothing to match (the columns are not all strings): then the columns
        are taken as they stand. An unnamed model matches the ``x0 ..`` names it writes (see
        :meth:`default_names`), in any order, and refuses any other header (it was read by
        position before, so a reordered or renamed header gave a silently wrong answer). ``allow_extra``: whether columns that
        are not variables are ignored (else refused).

        Example:
            >>> Variables(["a", "b"]).column_order(["b", "z"], "x.csv")
            Traceback (most recent call last):
            ...
            ValueError: x.csv lacks the columns of some variables: missing ['a']; its columns ['b', 'z'] do not match the model's variables ['a', 'b']
        """
        if not all(isinstance(c, str) for c in columns):
            return None
        cols = list(columns)
        names = self.names if self.names is not None else self.default_names()
        if self.names is None and sorted(cols) != sorted(names):
            raise ValueError(f"{what} has the header {cols}, but the model has no variable names: give no header, "
                             f"or the names its outputs use, {names}")
        missing = [n for n in names if n not in cols]
        extra = [] if allow_extra else [c for c in cols if c not in names]
        if missing or extra:
            problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
            head = f"{what} lacks the columns of some variables" if missing else f"{what} has columns that are no variables"
            raise ValueError(f"{head}: {', '.join(problems)}; its columns {cols} do not match the model's "
                             f"variables {names}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"{what} has duplicated column names: {cols}")
        return [cols.index(n) for n in names]

    def frame_rows(self, value: Any, what: str) -> Any:
        r"""A pandas DataFrame's values as a float64 (n, d) array in model order, its columns matched
        by name (every variable present, no other column); any other value is returned as it is.

        The one place where a DataFrame becomes model-ordered rows: flows, ``Standardized``,
        ``CausalFlow`` and ``fit`` all call it, so a frame in another column order never gives a
        silently wrong answer.

        Example:
            >>> import pandas as pd
            >>> Variables(["a", "b"]).frame_rows(pd.DataFrame({"b": [2.0], "a": [1.0]}), "x")
            array([[1., 2.]])
            >>> Variables(["a", "b"]).frame_rows(pd.DataFrame({"a": [1.0], "b": [0.0], "id": [7]}), "x")
            Traceback (most recent call last):
            ...
            ValueError: x has columns that are no variables: unknown ['id']; its columns ['a', 'b', 'id'] do not match the model's variables ['a', 'b']
        """
        if not is_frame(value):
            return value
        if self.d and value.shape[1] != self.d and not all(isinstance(c, str) for c in value.columns):
            raise ValueError(f"{what} has {value.shape[1]} columns but the model has {self.d} variables")
        order = self.column_order(list(value.columns), what, allow_extra=False) if self.d else None
        try:
            values = value.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{what} must hold numbers only; its columns have dtypes {list(map(str, value.dtypes))}") from err
        return values if order is None else values[:, order]

    def to_frame(self, rows: Any, what: str = "as_frame=True", index: Any = None) -> Any:
        r"""(n, d) rows (tensor or array) as a pandas DataFrame with one column per variable, named
        by :meth:`labels`; the inverse of :meth:`frame_rows`.

        Example:
            >>> Variables(["a", "b"]).to_frame(np.eye(2)).columns.tolist()
            ['a', 'b']
        """
        import pandas as pd  # optional dependency (the "frames" extra): imported only when asked for

        values = rows.detach().cpu().numpy() if hasattr(rows, "detach") else np.asarray(rows)
        if values.ndim != 2 or values.shape[1] != self.d:
            raise ValueError(f"{what} needs a sample_shape of one dimension (n rows of {self.d} variables), "
                             f"got shape {values.shape}")
        return pd.DataFrame(values, columns=self.labels(), index=index)


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (checked without importing pandas, an optional extra).

    Example:
        >>> is_frame([[1.0]])
        False
    """
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def parse_assignments(assignments: Sequence[str], names: Sequence[str] | None) -> dict[Any, float]:
    r"""Turns command-line ``["x=1.5", "y=0"]`` into ``{"x": 1.5, "y": 0.0}``; bare integers
    address variables by index when the model has no names.

    Example:
        >>> parse_assignments(["a=1.5", "b=-2"], ["a", "b"])
        {'a': 1.5, 'b': -2.0}
        >>> parse_assignments(["0=3"], None)
        {0: 3.0}
    """
    if not assignments:
        raise ValueError("give at least one intervention, e.g. --do x=1.5")
    do: dict[Any, float] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--do expects VARIABLE=VALUE, got {item!r}")
        try:
            number = float(value)
        except ValueError as err:
            raise ValueError(f"--do {item!r}: {value.strip()!r} is not a number") from err
        # Unnamed models: an index, or the x0.. name their outputs use (Variables.index takes both).
        variable: Any = int(key) if names is None and key.isdigit() else key
        if variable in do:
            raise ValueError(f"--do sets {key!r} twice")
        do[variable] = number
    return do
