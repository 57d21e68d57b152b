r"""StrAF: the structured autoregressive flow (Chen et al. 2023).

Every step's conditioner is a :class:`~strnn_fast.FastStrNN` on the DAG itself, so a variable's
transform reads its parents only, and there is no permutation between steps: the composed map
keeps the graph's (transitive) structure. The factorization is computed once and shared by steps.

Example:
    >>> import torch
    >>> flow = StrAF([("a", "b"), ("a", "c")], hidden_sizes=(8,), flow_steps=2)
    >>> flow.names, flow.log_prob(torch.randn(5, 3)).shape
    (['a', 'b', 'c'], torch.Size([5]))
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .autoregressive import AutoregressiveFlow, ConditionerFactory
from .conditioners import Conditioner, StrNNConditioner

__all__ = ["StrAF"]


class StrAF(AutoregressiveFlow):
    r"""Structured autoregressive flow on a DAG, with a standard-normal (or Laplace) base.

    Arguments:
        adjacency: the DAG, any variable order: (d, d) 0/1 matrix (``A[i, j] = 1``: i depends on
            j), edge list of (parent, child) pairs, or networkx DiGraph. Needs at least one edge.
        hidden_sizes: hidden widths of each step's conditioner.
        {common_arguments}
        opt_type: the conditioner's factorization, as in :class:`~strnn_fast.FastStrNN`. "zuko"
            by default: with hidden layers a little wider than d (64 units for 44-64 variables),
            these masks (with the spline's relative knot slopes) gave a lower held-out NLL than
            the paper's "greedy" (with 0.2.0's knot slopes) in all 6 graph x joint/conditional
            cells of bench/bench_quality.py (3 seeds), by 0.001-0.018 nats/dim, and they need no
            more units (the distinct rows of the adjacency, not all nonzero ones).
        opt_args, backend: of the conditioner, as in :class:`~strnn_fast.FastStrNN`.
        init: the conditioner's hidden-layer initialization (see
            :class:`~strnn_fast.flows.StrNNConditioner`; "kaiming" trains better here).

    Raises:
        ValueError: a cycle (named), a graph without edges (and no context), too narrow hidden layers.
        TypeError: an option the normalizer does not take.

    Example:
        >>> import numpy as np, torch
        >>> flow = StrAF(np.array([[0, 1], [0, 0]]), hidden_sizes=(4,), flow_steps=1, normalizer="umnn")
        >>> flow.sample(3).shape
        torch.Size([3, 2])
        >>> spline = StrAF([("a", "b")], hidden_sizes=(8,), flow_steps=2, normalizer="spline", bins=6, bound=4.0,
        ...                context_features=2, context_adjacency=[[1, 0], [0, 1]])
        >>> c = torch.randn(5, 2)
        >>> x = spline.sample(5, context=c)
        >>> z, _ = spline.transform(x, context=c)
        >>> bool(torch.allclose(spline.inverse(z, context=c), x, atol=1e-5))
        True
    """

    def _conditioners(self, hidden_sizes: Sequence[int], activation: str, *, opt_type: str = "zuko",
                      opt_args: dict | None = None, backend: str = "auto", init: str = "kaiming") -> ConditionerFactory:
        A = self.sorted_adjacency
        Ac = self.sorted_context_adjacency  # (d, 0) without context: the conditioners then read x only
        if not A.any() and not Ac.any():
            raise ValueError("adjacency has no edges, so the variables are independent; StrAF needs at least "
                             "one edge (use GNF, which accepts edgeless graphs, or model each variable alone)")

        def conditioner(n_params: int, first: Conditioner | None, perm: Any) -> Conditioner:
            masks = first.masks if isinstance(first, StrNNConditioner) else None
            return StrNNConditioner(A, hidden_sizes, n_params, opt_type=opt_type, opt_args=opt_args,
                                    activation=activation, backend=backend, precomputed_masks=masks, init=init,
                                    context_adjacency=Ac)

        return conditioner

    def _resolved_config(self) -> dict[str, Any]:
        return {**super()._resolved_config(),
                **self._net_config("hidden_sizes", "activation", "opt_type", "opt_args", "backend")}
