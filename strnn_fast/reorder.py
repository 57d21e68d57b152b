r"""Block-friendly masks: permute hidden units so that fewer weight tiles hold a nonzero.

Permuting the units of a hidden layer (the columns of one mask with the rows of the next, in
the reference orientation) changes neither the validity of the masks nor their path counts, and
given correspondingly permuted weights not the function either; inputs and outputs keep the
user's order. A block-sparse kernel pays per nonzero tile, so the C++ core searches the order
of every hidden layer (by copied pattern, by degree, by tile signature, and greedy clustering)
and keeps, layer by layer, whichever gives fewest tiles.

Example:
    >>> import numpy as np
    >>> from strnn_fast import factorize
    >>> masks = factorize(np.tril(np.ones((32, 32)), -1), (128, 128))
    >>> r = reorder_masks(masks, block=(16, 16))
    >>> r.density_after <= r.density_before
    True
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import _C
from ._validate import as_binary_matrix, as_block


@dataclass(frozen=True)
class Reordering:
    r"""The result of :func:`reorder_masks`.

    Attributes:
        perms: one int64 array per hidden layer; ``perm[k]`` is the original unit placed at k.
        masks: the permuted masks (reference orientation, fan_in x fan_out).
        tiles_before / tiles_after: nonzero tiles of each mask (as an (out x in) weight), counted
            by the scan that builds :class:`~strnn_fast.layout.BlockLayout` (csrc/block_layout.cpp).
        tiles_total: tiles of each mask's full grid.
        methods: the order kept for each hidden layer ("identity" if none beat it).
    """

    perms: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...]
    tiles_before: tuple[int, ...]
    tiles_after: tuple[int, ...]
    tiles_total: tuple[int, ...]
    methods: tuple[str, ...]

    @property
    def density_before(self) -> float:
        """Fraction of nonzero tiles over all layers, before reordering."""
        return sum(self.tiles_before) / sum(self.tiles_total)

    @property
    def density_after(self) -> float:
        """Fraction of nonzero tiles over all layers, after reordering."""
        return sum(self.tiles_after) / sum(self.tiles_total)


def _as_masks(masks: Sequence[Any]) -> list[np.ndarray]:
    if isinstance(masks, (str, bytes, np.ndarray, torch.Tensor)) or not isinstance(masks, Sequence):
        raise TypeError("masks must be a list of 2-D arrays (reference orientation, input first)")
    return [as_binary_matrix(m, f"masks[{i}]", allow_zero=True) for i, m in enumerate(masks)]


def reorder_masks(masks: Sequence[Any], block: tuple[int, int] = (64, 64), sweeps: int = 3) -> Reordering:
    r"""Finds hidden-unit orders that minimize the nonzero tiles of all layers.

    Arguments:
        masks: masks in the reference orientation (fan_in x fan_out, input side first).
        block: tile shape (block_out, block_in) of the kernels that will use the masks.
        sweeps: passes of coordinate descent over the hidden layers (stops early at a fixpoint).

    Returns:
        A :class:`Reordering`; its masks have the same check_masks result and path counts.

    Example:
        >>> r = reorder_masks([np.ones((2, 3)), np.ones((3, 2))], block=(2, 2))
        >>> r.perms[0].tolist(), r.tiles_after
        ([0, 1, 2], (2, 2))
    """
    arrays = _as_masks(masks)
    bo, bi = as_block(block)
    raw = _C.reorder_hidden(arrays, bo, bi, sweeps)
    perms = tuple(raw["perms"])
    return Reordering(
        perms=perms,
        masks=tuple(permute_masks(arrays, perms)),
        tiles_before=tuple(int(t) for t in raw["tiles_before"]),
        tiles_after=tuple(int(t) for t in raw["tiles_after"]),
        tiles_total=tuple(int(t) for t in raw["tiles_total"]),
        methods=tuple(raw["methods"]),
    )


def _check_perms(perms: Sequence[Any], widths: Sequence[int]) -> list[np.ndarray]:
    if len(perms) != len(widths):
        raise ValueError(f"perms must hold one permutation per hidden layer ({len(widths)}), got {len(perms)}")
    out = []
    for i, (p, w) in enumerate(zip(perms, widths)):
        p = np.asarray(p)
        if p.dtype.kind not in "iu" or p.shape != (w,) or not np.array_equal(np.sort(p), np.arange(w)):
            raise ValueError(f"perms[{i}] must be a permutation of range({w})")
        out.append(p.astype(np.int64))
    return out


def permute_masks(masks: Sequence[Any], perms: Sequence[Any]) -> list[np.ndarray]:
    r"""Applies hidden-unit permutations to masks in the reference orientation.

    Arguments:
        masks: L masks, fan_in x fan_out.
        perms: L - 1 permutations, new position -> original unit.

    Returns:
        The permuted masks.

    Example:
        >>> permute_masks([np.eye(2), np.array([[1, 0], [1, 1]])], [[1, 0]])[1].tolist()
        [[1, 1], [1, 0]]
    """
    arrays = _as_masks(masks)
    ps = _check_perms(perms, [m.shape[1] for m in arrays[:-1]])
    out = [m.copy() for m in arrays]
    for h, p in enumerate(ps):
        out[h] = out[h][:, p]
        out[h + 1] = out[h + 1][p, :]
    return [np.ascontiguousarray(m) for m in out]


def permute_layers(layers: Sequence[nn.Module], perms: Sequence[Any]) -> None:
    r"""Permutes the hidden units of a chain of MaskedLinear layers in place, function unchanged.

    The rows of layer h's weight, bias and mask move together with the columns of layer h+1's
    weight and mask. Create optimizers after this call: their state is not permuted.

    Arguments:
        layers: MaskedLinear layers applied in sequence (``FastStrNN.layers``).
        perms: one permutation per hidden layer, new position -> original unit.
    """
    ps = _check_perms(perms, [layer.out_features for layer in layers[:-1]])
    for h, p in enumerate(ps):  # each layer permutes its own storage and drops its derived state
        layers[h].permute_(out_perm=p)
        layers[h + 1].permute_(in_perm=p)


def reorder_model(model: nn.Module, block: tuple[int, int] = (64, 64), sweeps: int = 3) -> Reordering:
    r"""Reorders the hidden units of a FastStrNN in place for block-sparse kernels.

    Weights, biases and masks are permuted consistently, so the model computes the same function
    with inputs and outputs in the user's order; ``model.masks`` is updated too.

    Arguments:
        model: a module with ``.layers``, a sequence of MaskedLinear (e.g. FastStrNN).
        block: tile shape (block_out, block_in) of the kernels.
        sweeps: coordinate-descent passes.

    Returns:
        The :class:`Reordering` applied (tile densities before and after).

    Example:
        >>> from strnn_fast import FastStrNN
        >>> net = FastStrNN(8, (32, 32), 8, adjacency=np.tril(np.ones((8, 8)), -1))
        >>> r = reorder_model(net, block=(16, 16))
        >>> sum(r.tiles_after) <= sum(r.tiles_before)
        True
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (nn.ModuleList, Sequence)) or not all(hasattr(m, "permute_") for m in layers):
        raise TypeError(f"model must have .layers, a sequence of MaskedLinear; got {type(model).__name__}")
    result = reorder_masks([layer.keep_mask("cpu").numpy().T for layer in layers], block, sweeps)
    permute_layers(layers, result.perms)
    if hasattr(model, "masks") and not isinstance(getattr(type(model), "masks", None), property):
        model.masks = list(result.masks)  # a plain attribute; FastStrNN reads its masks from the layers
    return result
