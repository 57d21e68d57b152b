r"""Affine normalizer ``z = x * exp(s) + t`` with a soft bound on the log-scale s.

The reference clamps its parameters in place (``clamp_``), which zeroes their gradient outside the
range and writes into the conditioner's output. Here ``s = bound * tanh(s_raw / bound)``: smooth,
the identity near zero, and never beyond ±bound, so one step scales by at most ``exp(bound)``.

Example:
    >>> norm = AffineNormalizer(scale_bound=3.0)
    >>> x, h = torch.randn(4, 2), torch.randn(4, 2, 2)
    >>> z, log_det = norm(x, h)
    >>> bool(torch.allclose(norm.inverse(z, h), x, atol=1e-5))
    True
"""
from __future__ import annotations

import torch

from ..._validate import as_real
from .base import Normalizer

__all__ = ["AffineNormalizer"]


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
        b = self.scale_bound
        # b tanh(u / b) written as 2b sigmoid(2u / b) - b: the same function (to rounding), and
        # torch's CPU sigmoid is about twice as fast as its tanh on the conditioner's strided
        # output, which made log_prob 10% slower than the reference's clamp at d=15.
        return h[..., 0], torch.sigmoid(h[..., 1] * (2 / b)) * (2 * b) - b

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_log_scale(h)
        return torch.addcmul(shift, x, torch.exp(log_scale)), log_scale  # one op fewer than x * e + t

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        shift, log_scale = self._shift_log_scale(h)
        return (z - shift) * torch.exp(-log_scale)

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound}"
