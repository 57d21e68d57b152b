"""freeze: a FastStrNN for inference matches the model, on every CPU backend, and names bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strnn_fast import FastStrNN
from strnn_fast.freeze import freeze


def _net(backend: str) -> FastStrNN:
    torch.manual_seed(0)
    A = np.tril(np.random.default_rng(0).random((37, 37)) < 0.2, -1)  # odd sizes, a sparse DAG
    return FastStrNN(37, (53, 41), 74, adjacency=A, backend=backend).double()


@pytest.mark.parametrize("backend", ["dense", "sparse", "cpu", "auto"])
@pytest.mark.parametrize("batch", [1, 7, 300])
def test_frozen_model_matches_the_model(backend: str, batch: int) -> None:
    net = _net(backend)
    x = torch.randn(batch, 37, dtype=torch.float64)
    frozen = freeze(net)
    out = frozen(x)
    assert out.dtype == torch.float64 and not out.requires_grad
    torch.testing.assert_close(out, net(x).detach(), rtol=1e-12, atol=1e-12)


def test_frozen_model_names_bad_input() -> None:
    frozen = freeze(_net("auto"))
    with pytest.raises(ValueError, match="x must have shape"):
        frozen(torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        frozen(np.zeros((3, 37)))
    with pytest.raises(TypeError, match="model must have .layers"):
        freeze(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("backend", ["dense", "cpu", "auto"])
def test_repeated_calls_run_the_resolved_plan_and_follow_changes(backend: str) -> None:
    """Calls like the last one replay the resolved per-layer runners: the same answers as the
    model, also after an in-place weight edit, a new batch shape, or a move to float32."""
    net = _net(backend)
    frozen = freeze(net)
    x = torch.randn(5, 37, dtype=torch.float64)
    first = frozen(x)
    assert frozen._plan is not None
    torch.testing.assert_close(frozen(x), first, rtol=0, atol=0)  # the plan path
    with torch.enable_grad():  # grad mode on: still no graph
        assert not frozen(x).requires_grad
    with torch.no_grad():
        for layer in (*net.layers, *frozen.layers):  # the same edit in both: the plan sees it
            layer.bias.add_(0.25)
    torch.testing.assert_close(frozen(x), net(x).detach(), rtol=1e-12, atol=1e-12)
    y = torch.randn(9, 37, dtype=torch.float64)
    torch.testing.assert_close(frozen(y), net(y).detach(), rtol=1e-12, atol=1e-12)
    frozen.float()
    assert frozen._plan is None
    out = frozen(y.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(y).detach().float(), rtol=1e-5, atol=1e-5)
