"""Causal flows: the do-inverse algorithm against exact oracles, then CausalFlow against SEM ground truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strnn_fast.causal.queries import affected, do_inverse, do_rounds
from strnn_fast.data.adjacency import random_dag


# --------------------------------------------------------------------------- the algorithm, exactly


def _linear_flow(A: np.ndarray, steps: int, rng: np.random.Generator):
    """A composition of linear triangular steps z = M x following A, and M itself."""
    d = A.shape[0]
    M = np.eye(d)
    for _ in range(steps):
        step = np.diag(rng.uniform(0.5, 2.0, d)) + np.where(A, rng.normal(0.0, 1.0, (d, d)), 0.0)
        M = step @ M
    Mt = torch.from_numpy(M)
    Minv = torch.from_numpy(np.linalg.inv(M))
    return (lambda x: x @ Mt.T), (lambda z: z @ Minv.T), M


def _oracle(M: np.ndarray, z: np.ndarray, do: dict[int, np.ndarray]) -> np.ndarray:
    """Solves M[i] x = z_i for free variables and x_k = v_k for intervened ones, row by row."""
    K = M.copy()
    out = np.empty_like(z)
    for k in do:
        K[k] = 0.0
        K[k, k] = 1.0
    for r in range(len(z)):
        rhs = z[r].copy()
        for k, v in do.items():
            rhs[k] = v[r]
        out[r] = np.linalg.solve(K, rhs)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_do_inverse_matches_linear_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(3, 9))
    A = random_dag(d, density=0.5, seed=rng, ordered=bool(seed % 2))
    transform, inverse, M = _linear_flow(A, steps=int(rng.integers(1, 4)), rng=rng)
    n = 7
    z = torch.from_numpy(rng.normal(size=(n, d)))
    k = int(rng.integers(1, d))
    idx = sorted(rng.choice(d, size=k, replace=False).tolist())
    values = torch.from_numpy(rng.normal(size=(n, k)))
    x = do_inverse(transform, inverse, A, z, idx, values)
    expected = _oracle(M, z.numpy(), {i: values[:, c].numpy() for c, i in enumerate(idx)})
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-9)
    assert torch.equal(x[:, idx], values)


def test_chain_of_interventions_needs_every_round() -> None:
    # x0 -> x1 -> x2 -> x3 with do on x1 and x3: x3's latent must be read after x1 is set.
    A = np.eye(4, k=-1, dtype=bool)
    rng = np.random.default_rng(3)
    transform, inverse, M = _linear_flow(A, steps=2, rng=rng)
    z = torch.from_numpy(rng.normal(size=(5, 4)))
    values = torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(5, 2)
    assert do_rounds(A, [1, 3]) == 2
    x = do_inverse(transform, inverse, A, z, [1, 3], values)
    expected = _oracle(M, z.numpy(), {1: values[:, 0].numpy(), 3: values[:, 1].numpy()})
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-9)


def test_affected_is_intervened_plus_descendants() -> None:
    A = np.zeros((5, 5), dtype=bool)
    A[1, 0] = A[2, 1] = A[4, 3] = True
    assert affected(A, [1]).tolist() == [False, True, True, False, False]
    assert affected(A, [0, 3]).tolist() == [True, True, True, True, True]
    assert do_rounds(A, []) == 0
