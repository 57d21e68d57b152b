r"""Base (latent) distributions of the flows: standard normal and standard Laplace, by name.

A prior is a parameter-free module with ``log_prob(z)`` (summed over the last dimension) and
``sample(shape, like)``. New priors register in :data:`PRIORS` under a name, which is what a flow's
``config`` records.

Example:
    >>> prior = make_prior("laplace")
    >>> prior.log_prob(torch.zeros(2, 3)).shape
    torch.Size([2])
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .._validate import choice

__all__ = ["PRIORS", "Prior", "StandardLaplace", "StandardNormal", "make_prior"]


class Prior(nn.Module):
    """Interface: a fixed factorized distribution on R^d."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of each row of ``z`` (summed over the last dimension)."""
        raise NotImplementedError

    def sample(self, shape: tuple[int, ...], like: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws a tensor of ``shape`` with the dtype and device of ``like``; from ``generator``
        (on that device) when given, so that a seeded draw leaves the global RNG alone."""
        raise NotImplementedError


class StandardNormal(Prior):
    r"""N(0, I).

    Example:
        >>> round(float(StandardNormal().log_prob(torch.zeros(1, 1))), 6)  # -log(2 pi) / 2
        -0.918939
    """

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)

    def sample(self, shape: tuple[int, ...], like: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)


class StandardLaplace(Prior):
    r"""Independent Laplace(0, 1) coordinates (the heavy-tailed noise of CAREFL-style causal flows).

    Example:
        >>> round(float(StandardLaplace().log_prob(torch.zeros(1, 1))), 6)  # -log 2
        -0.693147
    """

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -(z.abs() + math.log(2.0)).sum(-1)

    def sample(self, shape: tuple[int, ...], like: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is not None:
            # Inverse CDF of a uniform draw on (-1, 1), kept off the endpoints so samples are finite.
            tiny = torch.finfo(like.dtype).eps
            u = torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator) * 2 - 1
            u = u.clamp(-1 + tiny, 1 - tiny)
            return -torch.sign(u) * torch.log1p(-u.abs())
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        # torch's Laplace keeps its uniform draw off the endpoints, so samples are finite.
        return torch.distributions.Laplace(zero, zero + 1).sample(shape)


PRIORS: dict[str, type[Prior]] = {"normal": StandardNormal, "laplace": StandardLaplace}


def make_prior(name: str) -> Prior:
    """Builds the prior registered under ``name`` ("normal" or "laplace")."""
    return PRIORS[choice(name, tuple(PRIORS), "prior")]()
