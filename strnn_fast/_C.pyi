"""Type stub for the C++ core (numpy in, numpy out; the GIL is released while it computes)."""
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# --- factorizers (csrc/greedy.cpp, zuko.cpp, made.cpp) ---
def greedy_factorize(
    adjacency: npt.NDArray[Any], hidden_sizes: Sequence[int], refine: bool = False
) -> tuple[list[npt.NDArray[np.uint8]], dict[str, Any]]: ...
def zuko_factorize(adjacency: npt.NDArray[Any], hidden_sizes: Sequence[int]) -> list[npt.NDArray[np.uint8]]: ...
def made_factorize(adjacency: npt.NDArray[Any], hidden_sizes: Sequence[int]) -> list[npt.NDArray[np.uint8]]: ...

# --- paths (csrc/paths.cpp) ---
def check_masks(masks: Sequence[npt.NDArray[Any]], adjacency: npt.NDArray[Any]) -> bool: ...
def path_counts(masks: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.int64]: ...
def connections(masks: Sequence[npt.NDArray[Any]]) -> float: ...

# --- block layouts (csrc/block_layout.cpp) ---
def block_layout(mask: npt.NDArray[Any], block_out: int, block_in: int) -> dict[str, Any]:
    """row_ptr, col_idx, tile_row, t_row_ptr, t_col_idx (int32 arrays) and grid (row blocks, column blocks)."""

# --- hidden-unit reordering (csrc/reorder.cpp) ---
def reorder_hidden(masks: Sequence[npt.NDArray[Any]], block_out: int, block_in: int, sweeps: int = 3) -> dict[str, Any]:
    """perms (int64 arrays, new position -> old unit), tiles_before, tiles_after (lists of int), methods (list of str)."""
