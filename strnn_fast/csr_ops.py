r"""The C++ CSR kernels of a masked layer as torch ops: ``backend="cpu"``.

Two kernels of ``csrc/masked_linear.cpp`` do all the work, on activations stored feature-major
(``xt`` is (in, B): the batch contiguous, as the torch sparse path already hands them on):

* ``csr_spmm(xt, values, pattern)`` = W xt, W (out x in) given by its CSR-order ``values``;
* ``csr_sddmm(gt, xt, pattern)`` = the kept entries of gt xt^T, i.e. the weight gradient.

They are registered as torch custom ops (``torch.ops.strnn_fast.csr_spmm`` / ``csr_sddmm``)
with fake implementations, so ``torch.compile(fullgraph=True)`` traces through them, and with
autograd formulas made of the same two ops (dX is ``csr_spmm`` on the transposed pattern, dW is
``csr_sddmm``, and their gradients are again the two products), so derivatives of any order are
exact: gradient penalties and exact divergences work on this backend.

:func:`csr_linear` is the layer: ``act(x @ W^T + b)``. Where no gradient is needed it calls the
kernel directly, with the bias and a relu fused (the per-call cost of a small layer is a few
microseconds); otherwise it goes through the ops and torch's activation.

Example:
    >>> import torch
    >>> from strnn_fast.sparse_ops import MaskStructure
    >>> s = MaskStructure.from_dense(torch.tensor([[1, 0, 1], [0, 1, 0]]))
    >>> csr_linear(torch.ones(2, 3), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -9.0]), s, "relu")
    tensor([[3.5000, 0.0000],
            [3.5000, 0.0000]])
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import _C
from ._function import apply
from .activations import ACTIVATIONS
from .sparse_ops import MaskStructure

__all__ = ["csr_linear", "csr_runner", "csr_spmm", "csr_sddmm", "transposed", "DTYPES", "FUSED"]

DTYPES = (torch.float32, torch.float64)
# Activations the kernel applies itself (the others run in torch after it).
FUSED = ("identity", "relu")


def _np(t: Tensor):
    return t.detach().contiguous().numpy()


@torch.library.custom_op("strnn_fast::csr_spmm", mutates_args=())
def csr_spmm(xt: Tensor, values: Tensor, crow: Tensor, col: Tensor, t_crow: Tensor, t_col: Tensor, t_perm: Tensor,
             t_inv: Tensor) -> Tensor:
    r"""``W @ xt`` for W (len(crow) - 1, xt.shape[0]) with CSR ``values``; the transposed pattern
    (t_crow, t_col, t_perm: values.T = values[t_perm], t_inv its inverse) serves the gradient."""
    yt = xt.new_empty(crow.shape[0] - 1, xt.shape[1])
    _C.csr_spmm(_np(xt), _np(values), _np(crow), _np(col), None, False, yt.numpy(), torch.get_num_threads(), False)
    return yt


@csr_spmm.register_fake
def _(xt, values, crow, col, t_crow, t_col, t_perm, t_inv):
    return xt.new_empty(crow.shape[0] - 1, xt.shape[1])


@torch.library.custom_op("strnn_fast::csr_sddmm", mutates_args=())
def csr_sddmm(gt: Tensor, xt: Tensor, crow: Tensor, col: Tensor, t_crow: Tensor, t_col: Tensor, t_perm: Tensor,
              t_inv: Tensor) -> Tensor:
    r"""``(gt @ xt.T)[row_k, col_k]`` for every kept entry k, in CSR order."""
    dv = xt.new_empty(col.shape[0])
    _C.csr_sddmm(_np(gt), _np(xt), _np(crow), _np(col), dv.numpy(), torch.get_num_threads())
    return dv


@csr_sddmm.register_fake
def _(gt, xt, crow, col, t_crow, t_col, t_perm, t_inv):
    return xt.new_empty(col.shape[0])


def _save_all(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _spmm_backward(ctx, g: Tensor):
    xt, values, crow, col, t_crow, t_col, t_perm, t_inv = ctx.saved_tensors
    gx = gv = None
    if ctx.needs_input_grad[0]:  # W^T g: the product on the transposed pattern (whose transpose is t_inv)
        gx = csr_spmm(g, values[t_perm], t_crow, t_col, crow, col, t_inv, t_perm)
    if ctx.needs_input_grad[1]:
        gv = csr_sddmm(g, xt, crow, col, t_crow, t_col, t_perm, t_inv)
    return gx, gv, None, None, None, None, None, None


def _sddmm_backward(ctx, u: Tensor):
    gt, xt, crow, col, t_crow, t_col, t_perm, t_inv = ctx.saved_tensors
    dg = dx = None
    if ctx.needs_input_grad[0]:  # d/dgt[r] = sum over row r of u_k xt[col_k]
        dg = csr_spmm(xt, u, crow, col, t_crow, t_col, t_perm, t_inv)
    if ctx.needs_input_grad[1]:  # d/dxt[c] = sum over column c of u_k gt[row_k]
        dx = csr_spmm(gt, u[t_perm], t_crow, t_col, crow, col, t_inv, t_perm)
    return dg, dx, None, None, None, None, None, None


csr_spmm.register_autograd(_spmm_backward, setup_context=_save_all)
csr_sddmm.register_autograd(_sddmm_backward, setup_context=_save_all)


# The eager path: the same products as autograd.Functions that call the kernels directly (a custom
# op's dispatch costs tens of microseconds a call, which small layers feel); their backward is
# made of the same Functions, so derivatives of any order stay exact. torch.compile uses the ops.

def _either_major(x2: Tensor) -> Tensor:
    """x2 (B, n) detached, copied only when it is neither row- nor column-major (rows, or columns,
    padded as the kernels pad their outputs are read in place; the rule of the C++ either_major)."""
    if x2.requires_grad:
        x2 = x2.detach()
    (b, n), (s0, s1) = x2.shape, x2.stride()
    if ((n <= 1 or s1 == 1) and (b <= 1 or s0 >= n)) or ((b <= 1 or s0 == 1) and (n <= 1 or s1 >= b)):
        return x2
    return x2.contiguous()


class _SpMM(torch.autograd.Function):
    """y = x2 W^T (+ b), then relu if asked, for x2 (B, in); y (B, out) is column-major, or row-major
    with row_major."""

    @staticmethod
    def forward(ctx, x2, values, bias, structure, relu=False, row_major=False):
        a, xn, vn = _index_arrays(structure), _either_major(x2).numpy(), _view(values)
        yn = a.pattern.linear(xn, vn, None if bias is None else _view(bias), relu, torch.get_num_threads(), None,
                              row_major)
        y = torch.from_numpy(yn)
        ctx.save_for_backward(x2, values, y if relu else None)
        ctx.structure = structure
        ctx.has_bias = bias is not None
        # The first-order backward's kernel arguments, kept from here (making them again cost ~8 us
        # of a small layer's ~30 us backward); the saved tensors' version check still guards them.
        ctx.arrays = (a, xn, vn, yn if relu else None)
        return y

    @staticmethod
    def backward(ctx, g):
        x2, values, y = ctx.saved_tensors  # raises if any was modified in place since the forward
        s = ctx.structure
        need_x, need_v, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if not torch.is_grad_enabled():
            # First order: the three gradients (and relu's mask) in one kernel call; a Function's
            # apply, the numpy views and the separate calls cost ~30 us, a small layer's whole backward.
            a, xn, vn, yn = ctx.arrays
            try:  # the kernel reads g row- or column-major in place and refuses other layouts
                gx, gv, gb = a.pattern.backward(g.numpy(), xn, vn, yn, need_x, need_v, need_b, torch.get_num_threads())
            except ValueError:
                gx, gv, gb = a.pattern.backward(g.contiguous().numpy(), xn, vn, yn, need_x, need_v, need_b,
                                                torch.get_num_threads())
            return (None if gx is None else torch.from_numpy(gx), None if gv is None else torch.from_numpy(gv),
                    None if gb is None else torch.from_numpy(gb), None, None, None)
        # create_graph: the same gradients recorded as Functions, so that they differentiate again
        # (relu's mask is a constant of the graph: its derivative is zero almost everywhere).
        if y is not None:  # as torch's relu backward: zero where y <= 0 (NaN passes)
            g = g * (y <= 0).logical_not().to(g.dtype)
        gx = _SpMM.apply(g, values[s.t_perm], None, transposed(s)) if need_x else None
        gv = _SDDMM.apply(g, x2, s) if need_v else None
        gb = g.sum(0) if need_b else None
        return gx, gv, gb, None, None, None


def _feature_or_batch_major(x2: Tensor) -> tuple[Tensor, bool]:
    """x2 (B, n) as a C-contiguous array for csr_sddmm: (x2^T, False) when x2 is column-major, else
    (x2, True), copied only when x2 is neither."""
    x2 = x2.detach()
    if x2.is_contiguous():
        return x2, True
    return (x2.T, False) if x2.T.is_contiguous() else (x2.contiguous(), True)


def _sddmm_now(g: Tensor, x2: Tensor, structure: MaskStructure) -> Tensor:
    """The kept entries of g^T x2 (CSR order) for g (B, out) and x2 (B, in), either layout."""
    dv = torch.empty(structure.nnz, dtype=x2.dtype)
    a = _index_arrays(structure)
    (ga, g_bm), (xa, x_bm) = _feature_or_batch_major(g), _feature_or_batch_major(x2)
    _C.csr_sddmm(ga.numpy(), xa.numpy(), a.crow, a.col, dv.numpy(), torch.get_num_threads(), g_bm, x_bm)
    return dv


class _SDDMM(torch.autograd.Function):
    """dv_k = sum_b g[b, row_k] x2[b, col_k]: the kept entries of g^T x2."""

    @staticmethod
    def forward(ctx, g, x2, structure):
        ctx.save_for_backward(g, x2)
        ctx.structure = structure
        return _sddmm_now(g, x2, structure)

    @staticmethod
    def backward(ctx, u):
        g, x2 = ctx.saved_tensors
        s = ctx.structure
        dg = dx = None
        if ctx.needs_input_grad[0]:  # d/dg[b, r] = sum over row r of u_k x2[b, col_k]
            dg = _SpMM.apply(x2, u, None, s)
        if ctx.needs_input_grad[1]:  # d/dx2[b, c] = sum over column c of u_k g[b, row_k]
            dx = _SpMM.apply(g, u[s.t_perm], None, transposed(s))
        return dg, dx, None


_TRANSPOSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def transposed(structure: MaskStructure) -> MaskStructure:
    """The (in x out) structure of the transposed mask (values in its order: ``values[structure.t_perm]``), cached."""
    hit = _TRANSPOSED.get(structure)
    if hit is None:
        s = structure
        rows_t = torch.repeat_interleave(torch.arange(s.shape[1]), s.t_crow.diff())
        hit = MaskStructure((s.shape[1], s.shape[0]), s.t_crow, s.t_col, rows_t * s.shape[0] + s.t_col, s.crow, s.col,
                            s.t_inv, s.t_perm)
        _TRANSPOSED[structure] = hit
    return hit


def _check(x: Tensor, values: Tensor, bias: Tensor | None, structure: MaskStructure) -> None:
    """Raises a named error unless the arguments fit the kernels; the common case costs a few attribute reads."""
    try:
        if (x.is_cpu and values.is_cpu and x.dtype in DTYPES and values.dtype == x.dtype and x.dim() > 0
                and x.shape[-1] == structure.shape[1] and values.shape == (structure.nnz,)
                and (bias is None or (bias.is_cpu and bias.dtype == x.dtype and bias.shape == (structure.shape[0],)))
                and structure.crow.is_cpu):
            return
    except AttributeError:
        pass
    for name, t in (("x", x), ("values", values), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu" or t.dtype not in DTYPES:
            raise TypeError(f"backend 'cpu' runs float32/float64 tensors on the CPU; {name} is {t.dtype} on {t.device} "
                            "(use backend='dense', 'sparse' or 'triton' there)")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {t.dtype}")
    out, inn = structure.shape
    if x.dim() == 0 or x.shape[-1] != inn:
        raise ValueError(f"x must have shape (..., {inn}), got {tuple(x.shape)}")
    if values.shape != (structure.nnz,):
        raise ValueError(f"values must have shape ({structure.nnz},), got {tuple(values.shape)}")
    if bias is not None and bias.shape != (out,):
        raise ValueError(f"bias must have shape ({out},), got {tuple(bias.shape)}")
    raise ValueError("structure must be on the CPU")


# numpy views for the direct calls, made once: a structure's index arrays (immutable), and a
# weight tensor's storage (a view follows in-place updates; a new storage makes a new view).
# Both are keyed by id() with a weak reference to check the hit (a WeakKeyDictionary lookup made a
# weak reference per call: 0.19 us of a ~4 us batch-1 layer).
_INDEX: dict[int, tuple] = {}  # id(structure) -> (weakref, _Arrays)
_VIEWS: dict[int, tuple] = {}  # id(tensor) -> (weakref, data_ptr, view); tensors compare elementwise


class _Arrays(NamedTuple):
    """A structure's index tensors as numpy views, for the direct kernel calls."""

    crow: np.ndarray
    col: np.ndarray
    pattern: Any  # _C.CsrPattern: the pattern and its transpose checked once, for the direct calls


def _index_arrays(structure: MaskStructure) -> _Arrays:
    key = id(structure)
    hit = _INDEX.get(key)
    if hit is not None and hit[0]() is structure:
        return hit[1]
    crow, col = structure.crow.numpy(), structure.col.numpy()
    arrays = _Arrays(crow, col, _C.CsrPattern(crow, col, structure.shape[1], structure.t_crow.numpy(),
                                              structure.t_col.numpy(), structure.t_perm.numpy()))
    _INDEX[key] = (weakref.ref(structure, lambda _, k=key: _INDEX.pop(k, None)), arrays)
    return arrays


def _view(t: Tensor) -> np.ndarray:
    """t's values as a flat numpy array: a view of its storage, made once (a dense-stored layer's
    (out, in) weight as the fused chain reads it; values and biases are flat already)."""
    key = id(t)
    hit = _VIEWS.get(key)
    if hit is not None and hit[0]() is t and hit[1] == t.data_ptr():
        return hit[2]
    if not t.is_contiguous():
        return _np(t).reshape(-1)
    view = t.detach().numpy().reshape(-1)
    _VIEWS[key] = (weakref.ref(t, lambda _, k=key: _VIEWS.pop(k, None)), t.data_ptr(), view)
    return view


def forget_views(tensors) -> None:
    """Drops the cached numpy views of `tensors` (a layer's parameters after ``.to()``: a view would
    otherwise keep their old storage alive, a CPU copy of a model moved to the GPU)."""
    for t in tensors:
        _VIEWS.pop(id(t), None)


def csr_linear(x: Tensor, values: Tensor, bias: Tensor | None, structure: MaskStructure,
               activation: str = "identity", row_major: bool = False) -> Tensor:
    r"""``act(x @ W^T + b)`` with W given by its CSR-order `values` on `structure`, on the C++ kernels.

    Arguments:
        x: (..., in) float32/float64 CPU tensor, any strides (a column-major 2-D x, as the
            previous masked layer returns it, is read without a copy).
        values: (nnz,) weights in the structure's CSR order.
        bias: (out,) or None.
        structure: the mask's :class:`~strnn_fast.sparse_ops.MaskStructure` (on the CPU).
        activation: a name of :data:`strnn_fast.activations.ACTIVATIONS`.
        row_major: return a C-contiguous result (a network's last layer: the kernel writes the
            layout its caller gets, instead of a transposing copy after it).

    Returns:
        (..., out); 2-D results are column-major, each column padded by a cache line where its
        length would be a multiple of 1 KiB (``_C.feature_major_ld``; the next masked layer reads
        them as they are), unless `row_major`.

    Raises:
        TypeError: a tensor on another device or of another dtype.
        ValueError: shapes that do not match the structure.
    """
    out, inn = structure.shape
    if type(x) is Tensor and not (torch.is_grad_enabled() and (x.requires_grad or values.requires_grad or (
            bias is not None and bias.requires_grad))) and not torch.compiler.is_compiling():
        # Without a graph to record: straight to the kernel, which checks dtypes, shapes and the
        # layout itself (at batch 1 each Python step here costs ~0.1-0.4 us of a ~4 us call). A
        # refusal is re-diagnosed by _check, for the error that names the argument; a layout the
        # kernel does not read (strided x) goes on to the general path, which copies it.
        x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1]) if x.dim() else x
        try:
            y = torch.from_numpy(_index_arrays(structure).pattern.linear(
                (x2.detach() if x2.requires_grad else x2).numpy(), _view(values),
                None if bias is None else _view(bias), activation == "relu", torch.get_num_threads(), None, row_major))
        except (TypeError, ValueError, RuntimeError, AttributeError):
            pass
        else:
            y = y if activation in FUSED else ACTIVATIONS[activation](y)
            return y if x2 is x else y.reshape(*x.shape[:-1], out)
    _check(x, values, bias, structure)
    lead = x.shape[:-1]
    x2 = x if x.dim() == 2 else x.reshape(-1, inn)
    if torch.compiler.is_compiling():
        s = structure
        y = csr_spmm(x2.T.contiguous(), values, s.crow, s.col, s.t_crow, s.t_col, s.t_perm, s.t_inv).T
        if bias is not None:
            y = y + bias
        y = ACTIVATIONS[activation](y)
        y = y.contiguous() if row_major else y
    else:
        y = apply(_SpMM, x2, values, bias, structure, activation == "relu", row_major)
        y = y if activation in FUSED else ACTIVATIONS[activation](y)
    return y if len(lead) == 1 else y.reshape(*lead, out)


def csr_runner(values: Tensor, bias: Tensor | None, structure: MaskStructure,
               activation: str = "identity", row_major: bool = False) -> Callable[[Tensor], Tensor]:
    r"""``x -> csr_linear(x, values, bias, structure, activation, row_major)`` without gradients, its arrays
    bound once.

    For frozen inference (:func:`strnn_fast.backends.inference_runner`): the call is the kernel's
    and little else. Any input it cannot take as it is (a 1-D or 3-D x, a grad-requiring one, a
    refused one) goes through :func:`csr_linear`, which also names a bad argument.

    Example:
        >>> s = MaskStructure.from_dense(torch.tensor([[1, 0, 1], [0, 1, 0]]))
        >>> run = csr_runner(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -9.0]), s, "relu")
        >>> run(torch.ones(2, 3))
        tensor([[3.5000, 0.0000],
                [3.5000, 0.0000]])
    """
    if values.dtype not in DTYPES or not values.is_cpu or not values.is_contiguous():
        return lambda x: csr_linear(x, values, bias, structure, activation, row_major)
    pattern = _index_arrays(structure).pattern
    v, b = values.numpy(), None if bias is None else bias.contiguous().numpy()
    relu, inn = activation == "relu", structure.shape[1]
    act = None if activation in FUSED else ACTIVATIONS[activation]

    def run(x: Tensor) -> Tensor:
        if (type(x) is not Tensor or x.dim() != 2 or x.shape[1] != inn or x.requires_grad or x.dtype != values.dtype
                or not x.is_cpu):
            return csr_linear(x, values, bias, structure, activation, row_major)
        y = torch.from_numpy(pattern.linear(_either_major(x).numpy(), v, b, relu, torch.get_num_threads(), None,
                                            row_major))
        return y if act is None else act(y)
    return run
