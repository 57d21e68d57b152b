r"""UMNN normalizer: ``z = beta + ∫_0^x g(t; e) dt`` with a positive integrand network g.

The integrand is one small network shared by all variables, fed ``t`` and the variable's
embedding ``e`` (conditioner output), so z is strictly increasing in x with ``dz/dx = g(x; e) > 0``
and ``log|dz/dx| = log g(x; e)``. The integral is a Clenshaw–Curtis rule on ``t = x s``,
``s ∈ [0, 1]``; its last node is ``s = 1``, so g(x) comes for free. A smooth activation in the
integrand keeps the quadrature error geometric in the number of nodes. The map is the quadrature,
so it is increasing only while the rule resolves g on [0, x]: with the default 16 intervals that
holds for |x| up to a few tens (standardized data); raise ``quadrature_intervals`` for wider ranges.

Inverse: F(x) = ∫_0^x g is monotone with F(0) = 0, so the root of ``F(x) = z - beta`` lies between 0
and the first of ±1, ±2, ±4, ... where F crosses (vectorized bracketing; it exists because
g >= min_slope). Safeguarded Newton then runs inside the bracket, falling back to bisection
whenever a step leaves it, until every element moved by at most ``tol * (1 + |x|)``. Gradients of
the inverse come from the implicit function theorem (one Newton step with a detached slope).

References:
    Wehenkel & Louppe, "Unconstrained Monotonic Neural Networks" (NeurIPS 2019).

Example:
    >>> norm = UMNNNormalizer(embedding_size=2, integrand_hidden=(8,)).double()
    >>> x, h = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, 3, dtype=torch.float64)
    >>> z, log_det = norm(x, h)
    >>> bool((norm.inverse(z, h) - x).abs().max() < 1e-6)
    True
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..._validate import as_positive_int, as_real, as_sizes, choice
from ...activations import ACTIVATIONS
from .base import Normalizer
from .quadrature import clenshaw_curtis

__all__ = ["UMNNNormalizer"]

POSITIVES = ("softplus", "elu")
# Doubling from 1 reaches any finite float before this many steps.
_MAX_EXPANSIONS = 1100


class UMNNNormalizer(Normalizer):
    r"""Monotone normalizer ``z = beta + ∫_0^x g(t; e) dt``.

    Parameters per variable: ``h[..., 0] = beta`` and ``h[..., 1:] = e`` (``embedding_size`` values).

    Arguments:
        embedding_size: size of the per-variable embedding e.
        integrand_hidden: hidden widths of the integrand network.
        quadrature_intervals: Clenshaw–Curtis intervals (nodes = intervals + 1).
        integrand_activation: hidden activation of the integrand ("silu", "tanh", "elu", ...;
            smooth ones keep the quadrature accurate).
        positive: "softplus" (``softplus(u) + min_slope``) or "elu" (``elu(u) + 1 + min_slope``).
        min_slope: positive lower bound on g; it bounds |x| <= |z - beta| / min_slope.
        tol: inverse tolerance, ``|x - x*| <~ tol * (1 + |x*|)`` per solve.
        max_iter: cap on Newton/bisection iterations of the inverse.
    """

    def __init__(
        self,
        embedding_size: int = 8,
        integrand_hidden: Sequence[int] = (32, 32),
        quadrature_intervals: int = 16,
        integrand_activation: str = "silu",
        positive: str = "softplus",
        min_slope: float = 1e-3,
        tol: float = 1e-6,
        max_iter: int = 100,
    ):
        super().__init__()
        self.embedding_size = as_positive_int(embedding_size, "embedding_size")
        self.integrand_hidden = as_sizes(integrand_hidden, "integrand_hidden")
        if not self.integrand_hidden:
            raise ValueError("integrand_hidden must have at least one layer")
        self.quadrature_intervals = as_positive_int(quadrature_intervals, "quadrature_intervals")
        self.integrand_activation = choice(integrand_activation, tuple(a for a in ACTIVATIONS if a != "identity"),
                                           "integrand_activation")
        self.positive = choice(positive, POSITIVES, "positive")
        self.min_slope = as_real(min_slope, "min_slope", positive=True)
        self.tol = as_real(tol, "tol", positive=True)
        self.max_iter = as_positive_int(max_iter, "max_iter")
        self.n_params = 1 + self.embedding_size

        width = self.integrand_hidden[0]
        # The first layer sees (t, e); splitting it lets e's projection be computed once per
        # variable instead of once per quadrature node.
        self.t_weight = nn.Parameter(torch.empty(width).uniform_(-1.0, 1.0))
        self.e_layer = nn.Linear(self.embedding_size, width)
        sizes = [*self.integrand_hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        nodes, weights = clenshaw_curtis(self.quadrature_intervals)
        self.register_buffer("nodes", torch.from_numpy(nodes).float(), persistent=False)
        self.register_buffer("weights", torch.from_numpy(weights).float(), persistent=False)

    def _apply(self, fn, recurse=True):  # noqa: D401 - recompute the rule rather than round it
        module = super()._apply(fn, recurse)
        nodes, weights = clenshaw_curtis(self.quadrature_intervals)
        self.nodes = torch.from_numpy(nodes).to(self.nodes)
        self.weights = torch.from_numpy(weights).to(self.weights)
        return module

    def integrand(self, t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        r"""g(t; e) > 0 for t of shape (B, d, Q) and e of shape (B, d, embedding_size); returns (B, d, Q)."""
        act = ACTIVATIONS[self.integrand_activation]
        u = act(torch.addcmul(self.e_layer(e).unsqueeze(-2), t.unsqueeze(-1), self.t_weight))
        for layer in self.layers[:-1]:
            u = act(layer(u))
        u = self.layers[-1](u).squeeze(-1)
        if self.positive == "softplus":
            return F.softplus(u) + self.min_slope
        return F.elu(u) + (1.0 + self.min_slope)

    def integral(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Returns ``(∫_0^x g(t; e) dt, g(x; e))`` for x of shape (B, d)."""
        g = self.integrand(x.unsqueeze(-1) * self.nodes, e)
        return x * (g @ self.weights), g[..., -1]

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        area, slope = self.integral(x, h[..., 1:])
        return h[..., 0] + area, torch.log(slope)

    def inverse(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        beta, e = h[..., 0], h[..., 1:]
        with torch.no_grad():
            x = self._solve(z - beta, e)
        if not torch.is_grad_enabled():
            return x
        # x* - (F(x*) + beta - z) / g: the value is x* (up to the residual) and its derivative in
        # z, beta, e and the integrand's weights is the implicit-function one, -∂F/∂θ / g.
        area, slope = self.integral(x, e)
        return x - (area + beta - z) / slope.detach()

    def _solve(self, target: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # Solve G(r) = |target| for r >= 0 with G(r) = sign * F(sign * r), increasing in r.
        sign = torch.where(target < 0, -1.0, 1.0).to(target)
        goal = target.abs()

        def excess(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            area, slope = self.integral(sign * r, e)
            return sign * area - goal, slope

        lo, hi = torch.zeros_like(goal), torch.ones_like(goal)
        f_hi = excess(hi)[0]
        for _ in range(_MAX_EXPANSIONS):
            short = f_hi < 0
            if not short.any():
                break
            lo, hi = torch.where(short, hi, lo), torch.where(short, 2 * hi, hi)
            f_hi = torch.where(short, excess(hi)[0], f_hi)

        r = (lo + hi) / 2
        for _ in range(self.max_iter):
            f, slope = excess(r)
            hi = torch.where(f > 0, r, hi)
            lo = torch.where(f <= 0, r, lo)
            step = r - f / slope
            inside = (step >= lo) & (step <= hi)
            step = torch.where(inside, step, (lo + hi) / 2)
            moved = (step - r).abs()
            r = step
            if bool((moved <= self.tol * (1 + r.abs())).all()):
                break
        return sign * r

    def extra_repr(self) -> str:
        return (f"embedding_size={self.embedding_size}, integrand_hidden={self.integrand_hidden}, "
                f"quadrature_intervals={self.quadrature_intervals}, tol={self.tol}")
