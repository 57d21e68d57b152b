r"""ARF: the autoregressive-flow baseline, MADE conditioners on the full triangle.

Each step's conditioner is MADE (:class:`~strnn_fast.FastStrNN` with ``opt_type="made"``): variable
i reads every variable before it in the order. With a graph the order is a topological order of
the graph (so ARF can represent everything StrAF can); with ``permute=True`` every other step
reverses the order, as in MAF, and the composed map becomes dense.

Example:
    >>> flow = ARF(3, hidden_sizes=(8,), flow_steps=2, permute=True)
    >>> flow.structure.astype(int)
    array([[0, 1, 1],
           [1, 0, 1],
           [1, 1, 0]])
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validate import as_flag
from .autoregressive import AutoregressiveFlow, ConditionerFactory
from .conditioners import Conditioner, StrNNConditioner

__all__ = ["ARF"]


class ARF(AutoregressiveFlow):
    r"""Autoregressive flow with MADE conditioners (the baseline of StrAF).

    Arguments:
        adjacency: an int d (variables in the given order), or a DAG in any form StrAF accepts,
            which fixes the variable order (a topological one) and the names; its edges are
            otherwise not used.
        hidden_sizes: hidden widths of each MADE (at least d units each).
        {common_arguments}
        permute: reverse the variable order in every other step.
        backend, init: as in :class:`~strnn_fast.flows.StrAF`.

    Example:
        >>> ARF([("x", "y")], hidden_sizes=(4,), flow_steps=1).names
        ['x', 'y']
    """

    def _conditioners(self, hidden_sizes: Sequence[int], activation: str, *, permute: bool = False,
                      backend: str = "auto", init: str = "kaiming") -> ConditionerFactory:
        self.permute = as_flag(permute, "permute")
        if self.d < 2:
            raise ValueError("ARF needs at least 2 variables")
        full = np.tril(np.ones((self.d, self.d), dtype=bool), k=-1)
        Ac = self.sorted_context_adjacency

        def conditioner(n_params: int, first: Conditioner | None, perm: Any) -> Conditioner:
            if not self.context_features:
                masks = first.masks if isinstance(first, StrNNConditioner) else None
                return StrNNConditioner(full, hidden_sizes, n_params, opt_type="made", activation=activation,
                                        backend=backend, precomputed_masks=masks, init=init)
            # MADE's masks on [x, c]: the context's rows follow the step's permutation; the masks
            # differ between permuted and unpermuted steps, so each step factorizes its own.
            rows = Ac if perm is None else Ac[np.asarray(perm)]
            return StrNNConditioner(full, hidden_sizes, n_params, opt_type="greedy", activation=activation,
                                    backend=backend, init=init, context_adjacency=rows)

        return conditioner

    def _permutation(self, k: int) -> Sequence[int] | None:
        return np.arange(self.d)[::-1].copy() if self.permute and k % 2 == 1 else None

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(), **self._net_config("hidden_sizes", "activation", "backend")}
