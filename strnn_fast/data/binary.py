r"""Binary data: a random logistic Bayesian network, and the reference's d=15 binary files.

Example:
    >>> ds = make_binary_bn(100, 6, seed=0)
    >>> ds.sizes, set(np.unique(ds.train).tolist()) <= {0.0, 1.0}
    ((60, 20, 20), True)
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import as_positive_int, choice
from ..graph import as_adjacency, as_dag, check_dag, topological_order
from .adjacency import random_dag
from .dataset import Dataset, split

__all__ = ["REFERENCE_GRAPHS", "data_roots", "load_reference_binary", "make_binary_bn"]

REFERENCE_GRAPHS = ("every_other", "random_sparse")
_REFERENCE_NAME = re.compile(r"binary_(?P<graph>.+)_d(?P<d>\d+)_n\d+\.npz")


def make_binary_bn(
    n: int,
    d: int | None = None,
    *,
    adjacency: Any = None,
    seed: Any = None,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> Dataset:
    r"""Ancestral samples from a Bayesian network of binary variables with logistic CPDs.

    ``P(x_i = 1 | parents) = sigmoid(b_i + sum_j W[i, j] * (2 x_j - 1))`` with ``W ~ U[-3, 3]`` on
    the edges and ``b ~ U[-1, 1]``; parents enter as +-1 so that a parent's value moves the logit
    both ways instead of only adding when it is 1.

    Arguments:
        n: total number of samples, split by ``fractions`` into train/val/test.
        d: number of variables; defaults to the size of ``adjacency`` (must agree when both given).
        adjacency: a DAG in any form :func:`strnn_fast.graph.as_adjacency` accepts. Default: a
            random DAG in which each variable has 0 to 3 parents.
        seed: anything ``numpy.random.default_rng`` accepts.
        fractions: train/val/test fractions.

    Returns:
        :class:`Dataset` of float64 0/1 arrays.

    Example:
        >>> ds = make_binary_bn(10, adjacency=[("a", "b")], seed=0)
        >>> ds.names, ds.sizes
        (['a', 'b'], (6, 2, 2))
    """
    n = as_positive_int(n, "n")
    if len(fractions) != 3:
        raise ValueError(f"fractions must give three parts (train, val, test), got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    if adjacency is None:
        if d is None:
            raise ValueError("give d (number of variables) or an adjacency")
        A, names = random_dag(as_positive_int(d, "d"), parents=(0, 3), seed=rng), None
    else:
        A, names = as_dag(adjacency)
        if d is not None and d != A.shape[0]:
            raise ValueError(f"d={d} disagrees with the adjacency's {A.shape[0]} variables; leave d out")
    d = A.shape[0]
    W = np.where(A, rng.uniform(-3.0, 3.0, size=(d, d)), 0.0)
    b = rng.uniform(-1.0, 1.0, size=d)
    x = np.zeros((n, d))
    for i in topological_order(A):
        logit = b[i] + (2.0 * x - 1.0) @ W[i]
        x[:, i] = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    train, val, test = split(x, fractions)
    return Dataset(train, val, test, A, names)


def data_roots() -> list[Path]:
    r"""Folders searched for shared data, in order: ``$STRNN_FAST_DATA``, then ``<repo>/../shared/data``.

    Example:
        >>> all(isinstance(p, Path) for p in data_roots())
        True
    """
    roots = []
    if os.environ.get("STRNN_FAST_DATA"):
        roots.append(Path(os.environ["STRNN_FAST_DATA"]))
    repo = Path(__file__).resolve().parents[2]
    roots.append(repo.parent / "shared" / "data")
    return roots


def load_reference_binary(
    path: str | os.PathLike | None = None,
    *,
    graph: str = "every_other",
    adjacency_path: str | os.PathLike | None = None,
) -> Dataset:
    r"""Loads one of the reference's binary data sets (d=15: train 1600, val 400, test 500).

    Arguments:
        path: the ``binary_<graph>_d15_n2000.npz`` file (keys ``train_data``, ``valid_data``,
            ``test_data``). None searches ``reference_binary/`` under :func:`data_roots`.
        graph: which file to search for when ``path`` is None: "every_other" or "random_sparse".
        adjacency_path: the ``<graph>_d15_adj.npz`` file (one array); by default the one beside
            the data file named after the graph in the data file's name.

    Returns:
        :class:`Dataset` of float64 0/1 arrays with the ground-truth adjacency.

    Raises:
        FileNotFoundError: a file is missing (the message lists where it looked).
        ValueError: the file does not hold what a reference binary data set holds.
    """
    if path is None:
        graph = choice(graph, REFERENCE_GRAPHS, "graph")
        candidates = [root / "reference_binary" / f"binary_{graph}_d15_n2000.npz" for root in data_roots()]
        found = [p for p in candidates if p.is_file()]
        if not found:
            looked = ", ".join(str(p) for p in candidates)
            raise FileNotFoundError(f"reference binary data not found; looked at {looked}. "
                                    "Set STRNN_FAST_DATA to the folder holding reference_binary/")
        data_path = found[0]
    else:
        data_path = Path(path)
    if not data_path.is_file():
        raise FileNotFoundError(f"reference binary data file not found: {data_path}")
    if adjacency_path is None:
        match = _REFERENCE_NAME.fullmatch(data_path.name)
        if match is None:
            raise ValueError(f"cannot tell the graph from the file name {data_path.name!r} "
                             "(expected binary_<graph>_d<d>_n<n>.npz); pass adjacency_path")
        adjacency_path = data_path.with_name(f"{match['graph']}_d{match['d']}_adj.npz")
    adjacency_path = Path(adjacency_path)
    if not adjacency_path.is_file():
        raise FileNotFoundError(f"reference adjacency file not found: {adjacency_path}")

    with np.load(data_path, allow_pickle=False) as z:
        missing = {"train_data", "valid_data", "test_data"} - set(z.files)
        if missing:
            raise ValueError(f"{data_path} lacks the arrays {sorted(missing)}; it holds {z.files}")
        parts = [np.asarray(z[k], dtype=np.float64) for k in ("train_data", "valid_data", "test_data")]
    with np.load(adjacency_path, allow_pickle=False) as z:
        if len(z.files) != 1:
            raise ValueError(f"{adjacency_path} must hold one array (the adjacency), it holds {z.files}")
        A, _ = as_adjacency(z[z.files[0]])
    check_dag(A)
    for part in parts:
        if part.ndim != 2 or not np.isin(part, (0.0, 1.0)).all():
            raise ValueError(f"{data_path} must hold 2-D 0/1 arrays")
    return Dataset(*parts, adjacency=A)
