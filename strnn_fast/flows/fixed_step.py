r"""StrCNF's fixed-step solve unrolled in plain torch ops, for :func:`strnn_fast.export`.

torch.export traces neither torchdiffeq (its solver compares time points on the host) nor the
exact divergence of ``odefunc.py`` (``torch.func.vjp`` under ``vmap`` fails in the tracer). This
module integrates the same ODEs with ops it does trace, reproducing torchdiffeq step for step:

* the grid: ``ceil(T / step_size)`` equal steps of each block's end time T, fixed from the
  current T when the solve is unrolled (the time runs on [0, 1], see ``odefunc.py``); a backward
  solve on the negated grid with the negated dynamics, as torchdiffeq reverses time;
* the step formulas of torchdiffeq's euler, midpoint, heun2, heun3, rk4 (its 3/8-rule
  ``rk4_alt_step_func``) and explicit_adams (Adams-Bashforth after three rk4 steps), with the
  same operations in the same order on the same flat ``(x, logdet)`` state;
* the exact divergence, with the probe groups of :func:`~strnn_fast.flows.odefunc.probe_groups`
  pushed forward through the network (forward-mode tangents written out layer by layer) instead
  of pulled back: the same trace, summed in another order (differences of float rounding).

A flow whose blocks use the Hutchinson divergence gets the exact one here too: an artifact should
be deterministic, and the exact trace is what Hutchinson estimates. An inverse integrates x only
(its log-determinant is not returned).

Example:
    >>> import numpy as np
    >>> from strnn_fast.flows import StrCNF
    >>> flow = StrCNF(np.eye(3, k=-1), hidden_sizes=(8,), solver="rk4", step_size=0.3)
    >>> x = torch.randn(4, 3)
    >>> z, logdet = solve(list(flow.blocks), "rk4", [4], x, reverse=False, context=None)
    >>> bool(torch.allclose(z, flow.transform(x)[0], atol=1e-6))
    True
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..activations import ACTIVATIONS, SLOPES
from ..dense_ops import linear
from .odefunc import CNFDynamics

__all__ = ["SOLVERS", "solve", "velocity_divergence"]

Rhs = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def velocity_divergence(block: CNFDynamics, t: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None = None,
                        with_divergence: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""``f(t, x)`` of a block's network and its exact divergence ``tr(∂f/∂x)`` (None without it).

    Each probe group ``p`` (k of them) is pushed through the layers as a tangent
    (``W p``, then ``act'(a) * (W t)`` layer after layer), giving ``(∂f/∂x) p``; the rows of a
    group share no column, so ``p · (∂f/∂x) p`` sums the group's diagonal entries.

    Example:
        >>> import numpy as np
        >>> block = CNFDynamics(np.eye(3, k=-1, dtype=bool), (8,))
        >>> x = torch.randn(5, 3)
        >>> out, div = velocity_divergence(block, torch.tensor(0.0), x)
        >>> jac = torch.func.vmap(torch.func.jacrev(lambda z: block.velocity(torch.tensor(0.0), z)))(x)
        >>> bool(torch.allclose(div, jac.diagonal(dim1=1, dim2=2).sum(-1), atol=1e-6))
        True
    """
    h = block.net_input(t, x, context)
    tangent = None
    if with_divergence:  # (k, 1, inputs): the probe on the state's columns, zero on context and time
        tangent = F.pad(block.probes.to(x), (0, h.shape[1] - block.d)).unsqueeze(1)
    for layer in block.net.layers:
        weight = layer.dense_weight()
        a = linear(h, weight, layer.bias)
        h = ACTIVATIONS[layer.activation](a)
        if tangent is not None:
            tangent = tangent @ weight.T
            if layer.activation != "identity":
                tangent = SLOPES[layer.activation](a, h) * tangent
    if tangent is None:
        return h, None
    tangent = tangent.expand(-1, x.shape[0], -1)  # (k, B, d), also for a network without a hidden layer
    return h, (tangent * block.probes.to(x).unsqueeze(1)).sum(dim=(0, 2))


def _rhs(block: CNFDynamics, context: torch.Tensor | None, rows: int, d: int, with_divergence: bool,
         reverse: bool) -> Rhs:
    # CNFDynamics.forward on torchdiffeq's flat state (x then logdet), on the normalized time s;
    # a backward solve runs on -s with the negated dynamics (torchdiffeq's _ReverseFunc).
    def rhs(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y[: rows * d].view(rows, d)
        T = block.end_time.to(x)
        dx, div = velocity_divergence(block, (-s if reverse else s).to(x) * T, x, context, with_divergence)
        parts = [(T * dx).reshape(-1)] + ([T * div] if div is not None else [])
        out = torch.cat(parts)
        return -1.0 * out if reverse else out

    return rhs


# torchdiffeq's fixed-grid steps (fixed_grid.py, rk_common.py), transcribed operation for
# operation: (rhs, t0, dt, t1, y0, f0 = rhs(t0, y0)) -> the increment dy.
def _euler(f: Rhs, t0, dt, t1, y0, f0):
    return dt * f0


def _midpoint(f: Rhs, t0, dt, t1, y0, f0):
    half_dt = 0.5 * dt
    return dt * f(t0 + half_dt, y0 + f0 * half_dt)


def _heun2(f: Rhs, t0, dt, t1, y0, f0):
    k2 = f(t0 + dt * 1.0, y0 + dt * f0 * 1.0)
    return dt * (f0 * 0.5 + k2 * 0.5)


def _heun3(f: Rhs, t0, dt, t1, y0, f0):
    k2 = f(t0 + dt * (1 / 3), y0 + dt * f0 * (1 / 3))
    k3 = f(t0 + dt * (2 / 3), y0 + dt * (f0 * 0.0 + k2 * (2 / 3)))
    return dt * (f0 * (1 / 4) + k2 * 0.0 + k3 * (3 / 4))


def _rk4(f: Rhs, t0, dt, t1, y0, f0):
    k2 = f(t0 + dt * (1 / 3), y0 + dt * f0 * (1 / 3))
    k3 = f(t0 + dt * (2 / 3), y0 + dt * (k2 - f0 * (1 / 3)))
    k4 = f(t1, y0 + dt * (f0 - k2 + k3))
    return (f0 + 3 * (k2 + k3) + k4) * dt * 0.125


_STEPS = {"euler": _euler, "midpoint": _midpoint, "heun2": _heun2, "heun3": _heun3, "rk4": _rk4}
#: The torchdiffeq methods this module reproduces (implicit_adams iterates to convergence: not here).
SOLVERS = (*_STEPS, "explicit_adams")


def _integrate(f: Rhs, y: torch.Tensor, grid: torch.Tensor, solver: str) -> torch.Tensor:
    # FixedGridODESolver.integrate up to the last grid point (where torchdiffeq's linear
    # interpolation returns the step's end exactly).
    history: list[torch.Tensor] = []  # explicit_adams: the latest f first
    for i in range(grid.shape[0] - 1):
        t0, t1 = grid[i], grid[i + 1]
        dt = t1 - t0
        f0 = f(t0, y)
        if solver == "explicit_adams":
            dy = _adams(f, t0, dt, t1, y, f0, history)
        else:
            dy = _STEPS[solver](f, t0, dt, t1, y, f0)
        y = y + dy
    return y


def _adams(f: Rhs, t0, dt, t1, y0, f0, history: list[torch.Tensor]):
    # torchdiffeq's AdamsBashforthMoulton._step_func with implicit=False and its default orders.
    from torchdiffeq._impl.fixed_adams import _BASHFORTH_DIVISOR, _MAX_ORDER, _MIN_ORDER

    history.insert(0, f0)
    del history[_MAX_ORDER - 1:]
    order = min(len(history), _MAX_ORDER - 1)
    if order < _MIN_ORDER - 1:
        return _rk4(f, t0, dt, t1, y0, history[0])
    coefficients = dt * _BASHFORTH_DIVISOR[order].to(dt.device)
    return sum(c * g for c, g in zip(coefficients, history)).type_as(y0)


def grid(steps: int, reverse: bool, like: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's time points for StrCNF's grid: ``steps`` equal steps of [0, 1], or of [-1, 0]
    (``-linspace(1, 0)``) for a backward solve."""
    if reverse:
        return -torch.linspace(1.0, 0.0, steps + 1, dtype=like.dtype, device=like.device)
    return torch.linspace(0.0, 1.0, steps + 1, dtype=like.dtype, device=like.device)


def solve(blocks: Sequence[CNFDynamics], solver: str, steps: Sequence[int], x: torch.Tensor, *,
          reverse: bool, context: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""StrCNF's solve through its blocks (backwards when ``reverse``), unrolled.

    Arguments:
        blocks: the flow's blocks, in forward order.
        solver: one of :data:`SOLVERS`.
        steps: the number of steps of each block.
        x: (B, d) start.
        reverse: from base to data (no log-determinant: zeros are returned for it).
        context: (B, C) context of a conditional flow, or None.

    Returns:
        ``(end, logdet)``: (B, d) and the (B,) sum over blocks of the integrated divergence.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)} to unroll, got {solver!r}")
    if len(steps) != len(blocks):
        raise ValueError(f"steps must give one count per block ({len(blocks)}), got {len(steps)}")
    d = x.shape[1]
    total = x.new_zeros(x.shape[0])
    order = reversed(range(len(blocks))) if reverse else range(len(blocks))
    for i in order:
        block = blocks[i]
        with_divergence = not reverse
        y = torch.cat([x.reshape(-1), x.new_zeros(x.shape[0])]) if with_divergence else x.reshape(-1)
        rhs = _rhs(block, context, x.shape[0], d, with_divergence, reverse)
        y = _integrate(rhs, y, grid(steps[i], reverse, x), solver)
        x = y[: x.shape[0] * d].view(-1, d)
        if with_divergence:
            total = total + y[x.shape[0] * d:]
    return x, total
