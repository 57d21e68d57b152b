r"""Torch sparse kernels of a masked layer: the mask's CSR structure and the ops that train on it.

A layer's weight lives on the nonzeros of its mask. :class:`MaskStructure` holds that pattern
once, as CSR index tensors (row pointers, columns, the flat position of each nonzero) plus the
transposed pattern and the permutation between the two orders. :func:`sparse_linear` runs
``y = x @ W^T + b`` with W given by its values in CSR order: the forward and the input gradient
are CSR SpMMs (``torch.addmm`` with a CSR operand), the weight gradient an SDDMM
(``torch.sparse.sampled_addmm``) on the mask's pattern, so every pass costs O(nnz * batch) and
no (out x in) array is formed. The dense path is in :mod:`strnn_fast.dense_ops`.

Example:
    >>> import torch
    >>> s = MaskStructure.from_dense(torch.tensor([[1, 0, 1], [0, 1, 0]]))
    >>> s.nnz, s.flat.tolist()
    (3, [0, 2, 4])
    >>> values = torch.tensor([1.0, 2.0, 3.0])
    >>> sparse_linear(torch.ones(1, 3), values, None, s).tolist()
    [[3.0, 3.0]]
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

__all__ = ["MaskStructure", "sparse_linear", "scatter_dense"]


@dataclass(frozen=True, eq=False)
class MaskStructure:
    r"""CSR pattern of an (out x in) binary mask, with its transpose.

    Attributes:
        shape: (out, in).
        crow, col: CSR row pointers (out + 1) and column indices (nnz), int64.
        flat: row * in + col of each nonzero, in CSR order (ascending).
        t_crow, t_col: CSR of the transposed (in x out) pattern.
        t_perm: CSR-order index of each nonzero of the transpose (values.T = values[t_perm]).
        t_inv: the inverse permutation: the transpose's position of each nonzero (values = values.T[t_inv]).
    """

    shape: tuple[int, int]
    crow: torch.Tensor
    col: torch.Tensor
    flat: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_perm: torch.Tensor
    t_inv: torch.Tensor

    @classmethod
    def from_csr(cls, shape: tuple[int, int], crow: Any, col: Any) -> MaskStructure:
        """Builds the structure from CSR row pointers and (per row sorted) column indices."""
        out, inn = int(shape[0]), int(shape[1])
        crow = torch.as_tensor(crow, dtype=torch.int64).cpu().contiguous()
        col = torch.as_tensor(col, dtype=torch.int64).cpu().contiguous()
        if crow.shape != (out + 1,) or int(crow[0]) != 0 or int(crow[-1]) != col.numel() or bool((crow.diff() < 0).any()):
            raise ValueError(f"crow_indices must be {out + 1} non-decreasing row pointers from 0 to nnz={col.numel()}")
        if col.numel() and (int(col.min()) < 0 or int(col.max()) >= inn):
            raise ValueError(f"col_indices must lie in [0, {inn})")
        rows = torch.repeat_interleave(torch.arange(out), crow.diff())
        flat = rows * inn + col
        if flat.numel() > 1 and bool((flat.diff() <= 0).any()):
            raise ValueError("col_indices must be strictly increasing within each row (no duplicates)")
        # The transpose: sort the nonzeros by (col, row).
        t_perm = torch.argsort(col * out + rows)
        t_crow = torch.zeros(inn + 1, dtype=torch.int64)
        t_crow[1:] = torch.cumsum(torch.bincount(col, minlength=inn), 0)
        t_inv = torch.empty_like(t_perm)
        t_inv[t_perm] = torch.arange(t_perm.numel())
        return cls((out, inn), crow, col, flat, t_crow, rows[t_perm], t_perm, t_inv)

    @classmethod
    def from_mask(cls, mask: Any, shape: tuple[int, int], name: str = "mask") -> MaskStructure:
        r"""The structure of an (out x in) mask given in any form, validated.

        Arguments:
            mask: dense array/tensor/nested list of 0/1, or a scipy.sparse matrix/array (kept sparse).
            shape: the expected (out, in).
            name: the argument's name in error messages.

        Example:
            >>> MaskStructure.from_mask([[1, 0], [1, 1]], (2, 2)).nnz
            3
        """
        from ._validate import as_binary_matrix, is_binary_array, is_scipy_sparse

        if is_binary_array(mask):  # a factorizer's output: one pass suffices
            if mask.shape != tuple(shape):
                raise ValueError(f"{name} must have shape {tuple(shape)}, got {mask.shape}")
            return cls.from_dense(mask)
        if is_scipy_sparse(mask):
            if tuple(mask.shape) != tuple(shape):
                raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
            try:
                return cls.from_scipy(mask)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        m = as_binary_matrix(mask, name, allow_zero=True)
        if m.shape != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {m.shape}")
        return cls.from_dense(m)

    @classmethod
    def from_dense(cls, mask: Any) -> MaskStructure:
        """Builds the structure of a dense (out x in) 0/1 array or tensor."""
        m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
        if m.ndim != 2:
            raise ValueError(f"mask must be 2-D (out x in), got shape {tuple(m.shape)}")
        crow = np.zeros(m.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.count_nonzero(m, axis=1), out=crow[1:])
        col = np.nonzero(m)[1].astype(np.int64, copy=False)
        return cls.from_csr(tuple(m.shape), torch.from_numpy(crow), torch.from_numpy(col))

    @classmethod
    def from_scipy(cls, mask: Any) -> MaskStructure:
        """Builds the structure of a scipy.sparse (out x in) 0/1 matrix without densifying it."""
        csr = mask.tocsr(copy=True)
        csr.eliminate_zeros()
        csr.sum_duplicates()
        csr.sort_indices()
        if csr.nnz and not np.all(csr.data == 1):
            raise ValueError("mask must be binary (every stored entry 0 or 1)")
        return cls.from_csr(csr.shape, csr.indptr.astype(np.int64), csr.indices.astype(np.int64))

    @property
    def nnz(self) -> int:
        """Number of kept weights."""
        return self.col.numel()

    @property
    def density(self) -> float:
        """Fraction of kept weights."""
        return self.nnz / max(self.shape[0] * self.shape[1], 1)

    @property
    def device(self) -> torch.device:
        return self.crow.device

    def to(self, device: torch.device | str) -> MaskStructure:
        """The same structure with its index tensors on `device`."""
        names = ("crow", "col", "flat", "t_crow", "t_col", "t_perm", "t_inv")
        return MaskStructure(self.shape, **{k: getattr(self, k).to(device) for k in names})

    def dense(self, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        """The (out x in) mask as a dense tensor (materializes out * in entries)."""
        out = torch.zeros(self.shape[0] * self.shape[1], dtype=dtype, device=self.device)
        out[self.flat] = 1
        return out.view(self.shape)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """The (out x in) sparse CSR tensor with `values` in CSR order."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
            return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        """The transposed (in x out) CSR tensor of the same weights (`values` in CSR order)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
            return torch.sparse_csr_tensor(self.t_crow, self.t_col, values[self.t_perm], self.shape[::-1],
                                           check_invariants=False)


def scatter_dense(values: torch.Tensor, structure: MaskStructure) -> torch.Tensor:
    """The dense (out x in) weight holding `values` on the pattern (differentiable in `values`)."""
    flat = values.new_zeros(structure.shape[0] * structure.shape[1])
    return flat.index_put((structure.flat,), values).view(structure.shape)


def _spmm_t(a_csr: torch.Tensor, x2d: torch.Tensor) -> torch.Tensor:
    """(a_csr @ x2d^T)^T: CSR SpMM with the batch on the columns, as torch wants it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse.mm(a_csr, x2d.T).T


class _SparseLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, values, bias, crow, col, t_crow, t_col, t_perm, shape):
        s = MaskStructure(shape, crow, col, crow, t_crow, t_col, t_perm, t_perm)  # flat and t_inv unused here
        y = _spmm_t(s.csr(values), x2d)
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x2d, values, crow, col, t_crow, t_col, t_perm)
        ctx.shape = shape
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x2d, values, crow, col, t_crow, t_col, t_perm = ctx.saved_tensors
        s = MaskStructure(ctx.shape, crow, col, crow, t_crow, t_col, t_perm, t_perm)
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gx = _spmm_t(s.csr_t(values), g)  # g @ W = (W^T @ g^T)^T
        if ctx.needs_input_grad[1]:
            # SDDMM: (g^T @ x) sampled on the mask's pattern; beta=0 ignores the input's values.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
                gv = torch.sparse.sampled_addmm(s.csr(torch.zeros_like(values)), g.T, x2d, beta=0.0).values()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gv, gb, None, None, None, None, None, None


def sparse_linear(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, structure: MaskStructure) -> torch.Tensor:
    r"""``x @ W^T + b`` with W given by its CSR-order `values` on `structure`, trainable.

    Forward and input gradient are CSR SpMMs, the values' gradient an SDDMM on the pattern.
    First derivatives only (a second backward raises).

    Arguments:
        x: (..., in) input.
        values: (nnz,) weights in the structure's CSR order.
        bias: (out,) or None.
        structure: the mask's :class:`MaskStructure`, on x's device.
    """
    lead = x.shape[:-1]
    x2d = x.reshape(-1, structure.shape[1])
    s = structure
    y = _SparseLinear.apply(x2d, values, bias, s.crow, s.col, s.t_crow, s.t_col, s.t_perm, s.shape)
    return y.reshape(*lead, s.shape[0])
