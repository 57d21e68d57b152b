"""Thread safety: concurrent calls on one model equal the serial result and never share draws.

Several threads call ``sample``/``log_prob`` and the causal queries of one model at once (also as
the very first calls, when an ``"auto"`` layer picks its backend). Seeded calls must give exactly
the serial result (a seed means a private generator); unseeded ones must not repeat rows (a
shared or restored global RNG repeats them); the global RNG of another thread is not disturbed.

The first-call-dispatch cases depend on the dispatch rewrite (strnn_fast/dispatch.py, nn.py):
they fail where the first ``"auto"`` call still times its backends inside
``torch.random.fork_rng``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from strnn_fast.causal import CausalFlow
from strnn_fast.flows import StrAF
from strnn_fast.standardize import Standardized

THREADS = 8
A = np.tril(np.ones((4, 4)), -1)


def _together(fn: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """``fn(i)`` for i < n, all threads released at once (a barrier), results in order of i."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _fresh_model(backend: str = "auto") -> Standardized:
    torch.manual_seed(0)
    flow = StrAF(A, hidden_sizes=(64, 64), flow_steps=2, backend=backend)
    return Standardized(flow, mean=[1.0, -2.0, 3.0, 1e6], std=[1.0, 2.0, 0.5, 0.01]).eval()


def _duplicates(rows: torch.Tensor) -> int:
    return len(rows) - len(torch.unique(rows, dim=0))


@pytest.fixture(scope="module")
def causal() -> CausalFlow:
    torch.manual_seed(0)
    x = torch.randn(200, 3, dtype=torch.float64)
    x[:, 1] += x[:, 0]
    x[:, 2] += x[:, 1]
    model = CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(8,), flow_steps=1)
    model.fit(x, epochs=2, verbose=False)
    return model


@pytest.mark.parametrize("backend", ["dense", "auto"])
def test_unseeded_samples_never_repeat_across_threads(backend):
    # First calls included (a fresh model): 'auto' then decides its backends while others draw.
    model = _fresh_model(backend)
    with torch.no_grad():
        rows = torch.cat(_together(lambda i: model.sample(257)))
    assert rows.shape == (THREADS * 257, 4)
    assert _duplicates(rows) == 0


def test_global_draws_of_another_thread_do_not_repeat_during_first_calls():
    # One thread draws from the global RNG while others make first calls of fresh models; a
    # save/restore of the global RNG (fork_rng) around backend timing repeated its draws.
    draws: list[torch.Tensor] = []
    models = [_fresh_model("auto") for _ in range(4)]  # built first: _fresh_model seeds the global RNG
    inputs = [torch.randn(33, 4, dtype=torch.float64) + 1 for _ in range(4)]

    def work(i: int) -> None:
        if i == 0:
            for _ in range(200):
                draws.append(torch.randn(64))
        else:
            with torch.no_grad():
                models[i].log_prob(inputs[i])

    _together(work, 4)
    # Whole draws repeat after a rewind of the stream; single float32 values collide by chance.
    rows = torch.stack(draws)
    assert _duplicates(rows) == 0


def test_log_prob_from_threads_equals_serial_on_first_calls():
    # Concurrent first calls must settle on one backend per case: equal outputs, not 1e-6 apart.
    x = torch.randn(129, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 0.01]) + torch.tensor(
        [1.0, -2.0, 3.0, 1e6], dtype=torch.float64)
    model = _fresh_model("auto")
    with torch.no_grad():
        got = _together(lambda i: model.log_prob(x))
        serial = model.log_prob(x)
    for g in got:
        assert torch.equal(g, serial)


@pytest.mark.parametrize("query", ["sample", "interventional_samples", "average_treatment_effect"])
def test_seeded_causal_queries_from_threads_equal_serial(causal, query):
    calls = {
        "sample": lambda s: causal.sample(64, seed=s, output="tensor"),
        "interventional_samples": lambda s: causal.interventional_samples({"a": 1.0}, 64, seed=s, output="tensor"),
        "average_treatment_effect": lambda s: torch.tensor(
            causal.average_treatment_effect("c", {"a": 1.0}, {"a": 0.0}, 64, seed=s)),
    }[query]
    serial = [calls(s) for s in range(12)]
    for _ in range(4):  # 48 calls in all, 12 at a time
        got = _together(calls, 12)
        for s, g in enumerate(got):
            assert torch.equal(g, serial[s]), f"seed {s} differs under threads"


def test_seeded_query_leaves_global_rng_untouched(causal):
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    causal.sample(10, seed=7)
    causal.interventional_samples({"b": 0.5}, 10, seed=8)
    assert torch.equal(torch.rand(5), expected)


def test_unseeded_causal_samples_never_repeat_across_threads(causal):
    rows = torch.cat(_together(lambda i: causal.sample(100, output="tensor")))
    assert _duplicates(rows) == 0
