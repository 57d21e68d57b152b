r"""Timing of alternatives that compute the same thing: the measurements behind backend="auto".

:func:`time_candidates` runs zero-argument callables in interleaved rounds and keeps each one's
fastest run (the one least disturbed by other processes), synchronizing CUDA around each.

Example:
    >>> times = time_candidates({"sum": lambda: sum(range(100)), "len": lambda: len(range(100))})
    >>> sorted(times)
    ['len', 'sum']
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["time_candidates"]


def _sync(device: Any) -> None:
    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def time_candidates(fns: dict[str, Callable[[], Any]], device: Any = None, min_total_s: float = 0.02,
                    max_rounds: int = 10) -> dict[str, float]:
    r"""Best-of-a-few wall time, in microseconds, of each zero-argument callable.

    All are warmed up (twice when cheap: first calls pay allocations and lazy initialization),
    then timed in interleaved rounds (one run of each per round, so that load from other
    processes hits all alike), at least 3 rounds and until `min_total_s` is spent, at most
    `max_rounds`; each keeps its minimum, the run least disturbed. A candidate over 10 ms and 3x
    slower than the best drops out after its first timed run, and one whose warm-up alone is big (> 50 ms)
    and 10x the best is not run again: measuring big dense layers stays cheap. A candidate that
    raises is left out of the result (RuntimeError if all do). List the likely winner first.
    """
    times: dict[str, float] = {}
    live = []
    failed: dict[str, Exception] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        try:
            fn()
            _sync(device)
        except Exception as err:  # e.g. a dtype torch's CUDA CSR kernels lack: out of the running
            failed[name] = err
            continue
        warm = time.perf_counter() - t0
        times[name] = warm
        if len(times) > 1 and warm > 0.05 and warm > 10 * min(times.values()):
            continue
        if warm < 0.01:
            fn()
            _sync(device)
        live.append(name)
        times[name] = math.inf
    if not live:
        raise RuntimeError(f"no backend could run: {failed}")
    spent = 0.0
    for rnd in range(max_rounds):
        for name in list(live):
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            dt = time.perf_counter() - t0
            spent += dt
            times[name] = min(times[name], dt)
        best = min(times.values())
        # Only big candidates drop out: a small one may just have been preempted once.
        live = [n for n in live if times[n] <= 3 * best or times[n] < 0.01]
        if len(live) <= 1 or (rnd >= 2 and spent >= min_total_s):
            break
    return {name: t * 1e6 for name, t in times.items()}
