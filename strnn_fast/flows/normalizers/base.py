r"""The normalizer interface: an elementwise invertible map z_i = τ(x_i; h_i) with per-variable parameters h_i."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["Normalizer"]


class Normalizer(nn.Module):
    r"""Elementwise bijection of each variable, parameterized by the conditioner's output.

    ``h`` has shape (B, d, n_params): ``h[:, i]`` holds the parameters of variable i, computed from
    x's parents only, which makes the flow step triangular with diagonal ``dτ/dx_i``.
    """

    n_params: int
    #: Run torch ops only (no C++ kernels, no autograd.Function): set while torch.export traces.
    torch_only: bool = False

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(z, log|dz/dx|)``, both (B, d)."""
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Returns x with ``forward(x, h)[0] == z``."""
        raise NotImplementedError
