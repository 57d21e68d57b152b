r"""FastStrNN against the reference StrNN on CPU: forward and forward+backward, train and eval.

d=100, hidden (500, 500), batch 256, random strictly lower-triangular A (density 0.2); torch
threads pinned by bench/conftest.py (1 unless STRNN_FAST_BENCH_THREADS says otherwise).

Run:
    pytest bench/bench_nn_cpu.py --benchmark-enable --benchmark-json=bench/results/nn_cpu.json
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strnn_fast import FastStrNN
from strnn_fast.data import random_dag

ref_models = pytest.importorskip("strnn.models.strNN")

D, HIDDEN, BATCH = 100, (500, 500), 256


def _models() -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    A = random_dag(D, density=0.2, seed=0).astype(np.float64)
    torch.manual_seed(0)
    theirs = ref_models.StrNN(D, HIDDEN, D, adjacency=A)
    ours = FastStrNN(D, HIDDEN, D, adjacency=A)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(D, HIDDEN[0]), torch.nn.ReLU(), torch.nn.Linear(*HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN[1], D),
    )
    return ours, theirs, mlp


MODELS = dict(zip(("ours", "reference", "plain MLP"), _models()))


@pytest.mark.parametrize("impl", list(MODELS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward(benchmark, impl: str, mode: str) -> None:
    benchmark.group = f"forward {mode} d={D} hidden={HIDDEN} batch={BATCH}"
    model = MODELS[impl].train(mode == "train")
    x = torch.randn(BATCH, D)
    if mode == "eval":
        with torch.no_grad():
            benchmark(model, x)
    else:
        benchmark(model, x)


@pytest.mark.parametrize("impl", list(MODELS))
def test_forward_backward(benchmark, impl: str) -> None:
    benchmark.group = f"forward+backward train d={D} hidden={HIDDEN} batch={BATCH}"
    model = MODELS[impl].train()
    x = torch.randn(BATCH, D)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    benchmark(step)
