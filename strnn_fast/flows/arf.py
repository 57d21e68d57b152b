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

from .autoregressive import AutoregressiveFlow, build_steps
from .conditioners import Conditioner, StrNNConditioner

__all__ = ["ARF"]


class ARF(AutoregressiveFlow):
    r"""Autoregressive flow with MADE conditioners (the baseline of StrAF).

    Arguments:
        adjacency: an int d (variables in the given order), or a DAG in any form StrAF accepts,
            which fixes the variable order (a topological one) and the names; its edges are
            otherwise not used.
        hidden_sizes: hidden widths of each MADE (at least d units each).
        flow_steps: number of steps.
        normalizer: "affine" or "umnn".
        permute: reverse the variable order in every other step.
        names, prior, activation, backend, init, **normalizer_options: as in
            :class:`~strnn_fast.flows.StrAF`.

    Example:
        >>> ARF([("x", "y")], hidden_sizes=(4,), flow_steps=1).names
        ['x', 'y']
    """

    def __init__(
        self,
        adjacency: Any,
        hidden_sizes: Sequence[int] = (64, 64),
        flow_steps: int = 5,
        normalizer: str = "affine",
        *,
        permute: bool = False,
        names: Sequence[str] | None = None,
        prior: str = "normal",
        activation: str = "relu",
        backend: str = "auto",
        init: str = "kaiming",
        **normalizer_options: Any,
    ):
        super().__init__(adjacency, names=names, prior=prior)
        if not isinstance(permute, bool):
            raise TypeError(f"permute must be True or False, got {permute!r}")
        if self.d < 2:
            raise ValueError("ARF needs at least 2 variables")
        full = np.tril(np.ones((self.d, self.d), dtype=bool), k=-1)
        reverse = np.arange(self.d)[::-1].copy()

        def conditioner(n_params: int, first: Conditioner | None) -> Conditioner:
            masks = first.masks if isinstance(first, StrNNConditioner) else None
            return StrNNConditioner(full, hidden_sizes, n_params, opt_type="made", activation=activation,
                                    backend=backend, precomputed_masks=masks, init=init)

        self.steps = build_steps(flow_steps, normalizer, normalizer_options, conditioner,
                                 lambda k: reverse if permute and k % 2 == 1 else None)
        net = self.steps[0].conditioner.net
        self.config = {
            "adjacency": self.graph_config(), "hidden_sizes": list(net.hidden_sizes), "flow_steps": len(self.steps),
            "normalizer": normalizer, "permute": permute, "names": self.names, "prior": prior,
            "activation": net.activation, "backend": net.backend, "init": init, **normalizer_options,
        }
