"""Type stub for the C++ core (numpy or scipy CSR in, numpy out; the GIL is released while it computes).

Every binary-matrix argument (adjacency, masks, mask) is a 2-D numpy array of 0/1 values or a
scipy CSR matrix (``format == "csr"``) whose stored values are 0 or 1 (csrc/arrays.cpp).
"""
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import numpy.typing as npt

BinaryMatrix = Any  # numpy array or scipy.sparse CSR matrix/array of 0/1 values
# With sparse=True each mask is a CSR triple (indptr, indices, (rows, cols)) of ones; indptr and
# indices are int32, or int64 beyond 2**31 - 1 nonzeros.
CsrTriple = tuple[npt.NDArray[Union[np.int32, np.int64]], npt.NDArray[Union[np.int32, np.int64]], tuple[int, int]]
Mask = Union[npt.NDArray[np.uint8], CsrTriple]

# --- factorizers (csrc/greedy.cpp, zuko.cpp, made.cpp); max_bytes > 0 caps the output's bytes ---
def greedy_factorize(
    adjacency: BinaryMatrix, hidden_sizes: Sequence[int], refine: bool = False, sparse: bool = False, max_bytes: int = 0
) -> tuple[list[Mask], dict[str, Any]]: ...
def zuko_factorize(
    adjacency: BinaryMatrix, hidden_sizes: Sequence[int], sparse: bool = False, max_bytes: int = 0
) -> list[Mask]: ...
def made_factorize(
    adjacency: BinaryMatrix, hidden_sizes: Sequence[int], sparse: bool = False, max_bytes: int = 0
) -> list[Mask]: ...

# --- paths (csrc/paths.cpp) ---
def check_masks(masks: Sequence[BinaryMatrix], adjacency: BinaryMatrix) -> bool: ...
def path_counts(masks: Sequence[BinaryMatrix]) -> npt.NDArray[np.int64]: ...
def connections(masks: Sequence[BinaryMatrix]) -> float: ...

# --- block layouts (csrc/block_layout.cpp) ---
def block_layout(mask: BinaryMatrix, block_out: int, block_in: int) -> dict[str, Any]:
    """row_ptr, col_idx, tile_row, t_row_ptr, t_col_idx (int32 arrays) and grid (row blocks, column blocks)."""

# --- hidden-unit reordering (csrc/reorder.cpp) ---
def reorder_hidden(masks: Sequence[BinaryMatrix], block_out: int, block_in: int, sweeps: int = 3) -> dict[str, Any]:
    """perms (int64 arrays, new position -> old unit), tiles_before, tiles_after, tiles_total (lists of int),
    methods (list of str)."""

# --- rational-quadratic spline on the CPU (csrc/spline.cpp) ---
# h: (N, 3 bins - 1, d) parameters, parameter-major; x, z and every other array (N, d); one dtype,
# float32 or float64, all C-contiguous; outputs are written in place (nothing is converted).
Floats = npt.NDArray[Union[np.float32, np.float64]]
def rqs_forward(h: Floats, x: Floats, y: Floats, log_det: Floats, bins: int, bound: float, min_bin: float,
                log_max_slope: float, threads: int = 0) -> None: ...
def rqs_backward(h: Floats, x: Floats, grad_z: Floats, grad_log_det: Floats, grad_x: Floats, grad_h: Floats,
                 bins: int, bound: float, min_bin: float, log_max_slope: float, threads: int = 0) -> None: ...
def rqs_inverse(h: Floats, z: Floats, x: Floats, bins: int, bound: float, min_bin: float, log_max_slope: float,
                threads: int = 0) -> None: ...

# --- affine map on the CPU (csrc/affine.cpp; torch face: strnn_fast/flows/normalizers/affine.py) ---
# x, z, log_det and the gradients (N0, N1), h and its gradient (N0, N1, 2) holding (shift, raw log-scale);
# any strides, one dtype (float32 or float64); outputs written in place.
def affine_forward(x: Floats, h: Floats, z: Floats, log_det: Floats | None, bound: float, threads: int = 1,
                   log_det_sum: Floats | None = None) -> None:
    """z = t + x exp(s), log_det = s, s = bound tanh(u / bound)."""
def affine_backward(x: Floats, h: Floats, gz: Floats | None, gld: Floats | None, gx: Floats, gh: Floats, bound: float,
                    threads: int = 1) -> None:
    """The gradients of affine_forward (None gradients count as zero)."""
def affine_inverse(z: Floats, h: Floats, x: Floats, bound: float, threads: int = 1) -> None:
    """x = (z - t) exp(-s)."""

# --- masked (CSR) layers on the CPU (csrc/masked_linear.cpp; torch face: strnn_fast/csr_ops.py) ---
# One float dtype (float32 or float64) for the arrays, int64 indices, all C-contiguous; outputs
# are written in place; the same bits for any thread count.
Int64s = npt.NDArray[np.int64]
def csr_spmm(xt: Floats, values: Floats, crow: Int64s, col: Int64s, bias: Floats | None, relu: bool, yt: Floats,
             threads: int = 1, batch_major: bool = False) -> None:
    """yt (rows, B) = W xt (+ bias, relu) for W (rows x n_in) in CSR; xt is (n_in, B), or x (B, n_in) when
    batch_major."""
def csr_sddmm(gt: Floats, xt: Floats, crow: Int64s, col: Int64s, dv: Floats, threads: int = 1,
              g_batch_major: bool = False, x_batch_major: bool = False) -> None:
    """dv[k] = gt[row_k] . xt[col_k] on the kept entries k of the CSR pattern; gt (rows, B) and xt (n_in, B),
    or with the flags (B, rows) and (B, n_in)."""
def feature_major_ld(batch: int, itemsize: int) -> int:
    """The column stride of the column-major (batch, n) arrays the kernels return (batch, or batch plus a
    cache line where batch * itemsize is a multiple of 1 KiB)."""
class CsrPattern:
    """A CSR pattern (crow, col) of an (n_rows x n_cols) matrix, checked once and copied (with its transpose
    for the backward)."""
    def __init__(self, crow: Int64s, col: Int64s, n_cols: int, t_crow: Int64s | None = None,
                 t_col: Int64s | None = None, t_perm: Int64s | None = None) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    def linear(self, x: Floats, values: Floats, bias: Floats | None, relu: bool, threads: int = 1,
               flat: Int64s | None = None, row_major: bool = False) -> Floats:
        """y (B, rows) = x W^T (+ bias, relu), x (B, n_in) row- or column-major, y a new column-major array
        (C-contiguous with row_major); with flat (the kept weights' row * n_in + col) values is the dense
        weight flattened."""
    def backward(self, g: Floats, x: Floats, values: Floats, y: Floats | None, need_dx: bool, need_dv: bool,
                 need_db: bool, threads: int = 1,
                 flat: Int64s | None = None) -> tuple[Floats | None, Floats | None, Floats | None]:
        """(dx, dv, db) of y = act(x W^T + b) (act relu when y is given) in one call; dx column-major; with
        flat, values is the dense weight and dv its dense (rows, n_in) gradient."""

# --- CSV text (csrc/csv_format.cpp; used by strnn_fast.cli._common.stream_csv) ---
def format_csv_rows(values: npt.NDArray[np.float64]) -> bytes:
    """CSV lines of a finite 2-D float64 array, each value as repr() writes it; ValueError on NaN/inf."""
