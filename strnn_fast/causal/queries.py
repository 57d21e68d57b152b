r"""Interventions and counterfactuals on any triangular flow, through its transform and inverse only.

A flow ``z = T(x)`` whose Jacobian follows a DAG (``z_i`` depends on ``x_i`` and on ancestors of
``i`` only) is a structural equation model: ``z_i`` is the exogenous noise of variable ``i`` and
``x_i = g_i(z_i, x_ancestors)`` solves ``T(x)_i = z_i``. This holds for a composition of several
steps too, where ``T_i`` then reads ancestors a few edges away, not just parents.

To intervene, ``do(x_k = v)`` replaces ``k``'s equation by the constant ``v``. With only
``T`` and ``T^{-1}`` at hand, we instead choose the latent ``z_k`` that makes the flow's own
equation produce ``v``: ``z_k = T(x)_k`` evaluated at ``x_k = v`` and at the ancestors' values in
the intervened world. Ancestors of an intervened variable may themselves descend from another
intervened variable, so the latents are refreshed in rounds: round r settles the intervened
variables with r intervened ancestors in a chain; the number of rounds is known in advance.

Example:
    >>> import torch
    >>> A = torch.tensor([[0, 0], [1, 0]], dtype=torch.bool)      # x0 -> x1
    >>> T = lambda x: torch.stack([x[:, 0], x[:, 1] - 2 * x[:, 0]], 1)
    >>> Tinv = lambda z: torch.stack([z[:, 0], z[:, 1] + 2 * z[:, 0]], 1)
    >>> z = torch.tensor([[0.5, 1.0]])
    >>> do_inverse(T, Tinv, A.numpy(), z, [0], torch.tensor([[3.0]]))
    tensor([[3., 7.]])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..graph import depth, descendants, transitive_closure

__all__ = ["affected", "do_inverse", "do_rounds"]

Map = Callable[[torch.Tensor], torch.Tensor]


def do_rounds(A: np.ndarray, do_idx: Sequence[int]) -> int:
    r"""Number of latent refreshes :func:`do_inverse` needs: 1 + the longest chain of intervened
    variables in which each is an ancestor of the next.

    Arguments:
        A: (d, d) bool adjacency of the flow, ``A[i, j]``: i depends on j.
        do_idx: indices of the intervened variables.

    Returns:
        An int >= 1 (0 when nothing is intervened).

    Example:
        >>> import numpy as np
        >>> chain = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
        >>> do_rounds(chain, [0]), do_rounds(chain, [0, 2]), do_rounds(chain, [1, 2])
        (1, 2, 2)
    """
    idx = list(do_idx)
    if not idx:
        return 0
    closure = transitive_closure(A)
    return depth(closure[np.ix_(idx, idx)]) + 1


def affected(A: np.ndarray, do_idx: Sequence[int]) -> np.ndarray:
    r"""Marks the variables an intervention on ``do_idx`` can change: the intervened ones and
    their descendants.

    Arguments:
        A: (d, d) bool adjacency.
        do_idx: indices of the intervened variables.

    Returns:
        (d,) bool mask.

    Example:
        >>> import numpy as np
        >>> affected(np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=bool), [0]).tolist()
        [True, True, False]
    """
    mask = descendants(A, list(do_idx))
    mask[list(do_idx)] = True
    return mask


def do_inverse(
    transform: Map,
    inverse: Map,
    A: np.ndarray,
    z: torch.Tensor,
    do_idx: Sequence[int],
    do_values: torch.Tensor,
    x_start: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Generates ``x`` from latents ``z`` with the variables ``do_idx`` held at ``do_values``.

    Non-intervened variables satisfy ``transform(x)_i = z_i``; the intervened ones equal their
    values exactly.

    Arguments:
        transform: x -> z of the flow (a triangular map following ``A``).
        inverse: z -> x of the flow.
        A: (d, d) bool adjacency the flow follows.
        z: (n, d) latents (the exogenous noise).
        do_idx: k distinct variable indices.
        do_values: (n, k) values, column c for variable ``do_idx[c]``.
        x_start: the unintervened world ``inverse(z)`` when the caller already has it (for a
            counterfactual, the observed rows); computed otherwise.

    Returns:
        (n, d) tensor.

    Example:
        >>> import numpy as np, torch
        >>> ident = lambda t: t
        >>> do_inverse(ident, ident, np.zeros((2, 2), bool), torch.zeros(1, 2), [1], torch.ones(1, 1))
        tensor([[0., 1.]])
    """
    idx = list(do_idx)
    x = (inverse(z) if x_start is None else x_start).clone()
    if not idx:
        return x
    z = z.clone()
    x[:, idx] = do_values.to(x.dtype)
    for _ in range(do_rounds(A, idx)):
        z[:, idx] = transform(x)[:, idx]
        x = inverse(z)
        # The inverse reproduces the values only up to rounding; set them exactly.
        x[:, idx] = do_values.to(x.dtype)
    return x
