r"""The thread policy: how many CPU threads torch uses while strnn_fast trains or runs a command.

One policy for the Python API and the command line:

* :func:`strnn_fast.fit` (and ``CausalFlow.fit``) train with ``threads=1`` by default, and
  ``strnn-fast`` commands run with ``--threads 1`` by default: the same parameter, the same
  default. Measured on a 2-core box: batches of a few hundred rows through 64-256 wide layers
  gain nothing from a second thread, and on busy cores OpenMP's spinning workers made an epoch
  up to 20x slower. Wide models (thousands of units) or large batches may gain: pass more.
* ``threads=None`` leaves torch's own setting (``torch.set_num_threads``) alone.
* Everything else (``log_prob``, ``sample``, the causal queries) runs with torch's current
  setting, like any torch module; the CLI sets it to ``--threads`` for the whole command.
* The setting is restored when the call returns. The C++ kernels read ``torch.get_num_threads()``
  and give the same bits for any thread count.

Benchmarks in ``bench/`` pin 1 thread unless they say otherwise.

Example:
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with cpu_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ._validate import as_positive_int

__all__ = ["DEFAULT_THREADS", "cpu_threads"]

DEFAULT_THREADS = 1


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Sets torch's intra-op thread count to ``n`` for the block and restores it; None changes nothing."""
    if n is None:
        yield
        return
    n = as_positive_int(n, "threads")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
