r"""GNF: graphical normalizing flow, the input-masking baseline (Wehenkel & Louppe 2021).

Each step's conditioner is one dense MLP applied to ``(x ⊙ A[i], onehot(i))`` for every variable
i (d rows per sample, batched), so it respects the graph at d times the cost of one MLP.

Example:
    >>> import torch
    >>> flow = GNF([("a", "b")], hidden_sizes=(8,), flow_steps=2)
    >>> flow.log_prob(torch.randn(3, 2)).shape
    torch.Size([3])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .autoregressive import AutoregressiveFlow, build_steps
from .conditioners import Conditioner, GNFConditioner

__all__ = ["GNF"]


class GNF(AutoregressiveFlow):
    r"""Autoregressive flow on a DAG with input-masking conditioners.

    Arguments:
        adjacency: the DAG, in any form StrAF accepts (edgeless graphs allowed).
        hidden_sizes: hidden widths of each step's dense MLP.
        flow_steps: number of steps.
        normalizer: "affine", "spline" or "umnn".
        hot_encoding: feed the one-hot code of the variable to the MLP.
        names, prior, activation, **normalizer_options: as in :class:`~strnn_fast.flows.StrAF`.
        context_features, context_adjacency, context_names: a conditional flow p(x | c) on C
            context features, each variable reading the features its row of the (d, C)
            ``context_adjacency`` allows (default all); see
            :class:`~strnn_fast.flows.AutoregressiveFlow`.

    Example:
        >>> GNF(3, hidden_sizes=(4,), flow_steps=1).sample(2).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        adjacency: Any,
        hidden_sizes: Sequence[int] = (64, 64),
        flow_steps: int = 5,
        normalizer: str = "affine",
        *,
        hot_encoding: bool = True,
        names: Sequence[str] | None = None,
        prior: str = "normal",
        activation: str = "relu",
        context_features: int = 0,
        context_adjacency: Any = None,
        context_names: Sequence[str] | None = None,
        **normalizer_options: Any,
    ):
        super().__init__(adjacency, names=names, prior=prior, context_features=context_features,
                         context_adjacency=context_adjacency, context_names=context_names)
        A = self.sorted_adjacency
        Ac = self.sorted_context_adjacency

        def conditioner(n_params: int, first: Conditioner | None, perm: Any) -> Conditioner:
            return GNFConditioner(A, hidden_sizes, n_params, activation=activation, hot_encoding=hot_encoding,
                                  context_adjacency=Ac)

        self.steps = build_steps(flow_steps, normalizer, normalizer_options, conditioner)
        self.hidden_sizes = list(hidden_sizes)

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(), "hidden_sizes": self.hidden_sizes}
