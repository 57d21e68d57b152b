r"""Affine normalizer ``z = x * exp(s) + t`` with a soft bound on the log-scale s.

The reference clamps its parameters in place (``clamp_``), which zeroes their gradient outside the
range and writes into the conditioner's output. Here ``s = bound * tanh(s_raw / bound)``: smooth,
the identity near zero, and never beyond ±bound, so one step scales by at most ``exp(bound)``.

On the CPU in float32/float64 the map with its backward (where a gradient is taken, or where the
parameters come batch-contiguous) and the inverse are one C++ pass each (``csrc/affine.cpp``),
reading the parameters in whatever layout the conditioner hands them; the torch ops below are the
reference (CUDA, other dtypes, torch.func transforms, torch.export, and derivatives of order two
and up) and the map without a gradient on other layouts.

Example:
    >>> norm = AffineNormalizer(scale_bound=3.0)
    >>> x, h = torch.randn(4, 2), torch.randn(4, 2, 2)
    >>> z, log_det = norm(x, h)
    >>> bool(torch.allclose(norm.inverse(z, h), x, atol=1e-5))
    True
"""
from __future__ import annotations

import torch

from ... import _C
from ..._function import apply
from ..._validate import as_real
from ...dense_ops import empty_transposed
from ...nn import per_variable
from .base import Normalizer

__all__ = ["AffineNormalizer"]


def _bounded(u: torch.Tensor, b: float) -> torch.Tensor:
    # b tanh(u / b) written as 2b sigmoid(2u / b) - b: the same function (to rounding), and
    # torch's CPU sigmoid is about twice as fast as its tanh on the conditioner's strided
    # output, which made log_prob 10% slower than the reference's clamp at d=15.
    return torch.sigmoid(u * (2 / b)) * (2 * b) - b


def _batch_contiguous(h: torch.Tensor) -> bool:
    # the kernels' column path: parameters whose batch dimension is contiguous (a fused chain's output)
    return h.stride(0) == 1


def _like(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    # A new (B, d) output for the kernels: column-major where h is batch-contiguous (the column
    # path then writes it in place, and the next conditioner reads it so), else x's layout.
    return empty_transposed(*x.shape, dtype=x.dtype) if _batch_contiguous(h) else torch.empty_like(x)


def _map(x: torch.Tensor, h: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, log_det) by the C++ forward, in new tensors laid out by _like."""
    z, log_det = _like(x, h), _like(x, h)
    _C.affine_forward(x.detach().numpy(), h.detach().numpy(), z.numpy(), log_det.numpy(), bound,
                      torch.get_num_threads())
    return z, log_det


class _AffineForward(torch.autograd.Function):
    """(z, log_det) of the affine map by the C++ kernels; first derivatives by the C++ backward,
    higher ones through the torch formulas of the same gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, h: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = _map(x, h, bound)
        ctx.save_for_backward(x, h)
        ctx.bound = bound
        return z, log_det

    @staticmethod
    def backward(ctx, gz: torch.Tensor, gld: torch.Tensor):
        x, h = ctx.saved_tensors
        b = ctx.bound
        if torch.is_grad_enabled():  # create_graph: gradients that differentiate again
            s = _bounded(h[..., 1], b)
            e = torch.exp(s)
            gu = (gz * x * e + gld) * (1 - (s / b).square())
            return gz * e, torch.stack([gz, gu], -1), None
        # gh in h's layout (a padded one is not kept by empty_like): no copy on the way back
        gx = _like(x, h)
        gh = per_variable(empty_transposed(x.shape[0], 2 * x.shape[1], dtype=x.dtype), 2) if _batch_contiguous(h) \
            else torch.empty_like(h)
        _C.affine_backward(x.detach().numpy(), h.detach().numpy(), gz.numpy(), gld.numpy(), gx.numpy(), gh.numpy(),
                           b, torch.get_num_threads())
        return gx, gh, None


def _kernels_apply(x: torch.Tensor, h: torch.Tensor) -> bool:
    # csrc/affine.cpp: CPU, float32/float64, one dtype, (N0, N1) and (N0, N1, 2); not while tracing.
    return (x.device.type == "cpu" and h.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and h.dtype == x.dtype and x.dim() == 2 and h.shape == (*x.shape, 2)
            and not torch._C._are_functorch_transforms_active() and not torch.compiler.is_compiling())


class AffineNormalizer(Normalizer):
    r"""``z = x * exp(s) + t``; parameters per variable: ``h[..., 0] = t``, ``h[..., 1] = s_raw``.

    Arguments:
        scale_bound: positive bound on the log-scale |s|.
    """

    n_params = 2

    def __init__(self, scale_bound: float = 3.0):
        super().__init__()
        self.scale_bound = as_real(scale_bound, "scale_bound", positive=True)

    def _shift_log_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h[..., 0], _bounded(h[..., 1], self.scale_bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The C++ pass where a gradient is taken (one autograd node instead of about ten), and where
        # the parameters come batch-contiguous (a fused chain's output: the kernels' column path,
        # 1024 x 15: 22 us against 51 for torch's ops); torch's vectorized ops were faster than the
        # kernels' tiles on other layouts (d=15 StrAF log_prob, batch 1024: 1.65 ms vs 1.85).
        differentiable = torch.is_grad_enabled() and (x.requires_grad or h.requires_grad)
        if (differentiable or _batch_contiguous(h)) and not self.torch_only and _kernels_apply(x, h):
            return apply(_AffineForward, x, h, self.scale_bound) if differentiable else _map(x, h, self.scale_bound)
        shift, log_scale = self._shift_log_scale(h)
        return torch.addcmul(shift, x, torch.exp(log_scale)), log_scale  # one op fewer than x * e + t

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled() and (z.requires_grad or h.requires_grad)
        if not differentiable and not self.torch_only and _kernels_apply(z, h):
            x = torch.empty_like(z)
            _C.affine_inverse(z.detach().numpy(), h.detach().numpy(), x.numpy(), self.scale_bound, torch.get_num_threads())
            return x
        shift, log_scale = self._shift_log_scale(h)
        return (z - shift) * torch.exp(-log_scale)

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound}"
