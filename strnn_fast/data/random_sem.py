r"""Random sparse structural equation models: linear, or nonlinear through small tanh networks.

The causal benchmarks' ground truth (the StrNN paper uses d = 5 and d = 10): a random DAG, random
mechanisms and Laplace or Gaussian noise, as a :class:`~strnn_fast.data.sem.SEM` whose
interventions and counterfactuals are known exactly.

Example:
    >>> random_sparse_sem(4, seed=0).sample(3, seed=1).shape
    (3, 4)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import as_positive_int, choice
from .adjacency import random_dag
from .sem import SEM, LinearSEM, Mechanism

__all__ = ["random_sparse_sem"]


def random_sparse_sem(
    d: int,
    *,
    kind: str = "linear",
    density: float | None = None,
    noise: str = "laplace",
    seed: Any = None,
    ordered: bool = True,
) -> LinearSEM | SEM:
    r"""Random sparse SEM on variables named ``x0 .. x{d-1}`` (the paper uses d = 5 and d = 10).

    The graph is :func:`random_dag` with edge probability ``density`` (default ``2 / (d - 1)``,
    about d edges). Noise standard deviations are U[0.5, 1.5].

    * linear: coefficients of magnitude U[0.5, 1.5] with random sign;
    * nonlinear: ``f_i(p) = p @ a + tanh(p @ B) @ c``, a random one-hidden-layer tanh network of
      width 8 plus a linear skip (``a`` as the linear coefficients, ``B ~ N(0, 1/k)``,
      ``c ~ N(0, 1)``): smooth, bounded away from linear, never explosive.

    Arguments:
        d: number of variables (>= 2).
        kind: "linear" or "nonlinear".
        density: edge probability.
        noise: "laplace" (the paper's prior) or "gaussian".
        seed: anything ``numpy.random.default_rng`` accepts.
        ordered: if False the variables are randomly relabeled, so index order is not topological.

    Returns:
        A :class:`LinearSEM` (kind="linear") or :class:`SEM`.

    Example:
        >>> sem = random_sparse_sem(5, kind="nonlinear", seed=0)
        >>> sem.sample(10, seed=1).shape, sem.names[:2]
        ((10, 5), ['x0', 'x1'])
    """
    d = as_positive_int(d, "d")
    if d < 2:
        raise ValueError(f"d must be at least 2 for a graph with edges, got {d}")
    kind = choice(kind, ("linear", "nonlinear"), "kind")
    rng = np.random.default_rng(seed)
    A = random_dag(d, density=min(1.0, 2.0 / (d - 1)) if density is None else density, seed=rng, ordered=ordered)
    names = [f"x{i}" for i in range(d)]
    noise_std = rng.uniform(0.5, 1.5, size=d)
    signs = rng.choice((-1.0, 1.0), size=(d, d))
    coef = np.where(A, signs * rng.uniform(0.5, 1.5, size=(d, d)), 0.0)
    if kind == "linear":
        edges = [(names[j], names[i], float(coef[i, j])) for i, j in zip(*np.nonzero(A))]
        return LinearSEM(edges, noise_std, names, noise=noise)
    mechanisms: list[Mechanism | None] = []
    for i in range(d):
        k = int(A[i].sum())
        mechanisms.append(None if k == 0 else _TanhNet(
            coef[i, A[i]], rng.normal(0.0, 1.0 / np.sqrt(k), size=(k, 8)), rng.normal(0.0, 1.0, size=8)))
    return SEM(A, mechanisms, noise_std, noise=noise, names=names)


class _TanhNet:
    def __init__(self, skip: np.ndarray, hidden: np.ndarray, out: np.ndarray) -> None:
        self.skip, self.hidden, self.out = skip, hidden, out

    def __call__(self, parents: np.ndarray) -> np.ndarray:
        return parents @ self.skip + np.tanh(parents @ self.hidden) @ self.out
