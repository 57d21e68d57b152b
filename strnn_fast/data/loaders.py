r"""Reading data tables and adjacency matrices from files, with errors that say what is wrong where.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "x.csv").write_text("a,b\n1,2\n3,4\n")
    >>> _ = (folder / "g.csv").write_text("parent,child\na,b\n")
    >>> x, names = load_table(folder / "x.csv")
    >>> A, _ = load_adjacency(folder / "g.csv", names=names)
    >>> check_adjacency_matches(A, x.shape[1], names)
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..graph import as_adjacency

__all__ = ["check_adjacency_matches", "load_adjacency", "load_table"]

_TABLE_KEYS = ("data", "x")
_ADJACENCY_KEYS = ("adjacency", "A")


def load_table(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    r"""Loads an (n, d) numeric table from .csv, .npy or .npz.

    A .csv file has a header when its first row holds any non-numeric field (so a header of purely
    numeric names reads as data). A .npz file holds one array, or an array under ``data`` or
    ``x``, optionally with column names under ``names``.

    Arguments:
        path: the file.

    Returns:
        ``(x, names)``: float64 array (n, d) and the column names or None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, not 2-D, ragged rows, non-numeric, NaN or infinite values
            (naming the column and row).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("1,2\n3,4\n")
        >>> load_table(p)[0].tolist(), load_table(p)[1]
        ([[1.0, 2.0], [3.0, 4.0]], None)
    """
    p = _existing(path, "table")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = _read_rows(p)
        header = rows[0] if rows and not all(_is_number(v) for v in rows[0]) else None
        body = rows[1:] if header is not None else rows
        return _numeric_rows(body, header, p), header
    if suffix == ".npy":
        return _checked_table(np.load(p, allow_pickle=False), None, p), None
    if suffix == ".npz":
        arr, names = _npz_array(p, _TABLE_KEYS)
        return _checked_table(arr, names, p), names
    raise ValueError(f"cannot read table {p}: extension {p.suffix!r} is not one of .csv, .npy, .npz")


def load_adjacency(
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    r"""Loads a square adjacency (``A[i, j]`` iff i depends on j) from a matrix or an edge-list file.

    * .npy, or .npz with one array (or ``adjacency`` / ``A``, optionally ``names``): a 0/1 matrix.
    * .csv: a 0/1 matrix, optionally with a header row of names and optionally a first column of
      row labels (as ``pandas.DataFrame.to_csv`` writes), or an edge list of ``parent,child``
      lines (names or integer indices). A first line ``parent,child`` forces edge-list reading;
      without it, two numeric 0/1 lines of two fields read as a 2 x 2 matrix.
    * .txt: an edge list, fields separated by a comma or whitespace.

    The graph is not checked for cycles here; use :func:`strnn_fast.graph.check_dag`.

    Arguments:
        path: the file.
        names: the variable order wanted (typically the data's column names). Named matrices are
            permuted into it, edge lists are laid out in it, unnamed matrices get it attached.

    Returns:
        ``(A, names)``: (d, d) bool array and the variable names or None.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable layout, non-binary entries, names that do not match ``names``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "g.txt"
        >>> _ = p.write_text("x y\ny z\n")
        >>> A, found = load_adjacency(p)
        >>> found, A.astype(int).tolist()
        (['x', 'y', 'z'], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    """
    p = _existing(path, "adjacency")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return as_adjacency(np.load(p, allow_pickle=False), names)
    if suffix == ".npz":
        arr, file_names = _npz_array(p, _ADJACENCY_KEYS)
        return _named_matrix(arr, file_names, names, p)
    if suffix not in (".csv", ".txt"):
        raise ValueError(f"cannot read adjacency {p}: extension {p.suffix!r} is not one of .npy, .npz, .csv, .txt")
    rows = _read_rows(p, whitespace=suffix == ".txt")
    if not rows:
        raise ValueError(f"adjacency file {p} is empty")
    if [v.lower() for v in rows[0]] == ["parent", "child"]:
        return _edge_list(rows[1:], names, p, first_line=2)
    if suffix == ".csv":
        matrix = _csv_matrix(rows, p)
        if matrix is not None:
            return _named_matrix(*matrix, names, p)
    return _edge_list(rows, names, p, first_line=1)


def check_adjacency_matches(
    adjacency: np.ndarray,
    n_columns: int,
    names: Sequence[str] | None = None,
    adjacency_names: Sequence[str] | None = None,
) -> None:
    r"""Raises ValueError unless the adjacency describes exactly the data's columns, in their order.

    Arguments:
        adjacency: (d, d) matrix.
        n_columns: number of data columns.
        names: the data's column names, if any.
        adjacency_names: the adjacency's variable names, if any (compared when both are given).

    Example:
        >>> check_adjacency_matches(np.zeros((3, 3)), 2)
        Traceback (most recent call last):
        ...
        ValueError: adjacency is 3 x 3 but the data has 2 columns; they must describe the same variables
    """
    shape = np.shape(adjacency)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"adjacency must be square (d, d), got shape {shape}")
    if shape[0] != n_columns:
        raise ValueError(f"adjacency is {shape[0]} x {shape[1]} but the data has {n_columns} columns; "
                         "they must describe the same variables")
    if names is None or adjacency_names is None:
        return
    names, adjacency_names = list(names), list(adjacency_names)
    if names == adjacency_names:
        return
    only_data = [n for n in names if n not in adjacency_names]
    only_graph = [n for n in adjacency_names if n not in names]
    if only_data or only_graph:
        raise ValueError(f"adjacency and data name different variables: only in the data {only_data}, "
                         f"only in the adjacency {only_graph}")
    raise ValueError("adjacency lists the data's variables in another order; "
                     "reload it with load_adjacency(path, names=<data column names>) to reorder it")


def _existing(path: str | os.PathLike, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p


def _read_rows(p: Path, whitespace: bool = False) -> list[list[str]]:
    with open(p, newline="") as f:
        lines = [line.strip() for line in f]
    lines = [line for line in lines if line and not line.startswith("#")]
    if whitespace:
        return [line.split(",") if "," in line else line.split() for line in lines]
    return [[v.strip() for v in row] for row in csv.reader(lines)]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _numeric_rows(rows: list[list[str]], header: list[str] | None, p: Path) -> np.ndarray:
    if not rows:
        raise ValueError(f"table {p} has no data rows")
    width = len(header) if header is not None else len(rows[0])
    first = 2 if header is not None else 1
    out = np.empty((len(rows), width))
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{p} line {r + first} has {len(row)} fields, expected {width}")
        for c, value in enumerate(row):
            try:
                out[r, c] = float(value)
            except ValueError:
                column = header[c] if header is not None else c
                raise ValueError(f"{p}: column {column!r} holds the non-numeric value {value!r} "
                                 f"(line {r + first})") from None
    return _checked_table(out, header, p)


def _checked_table(arr: np.ndarray, names: list[str] | None, p: Path) -> np.ndarray:
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"table {p} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"table {p} must be 2-D (samples x variables), got {arr.ndim}-D shape {arr.shape}")
    if names is not None and len(names) != arr.shape[1]:
        raise ValueError(f"table {p} has {arr.shape[1]} columns but {len(names)} names")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        column = names[c] if names is not None else int(c)
        raise ValueError(f"table {p}: column {column!r} holds {arr[r, c]} at row {r}; values must be finite")
    return arr


def _npz_array(p: Path, keys: Sequence[str]) -> tuple[np.ndarray, list[str] | None]:
    with np.load(p, allow_pickle=False) as z:
        files = list(z.files)
        names = [str(n) for n in z["names"]] if "names" in files else None
        arrays = [k for k in files if k != "names"]
        chosen = next((k for k in keys if k in arrays), arrays[0] if len(arrays) == 1 else None)
        if chosen is None:
            raise ValueError(f"{p} holds {files}; expected one array, or one named {' or '.join(keys)}")
        return np.asarray(z[chosen]), names


def _csv_matrix(rows: list[list[str]], p: Path) -> tuple[np.ndarray, list[str] | None] | None:
    # Returns None when the rows do not form a 0/1 matrix, so the caller reads them as edges.
    def numeric(block: list[list[str]]) -> np.ndarray | None:
        if not block or any(len(r) != len(block) or not all(_is_number(v) for v in r) for r in block):
            return None
        arr = np.array([[float(v) for v in r] for r in block])
        return arr if np.isin(arr, (0.0, 1.0)).all() else None

    plain = numeric(rows)
    if plain is not None:
        return plain, None
    header, body = rows[0], rows[1:]
    if all(_is_number(v) for v in header if v):
        return None  # a numeric first row is data, not names
    n = len(body)
    if len(header) == n and (arr := numeric(body)) is not None:
        return arr, header
    if all(len(r) == n + 1 for r in body) and len(header) in (n, n + 1):
        names = header[-n:]
        labels = [r[0] for r in body]
        arr = numeric([r[1:] for r in body])
        if arr is not None:
            if labels != names:
                raise ValueError(f"{p}: row labels {labels} differ from the column names {names}")
            return arr, names
    return None


def _named_matrix(
    arr: np.ndarray, file_names: list[str] | None, names: Sequence[str] | None, p: Path
) -> tuple[np.ndarray, list[str] | None]:
    if file_names is None or names is None:
        return as_adjacency(arr, file_names if names is None else names)
    A, file_names = as_adjacency(arr, file_names)
    names = list(names)
    if sorted(names) != sorted(file_names):
        raise ValueError(f"names {names} do not match the variables of {p}: {file_names}")
    perm = [file_names.index(n) for n in names]
    return A[np.ix_(perm, perm)], names


def _edge_list(
    rows: list[list[str]], names: Sequence[str] | None, p: Path, first_line: int
) -> tuple[np.ndarray, list[str] | None]:
    edges: list[tuple[str | int, str | int]] = []
    for k, row in enumerate(rows):
        if len(row) != 2:
            raise ValueError(f"{p} line {k + first_line}: expected 'parent,child', got {len(row)} fields "
                             "(and the file is not a square 0/1 matrix either)")
        edges.append(tuple(int(v) if v.lstrip("-").isdigit() else v for v in row))
    if not edges and names is None:
        raise ValueError(f"{p} has no edges; pass names to say how many variables there are")
    return as_adjacency(edges, names)
