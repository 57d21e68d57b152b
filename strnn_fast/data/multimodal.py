r"""The StrNN paper's synthetic multimodal data set (Chen et al. 2023, Sec. 5).

Generative process, for a DAG ``A`` (by default random lower triangular, an entry kept iff a
uniform draw exceeds ``threshold``):

* a root (no parents) is a mixture of ``n_modes`` equally weighted Gaussians with means
  U[-8, 8] and standard deviations U[0.01, 2];
* a child is ``x_i = sum_j W[i, j] * tanh(x_j) + N(0, 1)`` with ``W[i, j] ~ U[-3, 3]`` on the
  edges. tanh saturates, so each well-separated parent mode becomes a plateau near -1 or +1 and
  the child inherits a mixture of shifted unit Gaussians: multimodality propagates down the graph
  while the values stay bounded however deep the graph is.

The samples are split 0.6/0.2/0.2 into train/val/test and standardized with the training
set's per-column mean and standard deviation.

Example:
    >>> ds = make_multimodal(n=100, d=5, seed=1)
    >>> ds.sizes, ds.adjacency.shape
    ((60, 20, 20), (5, 5))
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import as_positive_int
from ..graph import as_dag, topological_order
from .dataset import Dataset, split, standardize

__all__ = ["make_multimodal"]

SPLIT = (0.6, 0.2, 0.2)


def make_multimodal(
    n: int = 1000,
    d: int | None = None,
    *,
    threshold: float = 0.8,
    n_modes: int = 3,
    seed: Any = 0,
    adjacency: Any = None,
    weight_range: tuple[float, float] = (-3.0, 3.0),
    mean_range: tuple[float, float] = (-8.0, 8.0),
    std_range: tuple[float, float] = (0.01, 2.0),
) -> Dataset:
    r"""Samples the multimodal data set and returns standardized train/val/test splits and the DAG.

    Arguments:
        n: total number of samples (split 0.6/0.2/0.2).
        d: number of variables; defaults to 15, or to the size of ``adjacency`` (must agree).
        threshold: keep a lower-triangular entry iff its uniform draw exceeds this (ignored when
            ``adjacency`` is given).
        n_modes: mixture components per root variable.
        seed: anything ``numpy.random.default_rng`` accepts; fixes graph, parameters and samples.
        adjacency: a DAG in any form :func:`strnn_fast.graph.as_adjacency` accepts; variables
            need not be in topological order.
        weight_range, mean_range, std_range: ranges of the uniform parameter draws.

    Returns:
        :class:`Dataset` of float64 arrays.

    Example:
        >>> ds = make_multimodal(n=50, adjacency=[[0, 0], [1, 0]], seed=0)
        >>> ds.d, abs(float(ds.train.mean())) < 1e-12
        (2, True)
    """
    n = as_positive_int(n, "n")
    n_modes = as_positive_int(n_modes, "n_modes")
    rng = np.random.default_rng(seed)
    if adjacency is None:
        d = 15 if d is None else as_positive_int(d, "d")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        A, names = np.tril(rng.random((d, d)) > threshold, k=-1), None
    else:
        A, names = as_dag(adjacency)
        if d is not None and d != A.shape[0]:
            raise ValueError(f"d={d} disagrees with the adjacency's {A.shape[0]} variables; leave d out")
        d = A.shape[0]
    W = np.where(A, rng.uniform(*weight_range, size=(d, d)), 0.0)
    means = rng.uniform(*mean_range, size=(d, n_modes))
    stds = rng.uniform(*std_range, size=(d, n_modes))

    x = np.empty((n, d))
    for i in topological_order(A):
        if A[i].any():
            x[:, i] = np.tanh(x[:, A[i]]) @ W[i, A[i]] + rng.standard_normal(n)
        else:
            mode = rng.integers(n_modes, size=n)
            x[:, i] = means[i, mode] + stds[i, mode] * rng.standard_normal(n)
    train, val, test = standardize(*split(x, SPLIT))
    return Dataset(train, val, test, A, names)
