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
import math
import os
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .._memory import check_memory
from .._validate import as_binary_matrix
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
        return _csv_table(p)
    if suffix == ".npy":
        return _checked_table(_np_load(p), None, p), None
    if suffix == ".npz":
        arr, names = _npz_array(p, _TABLE_KEYS)
        return _checked_table(arr, names, p), names
    raise ValueError(f"cannot read table {p}: extension {p.suffix!r} is not one of .csv, .npy, .npz")


def load_adjacency(
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    *,
    square: bool = True,
    allow_self_loops: bool = False,
    keep_isolated: bool = False,
) -> tuple[np.ndarray, list[str] | None]:
    r"""Loads a square adjacency (``A[i, j]`` iff i depends on j) from a matrix or an edge-list file.

    * .npy, or .npz with one array (or ``adjacency`` / ``A``, optionally ``names``): a 0/1 matrix.
    * .csv: a 0/1 matrix, optionally with a header row of names and optionally a first column of
      row labels (as ``pandas.DataFrame.to_csv`` writes), or an edge list of ``parent,child``
      lines (names or integer indices). A first line ``parent,child``, ``source,target`` or
      ``from,to`` (any case) is a header and forces edge-list reading;
      without it, two numeric 0/1 lines of two fields read as a 2 x 2 matrix.
    * .txt: the same as .csv, with fields separated by a comma or whitespace.

    The graph is not checked for cycles here; use :func:`strnn_fast.graph.check_dag`.

    Arguments:
        path: the file.
        names: the variable order wanted (typically the data's column names). Named matrices are
            permuted into it, edge lists are laid out in it, unnamed matrices get it attached.
        square: with False, an unnamed (n_out, n_in) 0/1 matrix of another shape is returned as
            it is (what ``strnn-fast factorize`` reads).
        allow_self_loops: accept ``A[i, i] = 1``.
        keep_isolated: for an edge list read into ``names``: keep the names that no edge mentions,
            as variables with no parents and no children. By default they are refused, since an
            extra data column (an ``id``, say) would otherwise be modelled silently.

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
    try:
        return _load_adjacency(p, names, square, allow_self_loops, keep_isolated)
    except (TypeError, ValueError) as err:
        if str(p) in str(err):
            raise ValueError(str(err)) from None
        raise ValueError(f"adjacency file {p}: {err}") from None


def _load_adjacency(p: Path, names: Sequence[str] | None, square: bool, allow_self_loops: bool,
                    keep_isolated: bool = False) -> tuple[np.ndarray, list[str] | None]:
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = _np_load(p)
        if not square and arr.ndim == 2 and arr.shape[0] != arr.shape[1]:
            return as_binary_matrix(arr, f"adjacency {p}").astype(bool), None
        return as_adjacency(arr, names, allow_self_loops=allow_self_loops)
    if suffix == ".npz":
        arr, file_names = _npz_array(p, _ADJACENCY_KEYS)
        if not square and arr.ndim == 2 and arr.shape[0] != arr.shape[1]:
            return as_binary_matrix(arr, f"adjacency {p}").astype(bool), None
        return _named_matrix(arr, file_names, names, p, allow_self_loops)
    if suffix not in (".csv", ".txt"):
        raise ValueError(f"cannot read adjacency {p}: extension {p.suffix!r} is not one of .npy, .npz, .csv, .txt")
    rows, lines = _read_rows(p, whitespace=suffix == ".txt")
    if not rows:
        raise ValueError(f"adjacency file {p} is empty")
    if tuple(v.lower() for v in rows[0]) in _EDGE_HEADERS:
        return _edge_list(rows[1:], lines[1:], names, p, allow_self_loops, keep_isolated)
    matrix = _csv_matrix(rows, p, square)
    if matrix is not None:
        if not square and matrix[0].shape[0] != matrix[0].shape[1]:
            return as_binary_matrix(matrix[0], f"adjacency {p}").astype(bool), None
        return _named_matrix(*matrix, names, p, allow_self_loops)
    return _edge_list(rows, lines, names, p, allow_self_loops, keep_isolated)


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
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder; give a file")
    if p.exists() and not p.is_file():
        # A FIFO or device: reading would block or never end, and its size cannot be checked first.
        raise ValueError(f"{what} {p} is not a regular file (a FIFO, socket or device); give a file")
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p


def _lines(p: Path, whitespace: bool = False) -> Iterator[tuple[int, str, list[str]]]:
    """Yields (1-based line number, stripped line, fields) of the non-blank, non-comment lines of a
    text file, one at a time (memory: one line)."""
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            for number, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                if "\0" in line:
                    raise ValueError(f"{p} holds NUL bytes; it is not a text table")
                if whitespace:
                    yield number, line, line.split(",") if "," in line else line.split()
                    continue
                try:
                    yield number, line, [v.strip() for v in next(csv.reader([line]), [])]
                except csv.Error as err:
                    raise ValueError(f"{p} is not a readable CSV file: {err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{p} is not a UTF-8 text file (byte {err.start}); give a .csv/.txt text table") from None


def _read_rows(p: Path, whitespace: bool = False) -> tuple[list[list[str]], list[int]]:
    """Non-blank, non-comment rows of a (small) text file and their 1-based line numbers."""
    numbered = list(_lines(p, whitespace))
    return [row for _, _, row in numbered], [k for k, _, _ in numbered]


def _csv_table(p: Path) -> tuple[np.ndarray, list[str] | None]:
    # numpy's C reader parses straight into float64 (reading rows as Python strings first took
    # 16x the file in memory); a file it refuses is scanned line by line for the error to report.
    first = next(_lines(p), None)
    if first is None:
        raise ValueError(f"table {p} has no data rows")
    number, line, fields = first
    # A quoted first row is a header even when its names look like numbers (write_csv quotes them).
    header = fields if line.startswith('"') or not all(_is_number(v) for v in fields) else None
    if header is not None and (len(set(header)) != len(header) or any(not h for h in header)):
        raise ValueError(f"table {p}: the header {header} has empty or repeated column names")
    _check_table_memory(p, len(fields))
    skip = number if header is not None else number - 1
    try:
        arr = np.loadtxt(p, delimiter=",", dtype=np.float64, comments=None, quotechar='"', skiprows=skip,
                         ndmin=2, encoding="utf-8-sig")
    except ValueError:  # ragged, non-numeric, comment or blank-with-spaces lines, bad UTF-8
        arr = None
    if arr is None or arr.shape[0] == 0 or arr.shape[1] != len(fields) or not np.isfinite(arr).all():
        arr = _scanned_rows(p, skip, len(fields), header)
    return _checked_table(arr, header, p), header


def _check_table_memory(p: Path, width: int) -> None:
    # Values per byte from the file's first 64 KiB, 8 bytes a value, twice for numpy's growing
    # buffer (measured: a 212 MB file of 15 repr floats a row, an 87 MB array, peaked 99 MB above
    # the interpreter; the Python rows it replaced took 1.47 GB).
    with open(p, "rb") as f:
        head = f.read(65536)
    per_byte = max(1, head.count(b",") + head.count(b"\n")) / max(1, len(head))
    size = p.stat().st_size
    check_memory(2 * 8 * per_byte * size, f"table {p} ({size} bytes, about {per_byte * size:.3g} values)",
                 "read it in parts, or raise the limit")


def _scanned_rows(p: Path, skip: int, width: int, header: list[str] | None) -> np.ndarray:
    """The table after line ``skip``, parsed in Python one line at a time; raises at the first bad value."""
    values = array("d")  # 8 bytes a value, like the result
    for number, _, row in _lines(p):
        if number <= skip:
            continue
        if len(row) != width:
            raise ValueError(f"{p} line {number} has {len(row)} fields, expected {width}")
        for c, value in enumerate(row):
            column = header[c] if header is not None else c
            try:
                x = float(value)
            except ValueError:
                raise ValueError(f"{p}: column {column!r} holds the non-numeric value {value!r} "
                                 f"(line {number})") from None
            if not math.isfinite(x):
                raise ValueError(f"{p}: column {column!r} holds {value!r} (line {number}); values must be finite")
            values.append(x)
    if not values:
        raise ValueError(f"table {p} has no data rows")
    return np.frombuffer(values, dtype=np.float64).reshape(-1, width)


_EDGE_HEADERS = {("source", "target"), ("from", "to"), ("parent", "child")}


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _checked_table(arr: np.ndarray, names: list[str] | None, p: Path) -> np.ndarray:
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"table {p} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"table {p} must be 2-D (samples x variables), got {arr.ndim}-D shape {arr.shape}")
    if names is not None and len(names) != arr.shape[1]:
        raise ValueError(f"table {p} has {arr.shape[1]} columns but {len(names)} names")
    arr = arr.astype(np.float64, copy=False)  # a copy would double a large table's memory
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        column = names[c] if names is not None else int(c)
        raise ValueError(f"table {p}: column {column!r} holds {arr[r, c]} at row {r} (0-based); "
                         "values must be finite")
    return arr


def _np_load(p: Path) -> np.ndarray:
    """``np.load`` of a .npy file without pickles; any failure is a ValueError naming the file."""
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - truncated or foreign bytes fail in many ways
        raise ValueError(f"{p} is not a readable .npy array: {type(err).__name__}: {err}") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{p} is not a .npy array file")
    return arr


def _npz_array(p: Path, keys: Sequence[str]) -> tuple[np.ndarray, list[str] | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            files = list(z.files)
            names = None
            if "names" in files:
                raw = np.asarray(z["names"])
                if raw.ndim != 1 or raw.dtype.kind not in "US":
                    raise ValueError(f"{p}: 'names' must be a 1-D array of strings, got {raw.dtype} {raw.shape}")
                names = [str(n) for n in raw]
            arrays = [k for k in files if k != "names"]
            chosen = next((k for k in keys if k in arrays), arrays[0] if len(arrays) == 1 else None)
            if chosen is None:
                raise ValueError(f"{p} holds {files}; expected one array, or one named {' or '.join(keys)}")
            return np.asarray(z[chosen]), names
    except ValueError as err:
        if str(p) in str(err):
            raise
        raise ValueError(f"{p} is not a readable .npz archive: {err}") from None
    except Exception as err:  # noqa: BLE001 - truncated zips fail in many ways
        raise ValueError(f"{p} is not a readable .npz archive: {type(err).__name__}: {err}") from None


def _csv_matrix(rows: list[list[str]], p: Path, square: bool = True) -> tuple[np.ndarray, list[str] | None] | None:
    # Returns None when the rows do not form a 0/1 matrix, so the caller reads them as edges.
    def numeric(block: list[list[str]], width: int | None = None) -> np.ndarray | None:
        width = len(block) if width is None else width
        if not block or any(len(r) != width or not all(_is_number(v) for v in r) for r in block):
            return None
        arr = np.array([[float(v) for v in r] for r in block])
        return arr if np.isin(arr, (0.0, 1.0)).all() else None

    plain = numeric(rows) if square else numeric(rows, len(rows[0]))
    if plain is not None and (square or len(rows[0]) != 2 or plain.shape[0] != 1):
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
    arr: np.ndarray, file_names: list[str] | None, names: Sequence[str] | None, p: Path,
    allow_self_loops: bool = False,
) -> tuple[np.ndarray, list[str] | None]:
    if file_names is None or names is None:
        return as_adjacency(arr, file_names if names is None else names, allow_self_loops=allow_self_loops)
    A, file_names = as_adjacency(arr, file_names, allow_self_loops=allow_self_loops)
    names = list(names)
    if sorted(names) != sorted(file_names):
        raise ValueError(f"names {names} do not match the variables of {p}: {file_names}")
    perm = [file_names.index(n) for n in names]
    return A[np.ix_(perm, perm)], names


def _edge_list(
    rows: list[list[str]], lines: list[int], names: Sequence[str] | None, p: Path, allow_self_loops: bool = False,
    keep_isolated: bool = False,
) -> tuple[np.ndarray, list[str] | None]:
    edges: list[tuple[str | int, str | int]] = []
    for k, row in enumerate(rows):
        if len(row) != 2 or not all(row):
            raise ValueError(f"{p} line {lines[k]}: expected 'parent,child', got {len(row)} fields "
                             "(and the file is not a 0/1 matrix either)")
        edges.append(tuple(int(v) if v.isdigit() and len(v) < 10 else v for v in row))
    if not edges and names is None:
        raise ValueError(f"{p} has no edges; pass names to say how many variables there are")
    if len({type(v) for e in edges for v in e}) > 1:
        raise ValueError(f"{p}: edges mix variable names and integer indices; use one or the other")
    A, found = as_adjacency(edges, names, allow_self_loops=allow_self_loops)
    if names is not None and not keep_isolated:
        # An edge list cannot state an isolated variable, so a name no edge mentions is a data
        # column the graph does not know (an id, a timestamp): refused unless asked for.
        unlisted = [str(names[i]) for i in np.flatnonzero(~(A.any(0) | A.any(1)))]
        if unlisted:
            raise ValueError(f"the data columns {unlisted[:10]}{' ...' if len(unlisted) > 10 else ''} appear in no edge "
                             f"of {p}; drop them from the data, or keep them as independent variables "
                             "(keep_isolated=True; strnn-fast fit --keep-isolated)")
    return A, found
