r"""Block-CSR layouts of layer masks: the index lists the block-sparse kernels walk.

A layout is built once per mask and tile shape (in C++), validated, and kept in one container
with both index lists, as in stk: the forward pass walks the nonzero tiles of each output block,
the dX pass the same tiles grouped by input block, and the dW pass one program per tile.
Both walks are scheduled longest list first (``row_order``, ``t_row_order``), so the GPU's last
wave holds short rows instead of one long straggler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _C
from ._validate import as_binary_matrix, as_block


_INDEX_FIELDS = ("row_ptr", "col_idx", "tile_row", "t_row_ptr", "t_col_idx", "row_order", "t_row_order")


@dataclass(frozen=True, eq=False)
class BlockLayout:
    r"""Nonzero (block_out x block_in) tiles of an (out x in) mask, as int32 index tensors.

    Attributes:
        shape: (out, in) of the mask.
        block: (block_out, block_in), the tile shape.
        row_ptr, col_idx: tiles by output block; tile t lies in row block tile_row[t] and
            column block col_idx[t].
        tile_row: row block of each tile.
        t_row_ptr, t_col_idx: the transposed lists, output blocks by input block.
        row_order, t_row_order: output (input) blocks sorted by descending tile count, ties
            in index order: the launch order of the forward (dX) programs.

    Example:
        >>> lay = BlockLayout.from_mask(np.eye(4), block=(2, 2))
        >>> lay.nnz, lay.density
        (2, 0.5)
    """

    shape: tuple[int, int]
    block: tuple[int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    tile_row: torch.Tensor
    t_row_ptr: torch.Tensor
    t_col_idx: torch.Tensor
    row_order: torch.Tensor
    t_row_order: torch.Tensor

    @classmethod
    def from_mask(cls, mask: Any, block: tuple[int, int] = (64, 64)) -> BlockLayout:
        r"""Builds the layout of an (out x in) binary mask.

        Arguments:
            mask: numpy array, torch tensor or nested list of 0/1 values; may be all zero.
            block: tile shape (block_out, block_in), each side in [1, 65536].

        Returns:
            The layout, on the CPU.
        """
        m = as_binary_matrix(mask, "mask", allow_zero=True)
        block = as_block(block)
        raw = _C.block_layout(m, block[0], block[1])
        tensors = {k: torch.from_numpy(raw[k]) for k in ("row_ptr", "col_idx", "tile_row", "t_row_ptr", "t_col_idx")}
        for name, ptr in (("row_order", raw["row_ptr"]), ("t_row_order", raw["t_row_ptr"])):
            tensors[name] = torch.from_numpy(np.argsort(-np.diff(ptr), kind="stable").astype(np.int32))
        return cls(shape=tuple(m.shape), block=(int(block[0]), int(block[1])), **tensors)

    @property
    def grid(self) -> tuple[int, int]:
        """(row blocks, column blocks) of the tiling."""
        return self.row_ptr.numel() - 1, self.t_row_ptr.numel() - 1

    @property
    def nnz(self) -> int:
        """Number of nonzero tiles."""
        return self.col_idx.numel()

    @property
    def density(self) -> float:
        """Fraction of tiles that hold a nonzero."""
        rows, cols = self.grid
        return self.nnz / (rows * cols)

    @property
    def device(self) -> torch.device:
        return self.row_ptr.device

    def to(self, device: torch.device | str) -> BlockLayout:
        """The same layout with its index tensors on `device`."""
        move = {k: getattr(self, k).to(device) for k in _INDEX_FIELDS}
        return BlockLayout(shape=self.shape, block=self.block, **move)

    def tile_mask(self) -> np.ndarray:
        """Boolean (row blocks x column blocks) matrix of the nonzero tiles, from the forward lists."""
        tiles = np.zeros(self.grid, dtype=bool)
        tiles[self.tile_row.cpu().numpy(), self.col_idx.cpu().numpy()] = True
        return tiles

    def to_dense(self) -> np.ndarray:
        """Boolean (out x in) matrix covering every entry of every nonzero tile (cropped at the edges)."""
        bo, bi = self.block
        return np.kron(self.tile_mask(), np.ones((bo, bi), dtype=bool))[: self.shape[0], : self.shape[1]]
