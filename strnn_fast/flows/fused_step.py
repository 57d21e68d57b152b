r"""An affine StrAF step on the CPU as one autograd node: the conditioner's fused chain, the affine
map and the log-determinant's sum, forward and backward.

Where the step is trained at small sizes (the paper's d = 15, hidden 64), each autograd node
costs more than its arithmetic: the conditioner's chain (:mod:`strnn_fast.chain`), the affine
map and the sum were three nodes with their views, and this makes them one, whose backward
hands the affine map's parameter gradient to the chain's backward without leaving the arrays.
Without a gradient the same arrays run with no node. The step's output z is column-major (as
the chain's outputs are): the affine map's loops then run along the batch, and the next step's
conditioner reads z in place (d=15 StrAF, 5 steps, log_prob of 1024 rows: 0.98 ms against 1.45
with torch's affine ops on the chain's output, 1 thread, measured).

It runs where the normalizer is affine (not traced for export), the conditioner a StrNN one
without context and the step unpermuted, and the conditioner's network runs fused
(:func:`strnn_fast.chain.decided`, the measured choice); where the chain is not chosen, the
network's layers run one by one and the normalizer on their output, here (the chain asked once).
Otherwise the flow step runs its parts (``None`` from :func:`step`). Higher derivatives
recompute the step through differentiable ops.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import _C, chain
from .._function import apply
from ..csr_ops import _either_major
from ..dense_ops import empty_transposed
from ..nn import per_variable
from .conditioners import StrNNConditioner
from .normalizers.affine import AffineNormalizer, _bounded


def _torch_step(x: Tensor, plan: tuple, bound: float, params: tuple) -> tuple[Tensor, Tensor]:
    # The same step in differentiable torch ops (create_graph).
    h = per_variable(chain.layers_path(x, plan, params), 2)
    s = _bounded(h[..., 1], bound)
    return torch.addcmul(h[..., 0], x, torch.exp(s)), s.sum(-1)


def _forward(x: Tensor, plan: tuple, bound: float, params: tuple) -> tuple[list, Tensor, Tensor, Tensor]:
    """The chain's outputs (the last, y, as a tensor), z and the log-determinant's row sums."""
    outs = chain.forward_arrays(_either_major(x).numpy(), plan, params)
    y = torch.from_numpy(outs[-1])  # (B, 2d) column-major: shifts, then raw log-scales
    B, d = x.shape
    z, log_det = empty_transposed(B, d, dtype=x.dtype), torch.empty(B, dtype=x.dtype)
    _C.affine_forward(x.detach().numpy(), per_variable(y, 2).numpy(), z.numpy(), None, bound, torch.get_num_threads(),
                      log_det.numpy())
    return outs, y, z, log_det


def _evaluate(x: Tensor, plan: tuple, bound: float, params: tuple) -> tuple[Tensor, Tensor]:
    """(z, log-determinant) without a gradient: the step's arrays, no autograd node."""
    return _forward(x, plan, bound, params)[2:]


class _AffineStep(torch.autograd.Function):
    """(z, sum of log|dz/dx|) of an affine step for x (B, d); params as :func:`strnn_fast.chain.params_of`.
    z is column-major."""

    @staticmethod
    def forward(ctx, x: Tensor, plan: tuple, bound: float, *params: Tensor | None) -> tuple[Tensor, Tensor]:
        outs, y, z, log_det = _forward(x, plan, bound, params)
        ctx.plan, ctx.bound, ctx.outs = plan, bound, outs[:-1]
        ctx.save_for_backward(x, y, *params)
        return z, log_det

    @staticmethod
    def backward(ctx, gz: Tensor, g_sum: Tensor):
        x, y, *params = ctx.saved_tensors
        plan, bound = ctx.plan, ctx.bound
        needs = ctx.needs_input_grad[:1] + ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():  # create_graph
            grads = chain.recompute_grads(lambda x, *ps: _torch_step(x, plan, bound, ps), [x, *params], needs,
                                          (gz, g_sum))
            return grads[0], None, None, *grads[1:]
        B, d = x.shape
        gx = empty_transposed(B, d, dtype=x.dtype)  # the previous step's gz: read along the batch, as z here
        gy = empty_transposed(B, 2 * d, dtype=x.dtype)  # column-major, as the chain's backward reads it
        _C.affine_backward(x.detach().numpy(), per_variable(y.detach(), 2).numpy(), gz.numpy(),
                           g_sum.unsqueeze(-1).expand(B, d).numpy(), gx.numpy(), per_variable(gy, 2).numpy(), bound,
                           torch.get_num_threads())
        g_in, grads = chain.backward_arrays(gy.numpy(), x, [*ctx.outs, y.detach().numpy()], plan, tuple(params),
                                            needs[1:], needs[0])
        if g_in is not None:
            gx += torch.from_numpy(g_in)
        return (gx if needs[0] else None), None, None, *grads


def step(flow_step: Any, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """The step's (z, log-determinant) as one node where that applies (see the module docstring), else None."""
    normalizer, conditioner = flow_step.normalizer, flow_step.conditioner
    if (type(normalizer) is not AffineNormalizer or normalizer.torch_only or context is not None
            or flow_step.permuted or not isinstance(conditioner, StrNNConditioner) or conditioner.context_features):
        return None
    net = conditioner.net
    fused = chain.decided(net, x)
    conditioner.passes += 1
    if fused is None:  # the layers one by one (the chain is asked once: ~20 us a step at d=15-50)
        z, log_det = normalizer(x, per_variable(net.layered(x), 2))
        return z, log_det.sum(-1)
    if fused.training:
        return apply(_AffineStep, x, fused.plan, normalizer.scale_bound, *fused.params)
    return _evaluate(x, fused.plan, normalizer.scale_bound, fused.params)
