"""Our greedy, zuko and made masks are identical to the reference package's (strnn 0.2.0)."""
from __future__ import annotations

import numpy as np
import pytest

from strnn_fast import factorize

ref = pytest.importorskip("strnn.factorizers", reason="install strnn==0.2.0 --no-deps")


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...]]:
    n_out = int(rng.integers(1, 61))
    n_in = n_out if rng.random() < 0.4 else int(rng.integers(1, 61))
    A = (rng.random((n_out, n_in)) < rng.random()).astype(np.float64)
    if n_out > 3 and rng.random() < 0.5:  # duplicate and zero rows
        A[rng.integers(n_out)] = A[rng.integers(n_out)]
        A[rng.integers(n_out)] = 0
    if not A.any():
        A[rng.integers(n_out), rng.integers(n_in)] = 1
    # Mostly wide enough to be valid, sometimes too narrow (the reference then fails its check).
    low = 1 if rng.random() < 0.3 else n_out
    hidden = tuple(int(h) for h in rng.integers(low, 2 * n_out + 10, size=rng.integers(1, 4)))
    return A, hidden


def _reference(method: str, A: np.ndarray, hidden: tuple[int, ...]) -> list[np.ndarray]:
    cls = {"greedy": ref.GreedyFactorizer, "zuko": ref.ZukoFactorizer}[method]
    return cls(A).factorize(hidden)


@pytest.mark.parametrize("method", ["greedy", "zuko"])
@pytest.mark.parametrize("seed", range(4))
def test_identical_to_reference(method: str, seed: int) -> None:
    """Hundreds of adjacencies (sizes 1-60, densities 0-1, rectangular, zero and duplicate rows)."""
    rng = np.random.default_rng(1000 * seed + len(method))
    compared = 0
    for _ in range(60):
        A, hidden = _random_case(rng)
        expected = _reference(method, A, hidden)
        if not ref.check_masks(expected, A):
            # The reference produced invalid masks (layers too narrow): we raise instead.
            with pytest.raises(ValueError, match="too narrow"):
                factorize(A, hidden, method)
            continue
        ours = factorize(A, hidden, method)
        assert len(ours) == len(expected)
        for o, e in zip(ours, expected):
            assert o.shape == e.shape
            np.testing.assert_array_equal(o, e)
        compared += 1
    assert compared >= 35


@pytest.mark.parametrize("d", [2, 3, 7, 16, 40])
@pytest.mark.parametrize("hidden", [(5,), (9, 13), (40, 40, 40)])
def test_made_identical_to_reference(d: int, hidden: tuple[int, ...]) -> None:
    A = np.tril(np.ones((d, d)), -1)
    expected = ref.MADEFactorizer(A).factorize(hidden)
    if not ref.check_masks(expected, A):
        with pytest.raises(ValueError, match="too narrow"):
            factorize(A, hidden, "made")
        return
    for o, e in zip(factorize(A, hidden, "made"), expected):
        np.testing.assert_array_equal(o, e)


def test_greedy_identical_on_paper_sizes() -> None:
    rng = np.random.default_rng(7)
    A = np.tril(rng.random((100, 100)) < 0.2, -1).astype(np.float64)
    for o, e in zip(factorize(A, (200, 200)), ref.GreedyFactorizer(A).factorize((200, 200))):
        np.testing.assert_array_equal(o, e)
