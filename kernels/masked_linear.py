r"""Block-sparse masked linear layer: y = act(x @ (W ⊙ M)^T + b), touching only nonzero tiles.

One file per op (Liger-Kernel style): the Triton kernels, their launchers, the torch.library
custom ops (with fake implementations, so ``torch.compile`` traces through without graph
breaks), the ``torch.autograd.Function`` and the functional alias :func:`masked_linear`.

The tile shape of the kernels is the tile shape of the :class:`~strnn_fast.layout.BlockLayout`:
BLOCK_N = block_out, BLOCK_K = block_in. The forward pass walks the nonzero tiles of each output
block, dX the same tiles grouped by input block, and dW runs one program per nonzero tile and
masks inside it. Accumulation is in fp32; fp32 inputs use TF32 when
``torch.backends.cuda.matmul.allow_tf32`` is set (or ``allow_tf32=True``).

On CUDA the launch parameters are autotuned; on the CPU the kernels run in the Triton
interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before this module is
imported, and supports fp32 and fp16 only.
"""
import functools
from typing import Optional

import torch
import triton
import triton.language as tl

# Activation codes shared by the kernels and the launchers.
ACTIVATION_CODES = {"identity": 0, "relu": 1, "tanh": 2, "softplus": 3, "elu": 4, "gelu": 5, "silu": 6}
# Activations whose derivative needs the pre-activation; the others get it from the output.
_NEEDS_Z = (5, 6)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Rows per program in the interpreter: tl.dot needs >= 16, and the interpreter is slow.
_INTERP_BLOCK_M = 16


def is_interpreted() -> bool:
    """True when the kernels of this module were built for the Triton interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_masked_linear_fwd_kernel, InterpretedFunction)


@triton.jit
def _act_fwd(z, ACT: tl.constexpr):
    if ACT == 1:
        z = tl.maximum(z, 0.0)
    elif ACT == 2:
        z = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)
    elif ACT == 3:  # torch's softplus: linear above 20
        z = tl.where(z > 20.0, z, tl.log(1.0 + tl.exp(tl.minimum(z, 20.0))))
    elif ACT == 4:
        z = tl.where(z > 0.0, z, tl.exp(tl.minimum(z, 0.0)) - 1.0)
    elif ACT == 5:  # exact (erf) GELU, as F.gelu
        z = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACT == 6:
        z = z / (1.0 + tl.exp(-z))
    return z


@triton.jit
def _act_bwd(dy, a, ACT: tl.constexpr):
    # `a` is the output y for ACT <= 4 and the pre-activation z for gelu/silu.
    if ACT == 1:
        dy = tl.where(a > 0.0, dy, 0.0)
    elif ACT == 2:
        dy = dy * (1.0 - a * a)
    elif ACT == 3:  # sigmoid(z) = 1 - exp(-softplus(z))
        dy = dy * (1.0 - tl.exp(-a))
    elif ACT == 4:
        dy = tl.where(a > 0.0, dy, dy * (a + 1.0))
    elif ACT == 5:
        cdf = 0.5 * (1.0 + tl.math.erf(a * 0.7071067811865476))
        pdf = tl.exp(-0.5 * a * a) * 0.3989422804014327
        dy = dy * (cdf + a * pdf)
    elif ACT == 6:
        s = 1.0 / (1.0 + tl.exp(-a))
        dy = dy * (s * (1.0 + a * (1.0 - s)))
    return dy


@triton.jit
def _masked_linear_fwd_kernel(
    x_ptr, w_ptr, m_ptr, b_ptr, y_ptr, z_ptr, row_ptr, col_idx,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_mn, stride_mk, stride_ym, stride_yn,
    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_Z: tl.constexpr, ACT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    in_m = offs_m < M
    in_n = offs_n < N
    # 64-bit offsets: batch x width may pass 2**31 elements.
    xm = offs_m.to(tl.int64)[:, None] * stride_xm
    wn = offs_n.to(tl.int64)[None, :] * stride_wn
    start = tl.load(row_ptr + pid_n)
    end = tl.load(row_ptr + pid_n + 1)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(start, end):
        offs_k = tl.load(col_idx + t) * BLOCK_K + rk
        in_k = offs_k < K
        x = tl.load(x_ptr + xm + offs_k[None, :] * stride_xk, mask=in_m[:, None] & in_k[None, :], other=0.0)
        w_mask = in_k[:, None] & in_n[None, :]
        w = tl.load(w_ptr + offs_k[:, None] * stride_wk + wn, mask=w_mask, other=0.0)
        if HAS_MASK:
            keep = tl.load(m_ptr + offs_k[:, None] * stride_mk + offs_n[None, :] * stride_mn, mask=w_mask, other=0)
            w = tl.where(keep != 0, w, 0.0)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=in_n, other=0.0).to(tl.float32)[None, :]
    out_mask = in_m[:, None] & in_n[None, :]
    y_off = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    if SAVE_Z:
        tl.store(z_ptr + y_off, acc.to(z_ptr.dtype.element_ty), mask=out_mask)
    tl.store(y_ptr + y_off, _act_fwd(acc, ACT).to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _masked_linear_bwd_act_kernel(dy_ptr, a_ptr, dz_ptr, numel, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < numel
    dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    tl.store(dz_ptr + offs, _act_bwd(dy, a, ACT).to(dz_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _masked_linear_bwd_dx_kernel(
    dz_ptr, w_ptr, m_ptr, dx_ptr, t_row_ptr, t_col_idx,
    M, N, K,
    stride_dzm, stride_dzn, stride_wn, stride_wk, stride_mn, stride_mk, stride_dxm, stride_dxk,
    HAS_MASK: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    rn = tl.arange(0, BLOCK_N)
    in_m = offs_m < M
    in_k = offs_k < K
    dzm = offs_m.to(tl.int64)[:, None] * stride_dzm
    start = tl.load(t_row_ptr + pid_k)
    end = tl.load(t_row_ptr + pid_k + 1)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for t in range(start, end):
        offs_n = tl.load(t_col_idx + t) * BLOCK_N + rn
        in_n = offs_n < N
        dz = tl.load(dz_ptr + dzm + offs_n[None, :] * stride_dzn, mask=in_m[:, None] & in_n[None, :], other=0.0)
        w_mask = in_n[:, None] & in_k[None, :]
        w = tl.load(w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=w_mask, other=0.0)
        if HAS_MASK:
            keep = tl.load(m_ptr + offs_n.to(tl.int64)[:, None] * stride_mn + offs_k[None, :] * stride_mk, mask=w_mask, other=0)
            w = tl.where(keep != 0, w, 0.0)
        acc = tl.dot(dz, w, acc, input_precision=PRECISION)
    out = offs_m.to(tl.int64)[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    tl.store(dx_ptr + out, acc.to(dx_ptr.dtype.element_ty), mask=in_m[:, None] & in_k[None, :])


@triton.jit
def _masked_linear_bwd_dw_kernel(
    dz_ptr, x_ptr, m_ptr, dw_ptr, tile_row, col_idx,
    M, N, K,
    stride_dzm, stride_dzn, stride_xm, stride_xk, stride_mn, stride_mk, stride_dwn, stride_dwk,
    HAS_MASK: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    t = tl.program_id(0)
    offs_n = tl.load(tile_row + t) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.load(col_idx + t) * BLOCK_K + tl.arange(0, BLOCK_K)
    rm = tl.arange(0, BLOCK_M)
    in_n = offs_n < N
    in_k = offs_k < K
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + rm
        in_m = offs_m < M
        om = offs_m.to(tl.int64)
        dzt = tl.load(dz_ptr + om[None, :] * stride_dzm + offs_n[:, None] * stride_dzn,
                      mask=in_n[:, None] & in_m[None, :], other=0.0)
        x = tl.load(x_ptr + om[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=in_m[:, None] & in_k[None, :], other=0.0)
        acc = tl.dot(dzt, x, acc, input_precision=PRECISION)
    tile = in_n[:, None] & in_k[None, :]
    on = offs_n.to(tl.int64)[:, None]
    if HAS_MASK:
        keep = tl.load(m_ptr + on * stride_mn + offs_k[None, :] * stride_mk, mask=tile, other=0)
        acc = tl.where(keep != 0, acc, 0.0)
    tl.store(dw_ptr + on * stride_dwn + offs_k[None, :] * stride_dwk, acc.to(dw_ptr.dtype.element_ty), mask=tile)


_KERNELS = {
    "fwd": _masked_linear_fwd_kernel,
    "dx": _masked_linear_bwd_dx_kernel,
    "dw": _masked_linear_bwd_dw_kernel,
}


def _configs(kind: str) -> list:
    if kind == "dw":  # BLOCK_M is the reduction chunk over the batch
        shapes = [(32, 4, 3), (64, 4, 3), (64, 8, 4), (128, 8, 3), (128, 4, 4)]
    else:
        shapes = [(64, 4, 3), (64, 4, 4), (128, 4, 3), (128, 8, 3), (128, 4, 4), (128, 8, 4), (256, 8, 3), (256, 8, 4)]
    return [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=s) for m, w, s in shapes]


@functools.cache
def _tuned(kind: str):
    # Created on first CUDA use only: the autotuner needs a GPU driver.
    return triton.autotune(configs=_configs(kind), key=["M", "N", "K"])(_KERNELS[kind])


def _launch(kind: str, grid, device: torch.device, *args, **meta) -> None:
    """Runs kernel `kind` on grid(BLOCK_M): autotuned on CUDA, a fixed small BLOCK_M in the interpreter."""
    if device.type == "cuda":
        _tuned(kind)[lambda META: grid(META["BLOCK_M"])](*args, **meta)
    else:
        _KERNELS[kind][grid(_INTERP_BLOCK_M)](*args, BLOCK_M=_INTERP_BLOCK_M, **meta)


def _mask_strides(mask: Optional[torch.Tensor]) -> tuple[int, int]:
    return (mask.stride(0), mask.stride(1)) if mask is not None else (0, 0)


@torch.library.custom_op("strnn_fast::masked_linear_fwd", mutates_args=())
def masked_linear_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], mask: Optional[torch.Tensor],
    row_ptr: torch.Tensor, col_idx: torch.Tensor, block_n: int, block_k: int, act: int, precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward op on a 2-D x: returns (y, z), z the pre-activation for gelu/silu and empty otherwise."""
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    save_z = act in _NEEDS_Z
    z = torch.empty((M, N) if save_z else (0,), device=x.device, dtype=x.dtype)
    if M == 0:
        return y, z
    ms = _mask_strides(mask)
    _launch(
        "fwd", lambda bm: (triton.cdiv(M, bm), row_ptr.numel() - 1), x.device,
        x, weight, mask if mask is not None else weight, bias if bias is not None else weight, y, z if save_z else y,
        row_ptr, col_idx, M, N, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), ms[0], ms[1], y.stride(0), y.stride(1),
        HAS_MASK=mask is not None, HAS_BIAS=bias is not None, SAVE_Z=save_z, ACT=act,
        PRECISION=precision, BLOCK_N=block_n, BLOCK_K=block_k,
    )
    return y, z


@masked_linear_fwd.register_fake
def _(x, weight, bias, mask, row_ptr, col_idx, block_n, block_k, act, precision):
    M, N = x.shape[0], weight.shape[0]
    return x.new_empty((M, N)), x.new_empty((M, N) if act in _NEEDS_Z else (0,))


@torch.library.custom_op("strnn_fast::masked_linear_bwd", mutates_args=())
def masked_linear_bwd(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: Optional[torch.Tensor], saved: torch.Tensor,
    tile_row: torch.Tensor, col_idx: torch.Tensor, t_row_ptr: torch.Tensor, t_col_idx: torch.Tensor,
    block_n: int, block_k: int, act: int, precision: str, need_dx: bool, need_dw: bool, need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward op: (dx, dw, db), each empty when not needed; `saved` is z for gelu/silu, else y."""
    M, K = x.shape
    N = weight.shape[0]
    if act == 0:
        dz = dy
    else:
        dz = torch.empty((M, N), device=x.device, dtype=x.dtype)
        dy = dy.contiguous()
        block = 1024
        if M:
            _masked_linear_bwd_act_kernel[(triton.cdiv(M * N, block),)](dy, saved, dz, M * N, ACT=act, BLOCK=block)
    ms = _mask_strides(mask)
    # Unneeded outputs are distinct empty tensors: custom-op outputs may not alias each other.
    dx, dw = x.new_empty((0,)), x.new_empty((0,))
    if need_dx:
        dx = torch.empty_like(x)
        if M:
            _launch(
                "dx", lambda bm: (triton.cdiv(M, bm), t_row_ptr.numel() - 1), x.device,
                dz, weight, mask if mask is not None else weight, dx, t_row_ptr, t_col_idx, M, N, K,
                dz.stride(0), dz.stride(1), weight.stride(0), weight.stride(1), ms[0], ms[1],
                dx.stride(0), dx.stride(1),
                HAS_MASK=mask is not None, PRECISION=precision, BLOCK_N=block_n, BLOCK_K=block_k,
            )
    if need_dw:
        # Tiles without a nonzero never get a gradient: they are not part of the layer.
        dw = torch.zeros_like(weight)
        if M and col_idx.numel():
            _launch(
                "dw", lambda bm: (col_idx.numel(),), x.device,
                dz, x, mask if mask is not None else weight, dw, tile_row, col_idx, M, N, K,
                dz.stride(0), dz.stride(1), x.stride(0), x.stride(1), ms[0], ms[1], dw.stride(0), dw.stride(1),
                HAS_MASK=mask is not None, PRECISION=precision, BLOCK_N=block_n, BLOCK_K=block_k,
            )
    db = dz.sum(0, dtype=torch.float32).to(x.dtype) if need_db else x.new_empty((0,))
    return dx, dw, db


@masked_linear_bwd.register_fake
def _(dy, x, weight, mask, saved, tile_row, col_idx, t_row_ptr, t_col_idx, block_n, block_k, act, precision,
      need_dx, need_dw, need_db):
    return (
        x.new_empty(x.shape if need_dx else (0,)),
        x.new_empty(weight.shape if need_dw else (0,)),
        x.new_empty((weight.shape[0],) if need_db else (0,)),
    )


class MaskedLinearFunction(torch.autograd.Function):
    """Autograd of y = act(x @ (W ⊙ M)^T + b) on a 2-D x, over a block layout's index tensors."""

    @staticmethod
    def forward(ctx, x, weight, bias, mask, row_ptr, col_idx, tile_row, t_row_ptr, t_col_idx,
                block_n, block_k, act, precision):
        y, z = torch.ops.strnn_fast.masked_linear_fwd(x, weight, bias, mask, row_ptr, col_idx,
                                                      block_n, block_k, act, precision)
        saved = z if act in _NEEDS_Z else y
        ctx.save_for_backward(x, weight, mask, saved, tile_row, col_idx, t_row_ptr, t_col_idx)
        ctx.meta = (block_n, block_k, act, precision, bias is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mask, saved, tile_row, col_idx, t_row_ptr, t_col_idx = ctx.saved_tensors
        block_n, block_k, act, precision, has_bias = ctx.meta
        need_dx, need_dw, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        dx, dw, db = torch.ops.strnn_fast.masked_linear_bwd(
            dy, x, weight, mask, saved, tile_row, col_idx, t_row_ptr, t_col_idx,
            block_n, block_k, act, precision, need_dx, need_dw, need_db and has_bias,
        )
        return (dx if need_dx else None, dw if need_dw else None, db if need_db and has_bias else None,
                None, None, None, None, None, None, None, None, None, None)


def masked_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    layout,
    activation: str = "identity",
    allow_tf32: Optional[bool] = None,
) -> torch.Tensor:
    r"""Block-sparse y = act(x @ (W ⊙ M)^T + b) with autograd.

    Arguments:
        x: (..., in) input, fp32/fp16/bf16 (fp32/fp16 in the interpreter).
        weight: (out, in) weight of x's dtype and device.
        bias: (out,) bias or None.
        mask: (out, in) bool/uint8 mask, or None when the weight is already masked (frozen
            models); tiles absent from the layout count as zero either way.
        layout: the :class:`~strnn_fast.layout.BlockLayout` of the mask, on x's device.
        activation: one of identity, relu, tanh, softplus, elu, gelu, silu.
        allow_tf32: use TF32 for fp32 inputs; None follows ``torch.backends.cuda.matmul.allow_tf32``.

    Returns:
        The (..., out) output in x's dtype.

    Example:
        >>> from strnn_fast.layout import BlockLayout
        >>> m = torch.tril(torch.ones(20, 20, dtype=torch.uint8))
        >>> y = masked_linear(torch.randn(3, 20), torch.randn(20, 20), None, m, BlockLayout.from_mask(m, (16, 16)))
        >>> y.shape
        torch.Size([3, 20])
    """
    _check(x, weight, bias, mask, layout, activation)
    N, K = weight.shape
    if allow_tf32 is None:
        allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    precision = "tf32" if allow_tf32 and x.dtype == torch.float32 and x.is_cuda else "ieee"
    if mask is not None and mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)
    x2 = x.reshape(-1, K)
    y = MaskedLinearFunction.apply(
        x2, weight, bias, mask, layout.row_ptr, layout.col_idx, layout.tile_row, layout.t_row_ptr, layout.t_col_idx,
        layout.block[0], layout.block[1], ACTIVATION_CODES[activation], precision,
    )
    return y.reshape(*x.shape[:-1], N)


def _check(x, weight, bias, mask, layout, activation) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("x and weight must be torch tensors")
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"unknown activation {activation!r}; expected one of: {', '.join(ACTIVATION_CODES)}")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x (..., {weight.shape[-1]}) and weight (out, in) do not match: {tuple(x.shape)}, {tuple(weight.shape)}")
    if x.dtype not in _DTYPES or weight.dtype != x.dtype:
        raise TypeError(f"x and weight must share one dtype of float32/float16/bfloat16, got {x.dtype} and {weight.dtype}")
    if x.device.type == "cpu" and not is_interpreted():
        raise RuntimeError("the Triton kernels run on CPU only in the interpreter: set TRITON_INTERPRET=1 "
                           "before importing strnn_fast (or use backend='dense')")
    if x.device.type == "cpu" and x.dtype == torch.bfloat16:
        raise TypeError("bfloat16 is not supported by the Triton interpreter (its bf16 dot is wrong); use float32/float16")
    if x.device.type not in ("cpu", "cuda") or weight.device != x.device:
        raise ValueError(f"x and weight must be on one CUDA device (or the CPU interpreter), got {x.device} and {weight.device}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != x.dtype or bias.device != x.device):
        raise ValueError(f"bias must be ({weight.shape[0]},) of x's dtype and device, got {tuple(bias.shape)} {bias.dtype}")
    if mask is not None and (mask.shape != weight.shape or mask.dtype not in (torch.bool, torch.uint8) or mask.device != x.device):
        raise ValueError(f"mask must be a bool/uint8 tensor shaped like weight {tuple(weight.shape)} on x's device")
    if tuple(layout.shape) != tuple(weight.shape):
        raise ValueError(f"layout is for a {layout.shape} mask but weight is {tuple(weight.shape)}")
    if layout.device != x.device:
        raise ValueError(f"layout is on {layout.device} but x is on {x.device}; use layout.to(x.device)")
    if min(layout.block) < 16 or any(b & (b - 1) for b in layout.block):
        raise ValueError(f"layout.block must be powers of two >= 16 for the kernels, got {layout.block}")
