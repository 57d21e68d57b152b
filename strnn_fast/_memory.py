r"""The memory budget: allocations sized by user input are estimated first and checked against one limit.

Sampling (``sample``, ``intervene``), dense adjacencies from edge lists, CSV tables and model file
headers all call :func:`check_memory` before they allocate, so a request beyond the limit is a
ValueError naming it (and the CLI's exit 2), never a MemoryError after minutes of work.

Example:
    >>> check_memory(1e3, "a small table")  # within the limit: nothing happens
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_MEMORY_LIMIT", "MEMORY_LIMIT_ENV", "STEP_BYTES", "check_memory", "check_model_header",
           "memory_limit"]

MEMORY_LIMIT_ENV = "STRNN_FAST_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = 8 * 2**30


def memory_limit() -> int:
    r"""The one budget (bytes) that allocations sized by user input are checked against.

    ``STRNN_FAST_MEMORY_LIMIT`` (bytes, e.g. ``4e9``) overrides the default of 8 GiB; a value that
    is not a positive number is refused when a check runs (never at import).

    Example:
        >>> memory_limit() > 0
        True
    """
    text = os.environ.get(MEMORY_LIMIT_ENV)
    if text is None:
        return DEFAULT_MEMORY_LIMIT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{MEMORY_LIMIT_ENV}={text!r} is not a positive number of bytes")
    return int(value)


def check_memory(nbytes: float, what: str, hint: str = "") -> None:
    r"""Raises ValueError (naming ``what``) before allocating ``nbytes`` beyond :func:`memory_limit`.

    Example:
        >>> check_memory(1e13, "intervene -n 1e10", "write them with -o in chunks")
        Traceback (most recent call last):
        ...
        ValueError: intervene -n 1e10 needs about 1e+13 bytes, more than the memory limit of 8.59e+09 bytes (STRNN_FAST_MEMORY_LIMIT); write them with -o in chunks
    """
    limit = memory_limit()
    if nbytes > limit:
        raise ValueError(f"{what} needs about {nbytes:.3g} bytes, more than the memory limit of {limit:.3g} bytes "
                         f"({MEMORY_LIMIT_ENV}){'; ' + hint if hint else ''}")


STEP_BYTES = 48 * 2**10  # measured: a StrAF flow step (d=3, hidden 4) holds 41-56 kB of objects, ~13 ms to build


def check_model_header(config: Mapping[str, Any], state: Mapping[str, Any], where: str) -> None:
    r"""Refuses a model file whose header asks for more than its weights or :func:`memory_limit`
    allow, before the model is built (a header asking for 200,000 flow steps took minutes and GBs).

    Every flow step holds at least one weight tensor, so a file with fewer tensors in ``state``
    than flow steps in ``config`` (nested configs, such as a wrapped base model, count) was not
    written by ``save``. The memory estimate is ``STEP_BYTES`` a step plus the weights to load.

    Example:
        >>> check_model_header({"base": {"config": {"flow_steps": 200_000}}}, {}, "model file 'm.pt'")
        Traceback (most recent call last):
        ...
        ValueError: model file 'm.pt': the header asks for 200000 flow steps but the file holds 0 weight tensors (each step has at least one); the file is damaged or was not written by save()
    """
    steps = _flow_steps(config)
    if steps > len(state):
        raise ValueError(f"{where}: the header asks for {steps} flow steps but the file holds {len(state)} weight "
                         "tensors (each step has at least one); the file is damaged or was not written by save()")
    weights = sum(t.numel() * t.element_size() for t in state.values())
    check_memory(steps * STEP_BYTES + weights, f"{where}: a model of {steps} flow steps and {weights} bytes of weights",
                 "the file may be damaged")


def _flow_steps(config: Mapping[str, Any]) -> int:
    steps = config.get("flow_steps", 0)
    total = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 0
    return total + sum(_flow_steps(v) for v in config.values() if isinstance(v, Mapping))
