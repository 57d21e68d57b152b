r"""Conditioners: networks mapping x (B, d) to per-variable normalizer parameters (B, d, k).

``h[:, i]`` may depend only on the x_j with ``adjacency[i, j]``: that is what makes a flow step
triangular and its log-determinant a sum of elementwise terms. Every conditioner counts its
evaluations in ``passes`` (one batched call is one pass), so tests and benchmarks can check how
many the inverse needs. The output layer starts at zero, so every step starts as a fixed
elementwise map (the identity for the affine normalizer): a stack of randomly initialized
steps multiplies scales and starts training at NLLs in the tens of thousands.

* :class:`StrNNConditioner`: one masked MLP (:class:`~strnn_fast.FastStrNN`) on the adjacency;
  with ``opt_type="made"`` on the full triangle it is MADE.
* :class:`GNFConditioner`: the input-masking conditioner of graphical normalizing flows: one
  dense MLP applied to ``(x ⊙ A[i], onehot(i))`` for every variable i, batched as d rows.

Conditional flows: with a (d, C) ``context_adjacency`` the conditioner reads ``[x, c]`` and
``h[:, i]`` may also depend on the context features c_j with ``context_adjacency[i, j]``; the
StrNN then runs on the d x (d + C) adjacency ``[A | A_c]``.

Example:
    >>> import numpy as np
    >>> cond = StrNNConditioner(np.tril(np.ones((3, 3)), -1), (8,), n_params=2)
    >>> cond(torch.randn(4, 3)).shape, cond.passes
    (torch.Size([4, 3, 2]), 1)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from .._validate import as_flag, as_positive_int, as_sizes, choice
from ..activations import ACTIVATIONS
from ..layer import MaskedLinear
from ..nn import FastStrNN

__all__ = ["Conditioner", "GNFConditioner", "StrNNConditioner"]

_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "identity")


class Conditioner(nn.Module):
    r"""Base: ``forward(x) -> h`` of shape (B, d, n_params), counting passes.

    Arguments:
        adjacency: (d, d) bool matrix the outputs respect (``h[:, i]`` depends on x_j only if
            ``adjacency[i, j]``); strictly below the diagonal after the flow's internal ordering.
        n_params: parameters per variable.
    """

    def __init__(self, adjacency: np.ndarray, n_params: int, context_adjacency: np.ndarray | None = None):
        super().__init__()
        self.adjacency = np.asarray(adjacency, dtype=bool)
        self.d = int(self.adjacency.shape[0])
        self.n_params = as_positive_int(n_params, "n_params")
        if context_adjacency is None:
            context_adjacency = np.zeros((self.d, 0), dtype=bool)
        self.context_adjacency = np.asarray(context_adjacency, dtype=bool)
        if self.context_adjacency.ndim != 2 or self.context_adjacency.shape[0] != self.d:
            raise ValueError(f"context_adjacency must have shape ({self.d}, C), got {self.context_adjacency.shape}")
        self.context_features = int(self.context_adjacency.shape[1])
        self.passes = 0

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self.passes += 1
        return self.params(x, context)

    def params(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, d, n_params) parameters from x (B, d) and the (B, C) context, without counting a pass.

        The context comes checked by the flow's entry point (:mod:`strnn_fast._context`); each
        conditioner joins it to its inputs once, here."""
        raise NotImplementedError


class StrNNConditioner(Conditioner):
    r"""A :class:`~strnn_fast.FastStrNN` with ``n_params`` outputs per variable.

    Output ``p * d + i`` of the network is parameter p of variable i (the StrNN block layout), so
    the (B, k*d) output is viewed as (B, k, d) and transposed.

    Arguments:
        adjacency: (d, d) bool matrix with at least one edge.
        hidden_sizes: hidden widths (greedy needs at least the number of non-root variables).
        n_params: parameters per variable.
        opt_type, opt_args, activation, backend, precomputed_masks: as in
            :class:`~strnn_fast.FastStrNN` (masks of :attr:`masks` skip a second factorization).
        init: hidden-layer initialization, as in :class:`~strnn_fast.FastStrNN`. "kaiming"
            (nn.Linear's, the smaller one) by default: on the multimodal data it trains StrAF to a
            test NLL 0.1-0.35 nats lower than "masked" (3 seeds, bench/bench_flows.py protocol).
        context_adjacency: (d, C) bool matrix of the context features each variable may read
            (None: no context). The network then has d + C inputs and the adjacency
            ``[A | A_c]``, its rows repeated ``n_params`` times (one block per parameter).

    Example:
        >>> cond = StrNNConditioner(np.tril(np.ones((3, 3)), -1), (8,), 2, context_adjacency=np.ones((3, 2)))
        >>> cond(torch.randn(4, 3), torch.randn(4, 2)).shape
        torch.Size([4, 3, 2])
    """

    def __init__(
        self,
        adjacency: np.ndarray,
        hidden_sizes: Sequence[int],
        n_params: int,
        *,
        opt_type: str = "greedy",
        opt_args: dict | None = None,
        activation: str = "relu",
        backend: str = "auto",
        precomputed_masks: Sequence[np.ndarray] | None = None,
        init: str = "kaiming",
        context_adjacency: np.ndarray | None = None,
    ):
        super().__init__(adjacency, n_params, context_adjacency)
        if self.context_features:
            # FastStrNN's k-outputs-per-variable shortcut needs a square adjacency; the rectangular
            # [A | A_c] is given with its rows repeated k times instead (output p*d + i reads row i).
            full = np.tile(np.concatenate([self.adjacency, self.context_adjacency], axis=1), (self.n_params, 1))
        else:
            full = self.adjacency
        self.net = FastStrNN(self.d + self.context_features, hidden_sizes, self.n_params * self.d,
                             opt_type=opt_type, opt_args=opt_args, precomputed_masks=precomputed_masks,
                             adjacency=full, activation=activation, backend=backend, init=init)
        _zero(self.net.layers[-1])

    @property
    def masks(self) -> list[np.ndarray]:
        """The factorized masks (reference orientation, one output block), reusable as
        ``precomputed_masks`` by another conditioner on the same graph."""
        if self.context_features:
            return list(self.net.masks)
        return [*self.net.masks[:-1], self.net.masks[-1][:, : self.d]]

    def params(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        inputs = torch.cat([x, context], dim=-1) if self.context_features else x
        return self.net.block_view(inputs, self.n_params)


class GNFConditioner(Conditioner):
    r"""Input masking: ``h[:, i] = MLP(x ⊙ adjacency[i], onehot(i))`` with one dense MLP for all i.

    The d masked copies of each row run as one batch of B*d rows, so one pass costs d MLP
    evaluations; that is the price of a dense network respecting a graph.

    Arguments:
        adjacency: (d, d) bool matrix.
        hidden_sizes: hidden widths of the MLP.
        n_params: parameters per variable.
        activation: hidden activation.
        hot_encoding: append the one-hot code of i (otherwise variables with equal parent sets
            share their parameters).
        context_adjacency: (d, C) bool matrix: row i also sees ``c ⊙ context_adjacency[i]``.

    References:
        Wehenkel & Louppe, "Graphical Normalizing Flows" (AISTATS 2021).
    """

    def __init__(
        self,
        adjacency: np.ndarray,
        hidden_sizes: Sequence[int],
        n_params: int,
        *,
        activation: str = "relu",
        hot_encoding: bool = True,
        context_adjacency: np.ndarray | None = None,
    ):
        super().__init__(adjacency, n_params, context_adjacency)
        as_flag(hot_encoding, "hot_encoding")
        self.activation = choice(activation, _ACTIVATIONS, "activation")
        self.hot_encoding = hot_encoding
        sizes = [(2 * self.d if hot_encoding else self.d) + self.context_features, *as_sizes(hidden_sizes),
                 self.n_params]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        _zero(self.layers[-1])
        self.register_buffer("mask", torch.from_numpy(self.adjacency.astype(np.float32)), persistent=False)
        self.register_buffer("codes", torch.eye(self.d), persistent=False)
        self.register_buffer("context_mask", torch.from_numpy(self.context_adjacency.astype(np.float32)),
                             persistent=False)

    def params(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        parts = [x.unsqueeze(1) * self.mask]  # (B, d, d): row i keeps only variable i's parents
        if self.hot_encoding:
            parts.append(self.codes.expand(b, -1, -1))
        if self.context_features:
            parts.append(context.unsqueeze(1) * self.context_mask)  # (B, d, C): row i keeps its features
        u = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            u = act(layer(u))
        return self.layers[-1](u)


def _zero(layer: nn.Module) -> None:
    # MaskedLinear.zero_ zeroes the stored weights, packed or not: a packed layer's ``weight`` is
    # a dense copy scattered from its values, and zeroing that copy left the values random (so
    # StrAF started from a random flow wherever "auto" packed the last layer; it did on every
    # graph of bench/bench_quality.py).
    if isinstance(layer, MaskedLinear):
        layer.zero_()
        return
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
