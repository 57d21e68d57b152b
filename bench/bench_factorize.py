r"""Factorizers: ours (C++) against the reference strnn 0.2.0, and the path counts of each method.

Run (about 2 minutes, mostly the reference at d=1000):
    pytest bench/bench_factorize.py --benchmark-enable --benchmark-json=bench/results/factorize_cpu.json
    python bench/summarize.py bench/results/factorize_cpu.json > bench/results/factorize_cpu.md

Ours only, dense and sparse masks (under a minute):
    pytest bench/bench_factorize.py --benchmark-enable -k "ours or large"

The large-graph group (random DAG, 2-5 parents per node, hidden (2d, 2d)) times ``sparse=False``
(dense uint8 masks: 800 MB at d=10,000) against ``sparse=True`` (CSR masks, a few MB) and records
the masks' bytes; the d=10,000 sparse case is issue 14's scale target.
"""
from __future__ import annotations

import numpy as np
import pytest

from strnn_fast import connections, factorize
from strnn_fast.data import random_dag

ref = pytest.importorskip("strnn.factorizers")


def lower_triangular(d: int, density: float = 0.2, seed: int = 0) -> np.ndarray:
    # float64: the reference's zuko factorizer multiplies the adjacency as a torch tensor.
    return random_dag(d, density=density, seed=seed).astype(np.float64)


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
@pytest.mark.parametrize("variant", ["dense", "sparse", "sparse+improve", "zuko-sparse"])
def test_greedy_large_sparse(benchmark, d: int, variant: str) -> None:
    benchmark.group = f"random DAG (2-5 parents) d={d} hidden=({2 * d},{2 * d})"
    A = random_dag(d, parents=(2, 5), seed=0, sparse=True)
    method = "zuko" if variant.startswith("zuko") else "greedy"
    options = {"sparse": variant != "dense", **({"improve": True} if "improve" in variant else {})}
    masks = benchmark.pedantic(lambda: factorize(A, (2 * d, 2 * d), method, **options), rounds=3)
    benchmark.extra_info["paths"] = connections(masks)
    benchmark.extra_info["mask_bytes"] = sum(
        m.indptr.nbytes + m.indices.nbytes + m.data.nbytes if options["sparse"] else m.nbytes for m in masks
    )


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
