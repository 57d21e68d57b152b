r"""The distribution face shared by every flow: ``log_prob``, ``sample``, ``rsample``, ``transform``, ``inverse``.

A subclass implements ``transform(x) -> (z, log_abs_det)`` and ``inverse(z)`` on (B, d) rows,
calling :meth:`Flow._check_input` first, and sets ``self.config`` (the JSON-friendly keyword
arguments that rebuild it) so that ``save``/:func:`strnn_fast.load` work. The base adds the
distribution methods on any batch shape, the prior, ``d``, ``names`` and ``event_shape``.

Density: ``log p(x) = log prior(z) + log|det dz/dx|`` with ``(z, log|det|) = transform(x)``.

Example:
    >>> import numpy as np
    >>> from strnn_fast.flows import StrAF
    >>> flow = StrAF(np.tril(np.ones((3, 3)), -1), hidden_sizes=(8,), flow_steps=2)
    >>> flow.log_prob(torch.randn(4, 3)).shape, flow.sample((2, 5)).shape
    (torch.Size([4]), torch.Size([2, 5, 3]))
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._validate import as_positive_int, as_sample_shape
from ..serialization import Savable
from .priors import make_prior

__all__ = ["Flow"]


class Flow(Savable, nn.Module):
    r"""Base class of the normalizing flows: a torch-Distribution-like module on R^d.

    Arguments:
        d: number of variables.
        names: optional variable names (d distinct strings).
        prior: base distribution, "normal" or "laplace" (see :mod:`strnn_fast.flows.priors`).
    """

    def __init__(self, d: int, *, names: Sequence[str] | None = None, prior: str = "normal"):
        super().__init__()
        self.d = as_positive_int(d, "d")
        if names is not None and len(names) != self.d:
            raise ValueError(f"names must have d={self.d} entries, got {len(names)}")
        self.names: list[str] | None = list(names) if names is not None else None
        self.prior = make_prior(prior)

    @property
    def event_shape(self) -> torch.Size:
        """(d,), as in ``torch.distributions``."""
        return torch.Size([self.d])

    @property
    def batch_shape(self) -> torch.Size:
        """Empty: one distribution, as in ``torch.distributions``."""
        return torch.Size()

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, d) data to the base space; returns ``(z, log|det dz/dx|)`` of shapes (B, d), (B,)."""
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Maps (B, d) base-space points to data space."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r"""Log-density of ``x`` of shape (..., d); returns shape (...).

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1).log_prob(torch.zeros(2)).shape
            torch.Size([])
        """
        rows = self._rows(x, "x")
        z, log_det = self.transform(rows)
        return (self.prior.log_prob(z) + log_det).reshape(x.shape[:-1])

    def rsample(self, sample_shape: Sequence[int] | int | torch.Size = ()) -> torch.Tensor:
        r"""Reparameterized samples of shape (*sample_shape, d), differentiable in the parameters.

        Example:
            >>> from strnn_fast.flows import StrAF
            >>> StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1).rsample(3).shape
            torch.Size([3, 2])
        """
        shape = _sample_shape(sample_shape)
        x = self.inverse(self.sample_latent(math.prod(shape)))
        return x.reshape(*shape, self.d)

    def sample(self, sample_shape: Sequence[int] | int | torch.Size = ()) -> torch.Tensor:
        """Samples of shape (*sample_shape, d), without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def sample_latent(self, n: int) -> torch.Tensor:
        """(n, d) draws from the prior, in the flow's dtype and on its device."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        return self.prior.sample((int(n), self.d), self._like())

    def _like(self) -> torch.Tensor:
        # Parameters and float buffers carry the flow's dtype and device.
        for t in (*self.parameters(), *self.buffers()):
            if t.is_floating_point():
                return t
        return torch.empty(0)

    def _check_input(self, x: Any, name: str) -> torch.Tensor:
        """Returns ``x`` as a (B, d) tensor in the flow's dtype and device, or raises naming ``name``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {self.d}), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"{name} must have shape (batch, {self.d}), got {tuple(x.shape)}")
        like = self._like()
        return x.to(dtype=like.dtype, device=like.device)

    def _rows(self, x: Any, name: str) -> torch.Tensor:
        # (..., d) -> (B, d), so that subclasses only ever see rows.
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (..., {self.d}), got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.d:
            raise ValueError(f"{name} must have shape (..., {self.d}), got {tuple(x.shape)}")
        return x.reshape(-1, self.d)


def _sample_shape(sample_shape: Sequence[int] | int | torch.Size) -> tuple[int, ...]:
    return as_sample_shape(sample_shape)
