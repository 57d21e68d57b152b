r"""Factorizers: ours (C++) against the reference strnn 0.2.0, and the path counts of each method.

Run (about 2 minutes, mostly the reference at d=1000):
    pytest bench/bench_factorize.py --benchmark-enable --benchmark-json=bench/results/factorize_cpu.json
    python bench/summarize.py bench/results/factorize_cpu.json > bench/results/factorize_cpu.md
"""
from __future__ import annotations

import numpy as np
import pytest

from strnn_fast import connections, factorize

ref = pytest.importorskip("strnn.factorizers")


def lower_triangular(d: int, density: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.tril(rng.random((d, d)) < density, -1).astype(np.float64)


def sparse_dag(d: int, parents: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = np.zeros((d, d), dtype=np.uint8)
    for i in range(1, d):
        A[i, rng.choice(i, size=min(i, parents), replace=False)] = 1
    return A


@pytest.mark.parametrize("d", [100, 500, 1000])
@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_greedy(benchmark, d: int, impl: str) -> None:
    benchmark.group = f"greedy d={d} hidden=({2 * d},{2 * d})"
    A, hidden = lower_triangular(d), (2 * d, 2 * d)
    if impl == "ours":
        masks = benchmark(factorize, A, hidden)
    else:
        rounds = 1 if d >= 1000 else 3
        masks = benchmark.pedantic(lambda: ref.GreedyFactorizer(A).factorize(hidden), rounds=rounds, iterations=1)
    benchmark.extra_info["paths"] = connections(masks)


@pytest.mark.parametrize("d", [100, 1000])
@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_zuko(benchmark, d: int, impl: str) -> None:
    benchmark.group = f"zuko d={d} hidden=({2 * d},{2 * d})"
    A, hidden = lower_triangular(d), (2 * d, 2 * d)
    run = (lambda: factorize(A, hidden, "zuko")) if impl == "ours" else (lambda: ref.ZukoFactorizer(A).factorize(hidden))
    masks = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["paths"] = connections(masks)


@pytest.mark.parametrize("d", [1000, 10_000])
@pytest.mark.parametrize("improve", [False, True])
def test_greedy_large_sparse(benchmark, d: int, improve: bool) -> None:
    benchmark.group = f"greedy sparse DAG (5 parents) d={d} hidden=({2 * d},{2 * d})"
    A = sparse_dag(d)
    masks = benchmark.pedantic(lambda: factorize(A, (2 * d, 2 * d), improve=improve), rounds=3)
    benchmark.extra_info["paths"] = connections(masks)


@pytest.mark.parametrize("d", [5, 6, 8])
@pytest.mark.parametrize("method", ["greedy", "greedy+improve", "zuko", "exact"])
def test_path_counts_small(benchmark, d: int, method: str) -> None:
    """Path counts (Eq. 2) against the exact MILP optimum on small graphs, hidden (2d,)."""
    benchmark.group = f"paths d={d} hidden=({2 * d},)"
    A, hidden = lower_triangular(d, density=0.5, seed=d), (2 * d,)
    if method == "exact":
        from strnn_fast.exact import factorize_exact

        result = benchmark.pedantic(lambda: factorize_exact(A, hidden, time_limit=60.0), rounds=1)
        masks = result.masks
        benchmark.extra_info["optimal"] = result.optimal
    else:
        name, _, opt = method.partition("+")
        masks = benchmark.pedantic(lambda: factorize(A, hidden, name, **({"improve": True} if opt else {})), rounds=3)
    benchmark.extra_info["paths"] = connections(masks)
