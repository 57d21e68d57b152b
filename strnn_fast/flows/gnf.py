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

from .autoregressive import AutoregressiveFlow, ConditionerFactory
from .conditioners import Conditioner, GNFConditioner

__all__ = ["GNF"]


class GNF(AutoregressiveFlow):
    r"""Autoregressive flow on a DAG with input-masking conditioners.

    Arguments:
        adjacency: the DAG, in any form StrAF accepts (edgeless graphs allowed).
        hidden_sizes: hidden widths of each step's dense MLP.
        {common_arguments}
        hot_encoding: feed the one-hot code of the variable to the MLP.

    Example:
        >>> GNF(3, hidden_sizes=(4,), flow_steps=1).sample(2).shape
        torch.Size([2, 3])
    """

    def _conditioners(self, hidden_sizes: Sequence[int], activation: str, *,
                      hot_encoding: bool = True) -> ConditionerFactory:
        A = self.sorted_adjacency
        Ac = self.sorted_context_adjacency
        self.hidden_sizes = list(hidden_sizes)

        def conditioner(n_params: int, first: Conditioner | None, perm: Any) -> Conditioner:
            return GNFConditioner(A, hidden_sizes, n_params, activation=activation, hot_encoding=hot_encoding,
                                  context_adjacency=Ac)

        return conditioner

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(), "hidden_sizes": self.hidden_sizes}
