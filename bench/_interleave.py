"""Interleaved timing for benchmarks on a machine whose speed drifts.

On the shared 2-core VM the speed moves by up to 2x within minutes, so implementations timed one
after another give ratios that move with the drift. :func:`interleaved` runs every call back to
back in each round, a block of calls each; :func:`ratios` takes, per round, each call's time over a
base's, and the median over rounds: a slow spell hits all alike.

Example:
    >>> times = {"a": [2.0, 4.0, 2.2], "b": [1.0, 2.0, 1.0]}
    >>> ratios(times, "b")
    {'a': 2.0}
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch


def _nothing() -> None:
    pass


def interleaved(benchmark, calls: dict[str, Callable[[], object]], grad: bool, rounds: int,
                setup: dict[str, Callable[[], object]] | None = None, warm: bool = False) -> dict[str, list[float]]:
    """`rounds` rounds of every call back to back, a block of calls each (about 5 ms of the first
    call's, at least 5: each runs from warm caches, as in a loop of its own; with blocks of about
    1 ms, a d=50 layer's forward+backward at batch 1024 paid the others' cache traffic, 2.2x dense
    instead of 2.6x); seconds a call, per round. `setup[name]` runs before that call's block; `warm`:
    so does one untimed call (blocks of a few calls of several ms each, as train steps: the first
    call after another implementation's block refills the caches and allocator for the rest)."""
    setup = setup or {}
    times: dict[str, list[float]] = defaultdict(list)
    with torch.set_grad_enabled(grad):
        # A first call costs up to 0.5 s (pattern checks, autograd's first use, dispatch measurements).
        for name, fn in calls.items():
            setup.get(name, _nothing)()
            fn()
        first = next(iter(calls))
        setup.get(first, _nothing)()
        t0 = time.perf_counter()
        calls[first]()
        reps = max(5, min(500, int(5e-3 / max(time.perf_counter() - t0, 1e-7))))

        def one_round() -> None:
            for name, fn in calls.items():
                setup.get(name, _nothing)()
                if warm:
                    fn()
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name].append((time.perf_counter() - t0) / reps)

        benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    return times


def ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Each call's time over base's: the median over rounds of that round's ratio."""
    return {k: statistics.median(b / a for a, b in zip(times[base], t)) for k, t in times.items() if k != base}
