r"""A density model fitted on standardized data, answering in the data's own units.

Flows with a standard-normal base train best on data with zero mean and unit variance. Wrapping
the fitted model with the training statistics keeps the change of variables exact:
``log p(x) = log p_base((x - mean) / std) - sum(log std)``, and samples are ``mean + std * z``.
The wrapper saves and loads like any model (the inner model's class and configuration go into
its configuration), so ``strnn-fast sample`` and ``logprob`` work in data units.

Example:
    >>> import numpy as np, torch
    >>> from strnn_fast.flows import StrAF
    >>> base = StrAF(np.tril(np.ones((2, 2)), -1), hidden_sizes=(8,), flow_steps=1)
    >>> model = Standardized(base, mean=[10.0, -5.0], std=[2.0, 0.5])
    >>> model.sample(3).shape
    torch.Size([3, 2])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validate import as_input
from .serialization import Savable, build, class_path

__all__ = ["Standardized"]


class Standardized(Savable, nn.Module):
    r"""Density model on ``x`` given a model of ``(x - mean) / std``.

    Arguments:
        base: a savable module with ``log_prob`` and ``sample`` (fitted on standardized data), or
            the ``{"class", "config"}`` spec that rebuilds one (what loading passes).
        mean: per-variable shift (d values).
        std: per-variable positive scale (d values).
        names: optional variable names; defaults to the base model's.
        context_mean, context_std: for a conditional base model, the statistics its context was
            standardized with (C values each); ``log_prob``/``sample`` then take the context in
            its own units.

    Example:
        >>> import math, torch
        >>> from strnn_fast.flows import StrAF
        >>> base = StrAF([[0, 0], [1, 0]], hidden_sizes=(4,), flow_steps=1)
        >>> model = Standardized(base, mean=[1.0, 2.0], std=[2.0, 2.0])
        >>> x = torch.randn(5, 2)
        >>> expected = base.log_prob((x - torch.tensor([1.0, 2.0])) / 2) - 2 * math.log(2)
        >>> torch.allclose(model.log_prob(x), expected)
        True
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, base: nn.Module | dict[str, Any], mean: Sequence[float], std: Sequence[float],
                 names: Sequence[str] | None = None, context_mean: Sequence[float] | None = None,
                 context_std: Sequence[float] | None = None):
        super().__init__()
        self.base = build(base.get("class", ""), base.get("config", {})) if isinstance(base, dict) else base
        if not isinstance(self.base, nn.Module) or not hasattr(self.base, "config"):
            raise TypeError(f"base must be a savable strnn_fast model, got {type(self.base).__name__}")
        mean_arr = np.asarray(mean, dtype=np.float64)
        std_arr = np.asarray(std, dtype=np.float64)
        d = mean_arr.shape[0] if mean_arr.ndim == 1 else -1
        if mean_arr.ndim != 1 or std_arr.shape != (d,) or getattr(self.base, "d", d) != d:
            raise ValueError(f"mean and std must each hold one value per variable "
                             f"(d={getattr(self.base, 'd', '?')}), got shapes {mean_arr.shape}, {std_arr.shape}")
        if not (np.isfinite(mean_arr).all() and np.isfinite(std_arr).all()):
            raise ValueError("mean and std must be finite")
        if not (std_arr > 0).all():
            # The constant-column policy (see strnn_fast._validate.column_stats): refuse, never rescale by 1.
            bad = [int(i) for i in np.flatnonzero(~(std_arr > 0))]
            raise ValueError(f"std must be positive; variables {bad} have std {std_arr[bad].tolist()} "
                             "(a constant column cannot be modelled: drop it)")
        self.d = d
        self.names = list(names) if names is not None else getattr(self.base, "names", None)
        like = next(self.base.parameters(), torch.empty(0))
        self.register_buffer("mean", torch.tensor(mean_arr, dtype=like.dtype))
        self.register_buffer("std", torch.tensor(std_arr, dtype=like.dtype))
        self.context_features = int(getattr(self.base, "context_features", 0))
        if context_mean is not None or context_std is not None:
            c_mean = np.asarray(context_mean, dtype=np.float64)
            c_std = np.asarray(context_std, dtype=np.float64)
            if c_mean.shape != (self.context_features,) or c_std.shape != c_mean.shape or not self.context_features:
                raise ValueError(f"context_mean and context_std must each hold context_features="
                                 f"{self.context_features} values, got shapes {c_mean.shape}, {c_std.shape}")
            if not (np.isfinite(c_mean).all() and np.isfinite(c_std).all() and (c_std > 0).all()):
                raise ValueError("context_mean must be finite and context_std finite and positive")
            self.register_buffer("context_mean", torch.tensor(c_mean, dtype=like.dtype))
            self.register_buffer("context_std", torch.tensor(c_std, dtype=like.dtype))
        else:
            self.context_mean = self.context_std = None

    def _resolved_config(self) -> dict[str, Any]:
        # The base model as the {"class", "config"} spec that rebuilds it; statistics as float lists.
        # (from the arguments, not the buffers, which may have been rounded to the base's dtype).
        args = self._init_arguments
        config = {"base": {"class": class_path(self.base), "config": self.base.config}, "names": self.names}
        for key in ("mean", "std", "context_mean", "context_std"):
            if args[key] is not None:
                config[key] = np.asarray(args[key], dtype=np.float64).tolist()
        return config

    def _context(self, context: torch.Tensor | None) -> dict[str, torch.Tensor]:
        # The keyword for the base model: none for an unconditional one (so any base model works).
        if context is None:
            return {}
        if self.context_mean is not None:
            context = (context.to(self.context_mean) - self.context_mean) / self.context_std
        return {"context": context}

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Log-density of rows ``x`` (..., d) in data units (given ``context`` in its units)."""
        x = as_input(x, self.d, self.mean, "x")
        return self.base.log_prob((x - self.mean) / self.std, **self._context(context)) - self.std.log().sum()

    def sample(self, sample_shape: Sequence[int] | int | torch.Size = (),
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Samples of shape (*sample_shape, d) in data units; an int n works for every base model."""
        return self.base.sample(sample_shape, **self._context(context)) * self.std + self.mean
