r"""Block-sparse masked linear layer: y = act(x @ W^T + b), touching only the layout's tiles.

One file per op (Liger-Kernel style): the Triton kernels, their launchers, the torch.library
custom ops (with fake implementations, so ``torch.compile`` traces through without graph
breaks), the ``torch.autograd.Function`` and the functional alias :func:`masked_linear`.

Contract: the weight is masked at rest (zero wherever the mask is zero), so the forward and dX
kernels never read the mask; dW stores only the entries the mask keeps (``keep``), so a masked
weight stays masked under any optimizer step that maps a zero gradient to a zero update.

Kernels (tile BLOCK_N x BLOCK_K = the :class:`~strnn_fast.layout.BlockLayout` block):

- forward: one program per (batch block, output block), output blocks launched longest tile
  list first; the K loop loads the next tile index one iteration ahead and peels the ragged
  last input block, so it has no load that depends on a value loaded in the same iteration and
  Triton's software pipeliner keeps ``num_stages - 1`` tiles in flight (the fused bias and
  activation run in the epilogue);
- activation backward + db: one elementwise pass writes dz = dy * act'(.) and per-batch-block
  partial sums of dz (summed in a fixed order: deterministic);
- dX: the forward's loop over the transposed lists;
- dW: one program per (nonzero tile, batch slice); when the tiles are fewer than twice the
  SMs the batch is split and a second pass adds the fp32 slices in a fixed order
  (deterministic, no atomics) and applies ``keep`` as it stores.

fp32 runs as TF32 when ``torch.backends.cuda.matmul.allow_tf32`` (or ``allow_tf32=True``), and
otherwise as "tf32x3" (three TF32 products, about fp32 accuracy, tensor cores) on Hopper and
through cuBLAS before it (tf32x3 spills with mma.sync), never as the FMA dot that spills. Autotuning keys on the next power of two of the batch, N and K.

On CUDA the launch parameters are autotuned; on the CPU the kernels run in the Triton
interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before this module is
imported, and supports fp32 and fp16 only. :func:`strnn_fast.kernels.aot.compile_plan` lists every kernel
variant for the ahead-of-time compile check.
"""
import functools
import os
import weakref
from typing import Any, Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.functional_tensor import FunctionalTensorMode
from torch.library import triton_op, wrap_triton

from ..activations import ACTIVATIONS

# Activation codes shared by the kernels and the launchers.
ACTIVATION_CODES = {"identity": 0, "relu": 1, "tanh": 2, "softplus": 3, "elu": 4, "gelu": 5, "silu": 6}
# Activations whose derivative needs the pre-activation; the others get it from the output.
_NEEDS_Z = (5, 6)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Rows per program in the interpreter: tl.dot needs >= 16, and the interpreter is slow.
_INTERP_BLOCK_M = 16
# Tile of the elementwise activation-backward pass (rows, columns): (CUDA, interpreter).
_ACT_TILE = {True: (64, 128), False: (16, 16)}
# dW: aim for this many programs per SM, in batch slices of whole multiples of this many rows.
_DW_WAVES = 2
_DW_GRANULE = {True: 256, False: _INTERP_BLOCK_M}
# Bytes of shared memory a block may use (dynamic + static), by compute capability: sm_80 (A100
# class) and sm_90 (H100 class). The one table: the autotuner's pruning and the compile plan
# (strnn_fast.kernels.aot) read it.
SHARED_LIMIT = {80: 166912, 90: 232448}


def is_interpreted() -> bool:
    """True when the kernels of this module were built for the Triton interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_masked_linear_fwd_kernel, InterpretedFunction)


def _interpreter_scalar_index() -> bool:
    """Makes the Triton interpreter turn a scalar loop bound into an int on every numpy; True if patched.

    In the interpreter every scalar (``tl.program_id``, an int argument, a loaded index) is a
    1-element numpy array, and Python's ``range`` over a runtime bound calls ``tensor.__index__``.
    Triton 3.6's interpreter does ``int(data)`` there, which numpy >= 2.4 refuses for a 1-d array
    ("only 0-dimensional arrays can be converted to Python scalars"); Triton 3.9 squeezes it
    first. No kernel source avoids this: every runtime value is such an array there, and a
    ``while`` loop instead of ``range`` would not be software-pipelined on the GPU. So the
    interpreter's per-launch tensor patch is wrapped to index the one element (what 3.9 does);
    compiled kernels never reach this code.

    >>> is_interpreted() or not _interpreter_scalar_index()
    True
    """
    if not is_interpreted():
        return False
    from triton.runtime import interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None or getattr(patch, "scalar_index", False):
        return patch is not None

    def patch_lang_tensor(tensor: Any, scope: Any) -> None:
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.scalar_index = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


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
def _sparse_row_dot(a_rows, b_cols, idx_ptr, start, end, LAST, in_m, in_n, limit,
                    stride_ak, stride_bk, acc, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    # acc += sum over the tile list [start, end) of A[:, blk] @ B[blk, :], blk = idx[t] * BLOCK_K.
    # The next index is loaded one iteration ahead, and the ragged last block (index LAST, only
    # when limit % BLOCK_K != 0; lists are ascending, so it can only come last) is peeled off:
    # no address in the loop depends on a load of the same iteration, and no load mask depends
    # on a loaded value, which is what Triton's pipeliner needs to overlap num_stages - 1 tiles.
    rk = tl.arange(0, BLOCK_K)
    ragged = (end > start) & (limit % BLOCK_K != 0)  # tensor first: limit may be a specialized constant
    if ragged:
        ragged = tl.load(idx_ptr + end - 1) == LAST
    stop = end - ragged.to(tl.int32)
    nxt = tl.load(idx_ptr + start, mask=start < stop, other=0)
    for t in range(start, stop):
        offs = nxt * BLOCK_K + rk
        nxt = tl.load(idx_ptr + t + 1, mask=t + 1 < stop, other=0)
        a = tl.load(a_rows + offs[None, :] * stride_ak, mask=in_m[:, None], other=0.0)
        b = tl.load(b_cols + offs[:, None] * stride_bk, mask=in_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if ragged:
        offs = LAST * BLOCK_K + rk
        inside = offs < limit
        a = tl.load(a_rows + offs[None, :] * stride_ak, mask=in_m[:, None] & inside[None, :], other=0.0)
        b = tl.load(b_cols + offs[:, None] * stride_bk, mask=inside[:, None] & in_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _masked_linear_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr, row_ptr, col_idx, row_order,
    M, N, K, M_KEY,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, SAVE_Z: tl.constexpr, ACT: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # M_KEY (next power of two of M) is only the autotuner's key.
    pid_m = tl.program_id(0)
    rb = tl.load(row_order + tl.program_id(1))  # longest rows first
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = rb * BLOCK_N + tl.arange(0, BLOCK_N)
    in_m = offs_m < M
    in_n = offs_n < N
    # 64-bit offsets: batch x width may pass 2**31 elements.
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = _sparse_row_dot(x_rows, w_cols, col_idx, tl.load(row_ptr + rb), tl.load(row_ptr + rb + 1), K // BLOCK_K,
                          in_m, in_n, K, stride_xk, stride_wk, acc, PRECISION, BLOCK_K)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=in_n, other=0.0).to(tl.float32)[None, :]
    out_mask = in_m[:, None] & in_n[None, :]
    y_off = offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    if SAVE_Z:
        tl.store(z_ptr + y_off, acc.to(z_ptr.dtype.element_ty), mask=out_mask)
    tl.store(y_ptr + y_off, _act_fwd(acc, ACT).to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _masked_linear_bwd_act_kernel(
    dy_ptr, a_ptr, dz_ptr, dbp_ptr,
    M, N,
    stride_dym, stride_dyn, stride_am, stride_an, stride_dzm, stride_dzn,
    ACT: tl.constexpr, NEED_DB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # dz = dy * act'(a), and partial db sums per batch block (dbp[pid_m, :], fp32).
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    om = offs_m.to(tl.int64)[:, None]
    dz = tl.load(dy_ptr + om * stride_dym + offs_n[None, :] * stride_dyn, mask=inside, other=0.0).to(tl.float32)
    if ACT != 0:
        a = tl.load(a_ptr + om * stride_am + offs_n[None, :] * stride_an, mask=inside, other=0.0).to(tl.float32)
        dz = tl.where(inside, _act_bwd(dz, a, ACT), 0.0)
        dz_low = dz.to(dz_ptr.dtype.element_ty)
        tl.store(dz_ptr + om * stride_dzm + offs_n[None, :] * stride_dzn, dz_low, mask=inside)
        dz = dz_low.to(tl.float32)  # db of the dz that dX and dW see
    if NEED_DB:
        tl.store(dbp_ptr + pid_m.to(tl.int64) * N + offs_n, tl.sum(dz, axis=0), mask=offs_n < N)


@triton.jit
def _masked_linear_bwd_dx_kernel(
    dz_ptr, w_ptr, dx_ptr, t_row_ptr, t_col_idx, t_row_order,
    M, N, K, M_KEY,
    stride_dzm, stride_dzn, stride_wn, stride_wk, stride_dxm, stride_dxk,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    cb = tl.load(t_row_order + tl.program_id(1))
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = cb * BLOCK_K + tl.arange(0, BLOCK_K)
    in_m = offs_m < M
    in_k = offs_k < K
    dz_rows = dz_ptr + offs_m.to(tl.int64)[:, None] * stride_dzm
    w_cols = w_ptr + offs_k[None, :] * stride_wk
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    # dX[:, cb] = sum over the output blocks nb of column cb: dZ[:, nb] @ W[nb, cb].
    acc = _sparse_row_dot(dz_rows, w_cols, t_col_idx, tl.load(t_row_ptr + cb), tl.load(t_row_ptr + cb + 1),
                          N // BLOCK_N, in_m, in_k, N, stride_dzn, stride_wn, acc, PRECISION, BLOCK_N)
    out = offs_m.to(tl.int64)[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    tl.store(dx_ptr + out, acc.to(dx_ptr.dtype.element_ty), mask=in_m[:, None] & in_k[None, :])


@triton.jit
def _masked_linear_bwd_dw_kernel(
    dz_ptr, x_ptr, keep_ptr, dw_ptr, ws_ptr, tile_row, col_idx,
    M, N, K, M_KEY, CHUNK, NNZ,
    stride_dzm, stride_dzn, stride_xm, stride_xk, stride_km, stride_kk, stride_dwn, stride_dwk,
    HAS_KEEP: tl.constexpr, SPLIT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Program (t, s): tile t of the layout over batch rows [s * CHUNK, (s + 1) * CHUNK).
    t = tl.program_id(0)
    s = tl.program_id(1)
    offs_n = tl.load(tile_row + t) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.load(col_idx + t) * BLOCK_K + tl.arange(0, BLOCK_K)
    rm = tl.arange(0, BLOCK_M)
    in_n = offs_n < N
    in_k = offs_k < K
    m_lo = s * CHUNK
    m_hi = tl.minimum(m_lo + CHUNK, M)
    dz_cols = dz_ptr + offs_n[:, None] * stride_dzn
    x_cols = x_ptr + offs_k[None, :] * stride_xk
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m0 in range(m_lo, m_hi, BLOCK_M):
        om = m0 + rm
        in_m = om < m_hi
        om = om.to(tl.int64)
        dzt = tl.load(dz_cols + om[None, :] * stride_dzm, mask=in_n[:, None] & in_m[None, :], other=0.0)
        x = tl.load(x_cols + om[:, None] * stride_xm, mask=in_m[:, None] & in_k[None, :], other=0.0)
        acc = tl.dot(dzt, x, acc, input_precision=PRECISION)
    if SPLIT:  # fp32 slice, added up by _masked_linear_bwd_dw_reduce_kernel
        tile = tl.arange(0, BLOCK_N)[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
        tl.store(ws_ptr + (s.to(tl.int64) * NNZ + t) * (BLOCK_N * BLOCK_K) + tile, acc)
    else:
        inside = in_n[:, None] & in_k[None, :]
        on = offs_n.to(tl.int64)[:, None]
        if HAS_KEEP:
            keep = tl.load(keep_ptr + on * stride_km + offs_k[None, :] * stride_kk, mask=inside, other=0)
            acc = tl.where(keep != 0, acc, 0.0)
        tl.store(dw_ptr + on * stride_dwn + offs_k[None, :] * stride_dwk, acc.to(dw_ptr.dtype.element_ty),
                 mask=inside)


@triton.jit
def _masked_linear_bwd_dw_reduce_kernel(
    ws_ptr, keep_ptr, dw_ptr, tile_row, col_idx,
    N, K, NNZ, SLICES,
    stride_km, stride_kk, stride_dwn, stride_dwk,
    HAS_KEEP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # dW tile t = the sum of its batch slices, in slice order (deterministic), masked by keep.
    t = tl.program_id(0)
    offs_n = tl.load(tile_row + t) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.load(col_idx + t) * BLOCK_K + tl.arange(0, BLOCK_K)
    tile = tl.arange(0, BLOCK_N)[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    t64 = t.to(tl.int64)
    step = (t64 * 0 + NNZ) * (BLOCK_N * BLOCK_K)  # int64: the workspace may pass 2**31 elements
    p = ws_ptr + t64 * (BLOCK_N * BLOCK_K) + tile
    for _ in range(0, SLICES):
        acc += tl.load(p)
        p += step
    inside = (offs_n < N)[:, None] & (offs_k < K)[None, :]
    on = offs_n.to(tl.int64)[:, None]
    if HAS_KEEP:
        keep = tl.load(keep_ptr + on * stride_km + offs_k[None, :] * stride_kk, mask=inside, other=0)
        acc = tl.where(keep != 0, acc, 0.0)
    tl.store(dw_ptr + on * stride_dwn + offs_k[None, :] * stride_dwk, acc.to(dw_ptr.dtype.element_ty), mask=inside)


_KERNELS = {
    "fwd": _masked_linear_fwd_kernel,
    "dx": _masked_linear_bwd_dx_kernel,
    "dw": _masked_linear_bwd_dw_kernel,
}
_interpreter_scalar_index()  # before any launch: loop bounds are 1-element arrays there
# (BLOCK_M, num_warps, num_stages), each compiling to a distinct cubin for every dtype on sm_90a
# (tests/test_kernels_compile.py checks that and that none spills). For dW BLOCK_M is the
# reduction chunk over the batch.
CONFIGS = {
    "fwd": ((64, 4, 3), (128, 4, 3), (128, 8, 3), (128, 4, 4), (256, 8, 3)),
    "dx": ((64, 4, 3), (128, 4, 3), (128, 8, 3), (128, 4, 4), (256, 8, 3)),
    "dw": ((32, 4, 3), (64, 4, 3), (64, 4, 4), (128, 8, 3)),
}
# tf32x3 splits each operand into two TF32 halves: only tiles with <= 32 fp32 accumulators per
# thread and dW chunks of <= 64 rows stay within 255 registers without spilling.
TF32X3_CONFIGS = {
    "fwd": ((64, 4, 3), (128, 8, 3)),
    "dx": ((64, 4, 3), (128, 8, 3)),
    "dw": ((32, 4, 3), (64, 4, 3), (64, 4, 4)),
}


def shared_bytes(kind: str, block_m: int, num_stages: int, block: tuple[int, int], itemsize: int) -> int:
    """Shared memory of the software pipeline's buffers (the operand tiles of every stage)."""
    bn, bk = block
    a, b = {"fwd": (block_m * bk, bk * bn), "dx": (block_m * bn, bn * bk), "dw": (bn * block_m, block_m * bk)}[kind]
    return num_stages * (a + b) * itemsize


def _configs(kind: str) -> list:
    return [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=s) for m, w, s in CONFIGS[kind]]


@functools.cache
def _capability(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def _shared_limit(index: int) -> int:
    return SHARED_LIMIT.get(10 * _capability(index), SHARED_LIMIT[80])


def config_fits(kind: str, config: tuple[int, int, int], block: tuple[int, int], itemsize: int,
                precision: str, shared_limit: int) -> bool:
    """Whether an autotune config (BLOCK_M, warps, stages) compiles without spills and fits in
    shared memory (the autotuner prunes the others; the compile plan leaves them out)."""
    if precision == "tf32x3" and config not in TF32X3_CONFIGS[kind]:
        return False
    return shared_bytes(kind, config[0], config[2], block, itemsize) <= shared_limit


def _prune(kind: str):
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        ref = args["x_ptr" if kind != "dx" else "dz_ptr"]
        block = (args["BLOCK_N"], args["BLOCK_K"])
        limit = _shared_limit(ref.device.index or 0)
        fits = [c for c in configs if config_fits(kind, (c.kwargs["BLOCK_M"], c.num_warps, c.num_stages), block,
                                                  ref.element_size(), args["PRECISION"], limit)]
        return fits or configs[:1]

    return prune


@functools.cache
def _tuned(kind: str):
    # Created on first CUDA use only: the autotuner needs a GPU driver. M_KEY buckets the batch.
    return triton.autotune(configs=_configs(kind), key=["M_KEY", "N", "K"],
                           prune_configs_by={"early_config_prune": _prune(kind)})(_KERNELS[kind])


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _m_key(m: Any) -> Any:
    """The autotuner's batch key; a traced (symbolic) batch is passed as it is: Inductor tunes a
    user kernel once per compile and ignores the keys, and a bit trick on a symbol would not lower."""
    if isinstance(m, torch.SymInt):
        return m
    return triton.next_power_of_2(max(m, 1))


# One config per kernel, valid for every dtype and precision, used when STRNN_FAST_AUTOTUNE=0
# (correctness tests on a GPU: one compile per variant instead of one per config).
_FIXED = {"fwd": (128, 8, 3), "dx": (128, 8, 3), "dw": (64, 4, 3)}


def _launch(kind: str, grid, cuda: bool, *args, traceable: bool = False, **meta) -> None:
    """Runs kernel `kind` on grid(BLOCK_M): autotuned on CUDA (or the fixed config when the
    environment sets STRNN_FAST_AUTOTUNE=0), a small fixed BLOCK_M in the interpreter.

    `traceable` (inside a ``triton_op``): the CUDA launch goes through ``wrap_triton``, so that a
    tracer records the kernel itself; in eager the op turns the wrapping off (the plain launch)."""
    if cuda:
        wrap = wrap_triton if traceable else _plain
        if os.environ.get("STRNN_FAST_AUTOTUNE", "1") == "0":
            bm, warps, stages = _FIXED[kind]
            wrap(_KERNELS[kind])[grid(bm)](*args, BLOCK_M=bm, num_warps=warps, num_stages=stages, **meta)
        else:
            wrap(_tuned(kind))[lambda META: grid(META["BLOCK_M"])](*args, **meta)
    else:  # interpreted kernels are never wrapped: torch 2.11's wrap_triton refuses them
        _KERNELS[kind][grid(_INTERP_BLOCK_M)](*args, BLOCK_M=_INTERP_BLOCK_M, **meta)


def _plain(kernel: Any) -> Any:
    return kernel


def dw_split(m: int, nnz: int, cuda: bool, sm_count: int = 132) -> tuple[int, int]:
    r"""(slices, rows per slice) of the dW batch reduction.

    Few nonzero tiles leave most SMs idle when each tile's program walks the whole batch; the
    batch is then cut into slices (whole multiples of 256 rows on CUDA) so that there are about
    ``2 * sm_count`` programs.

    Example:
        >>> dw_split(4096, 64, cuda=True)
        (4, 1024)
        >>> dw_split(4096, 1000, cuda=True)
        (1, 4096)
    """
    granule = _DW_GRANULE[cuda]
    want = -(-_DW_WAVES * sm_count // max(nnz, 1))
    slices = max(1, min(want, -(-m // granule)))
    chunk = -(-(-(-m // slices)) // granule) * granule
    return -(-m // chunk), chunk


# The interpreter has no SMs: a small count makes the tiny test problems take the split path.
_INTERP_SM_COUNT = 4


@triton_op("strnn_fast::masked_linear_fwd", mutates_args=())
def masked_linear_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
    row_ptr: torch.Tensor, col_idx: torch.Tensor, row_order: torch.Tensor,
    block_n: int, block_k: int, act: int, precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward op on a 2-D x and a weight masked at rest: (y, z), z the pre-activation for
    gelu/silu and empty otherwise.

    A ``torch.library.triton_op``: torch.compile and AOTInductor see (and compile, and package)
    the Triton kernel itself; torch.export keeps the op as a node, which AOTInductor then
    decomposes into the kernel. In the interpreter the op stays opaque (see below)."""
    M, K = x.shape
    N = weight.shape[0]
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    save_z = act in _NEEDS_Z
    # Without gelu/silu z is an empty tensor that the kernel never writes: its own argument, not
    # y again, so that a traced launch does not see y written through two arguments.
    z = torch.empty((M, N) if save_z else (0,), device=x.device, dtype=x.dtype)
    if M == 0:
        return y, z
    rows = row_order.numel()
    _launch(
        "fwd", lambda bm: (triton.cdiv(M, bm), rows), x.is_cuda,
        x, weight, bias if bias is not None else weight, y, z, row_ptr, col_idx, row_order,
        M, N, K, _m_key(M), x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        traceable=True, HAS_BIAS=bias is not None, SAVE_Z=save_z, ACT=act, PRECISION=precision, BLOCK_N=block_n,
        BLOCK_K=block_k,
    )
    return y, z


def _fwd_fake(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_ptr: torch.Tensor,
              col_idx: torch.Tensor, row_order: torch.Tensor, block_n: int, block_k: int, act: int,
              precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    M, N = x.shape[0], weight.shape[0]
    return x.new_empty((M, N)), x.new_empty((M, N) if act in _NEEDS_Z else (0,))


def _opaque(mode: Any, op: Any, types: Any, args: tuple, kwargs: dict) -> Any:
    """Runs the op as one node under `mode` (what a triton_op does when decomposing is off)."""
    return mode.__torch_dispatch__(op, types, args, kwargs)


if is_interpreted():
    # The interpreter runs a kernel on host copies of real tensors, so it cannot launch on fake
    # ones (a triton_op's default fake runs its body) and no tracer can record it: the op keeps
    # a shape-only fake and is not decomposed under functionalization (torch.compile): there it
    # is an opaque custom op, as it was before it became a triton_op.
    masked_linear_fwd.register_fake(_fwd_fake)
    masked_linear_fwd.register_torch_dispatch(FunctionalTensorMode, _opaque)


def _act_backward(dy: torch.Tensor, saved: torch.Tensor, act: int, need_db: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """dz = dy * act'(.) and db = column sums of dz (fp32 partials per batch block, summed in order)."""
    M, N = dy.shape
    if act == 0 and not need_db:
        return dy, dy.new_empty((0,))
    bm, bn = _ACT_TILE[dy.is_cuda]
    dz = torch.empty((M, N), device=dy.device, dtype=dy.dtype) if act != 0 else dy
    parts = torch.empty((triton.cdiv(M, bm) if need_db else 0, N), device=dy.device, dtype=torch.float32)
    if M and N:
        _masked_linear_bwd_act_kernel[(triton.cdiv(M, bm), triton.cdiv(N, bn))](
            dy, saved if act != 0 else dy, dz, parts, M, N,
            dy.stride(0), dy.stride(1), *(saved.stride() if act != 0 else dy.stride()), dz.stride(0), dz.stride(1),
            ACT=act, NEED_DB=need_db, BLOCK_M=bm, BLOCK_N=bn,
        )
    db = parts.sum(0).to(dy.dtype) if need_db else dy.new_empty((0,))
    return dz, db


@torch.library.custom_op("strnn_fast::masked_linear_bwd", mutates_args=())
def masked_linear_bwd(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, keep: Optional[torch.Tensor], saved: torch.Tensor,
    tile_row: torch.Tensor, col_idx: torch.Tensor, t_row_ptr: torch.Tensor, t_col_idx: torch.Tensor,
    t_row_order: torch.Tensor, block_n: int, block_k: int, act: int, precision: str,
    need_dx: bool, need_dw: bool, need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward op: (dx, dw, db), each empty when not needed; `saved` is z for gelu/silu, else y.
    dW is nonzero only where `keep` (or, without it, the layout's tiles) allows."""
    M, K = x.shape
    N = weight.shape[0]
    cuda = x.is_cuda
    dz, db = _act_backward(dy, saved, act, need_db)
    # Unneeded outputs are distinct empty tensors: custom-op outputs may not alias each other.
    dx, dw = x.new_empty((0,)), x.new_empty((0,))
    if need_dx:
        dx = torch.empty_like(x)
        if M:
            cols = t_row_order.numel()
            _launch(
                "dx", lambda bm: (triton.cdiv(M, bm), cols), cuda,
                dz, weight, dx, t_row_ptr, t_col_idx, t_row_order, M, N, K, _m_key(M),
                dz.stride(0), dz.stride(1), weight.stride(0), weight.stride(1), dx.stride(0), dx.stride(1),
                PRECISION=precision, BLOCK_N=block_n, BLOCK_K=block_k,
            )
    if need_dw:
        # Tiles without a nonzero never get a gradient: they are not part of the layer.
        dw = torch.zeros_like(weight)
        nnz = col_idx.numel()
        if M and nnz:
            sms = _sm_count(x.device.index or 0) if cuda else _INTERP_SM_COUNT
            slices, chunk = dw_split(M, nnz, cuda, sms)
            split = slices > 1
            ws = (torch.empty((slices, nnz, block_n * block_k), device=x.device, dtype=torch.float32)
                  if split else dw)
            ref = keep if keep is not None else weight
            ks = keep.stride() if keep is not None else (0, 0)
            _launch(
                "dw", lambda bm: (nnz, slices), cuda,
                dz, x, ref, dw, ws, tile_row, col_idx, M, N, K, _m_key(M), chunk, nnz,
                dz.stride(0), dz.stride(1), x.stride(0), x.stride(1), ks[0], ks[1], dw.stride(0), dw.stride(1),
                HAS_KEEP=keep is not None, SPLIT=split, PRECISION=precision, BLOCK_N=block_n, BLOCK_K=block_k,
            )
            if split:
                _masked_linear_bwd_dw_reduce_kernel[(nnz,)](
                    ws, ref, dw, tile_row, col_idx, N, K, nnz, slices, ks[0], ks[1], dw.stride(0), dw.stride(1),
                    HAS_KEEP=keep is not None, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
                )
    return dx, dw, db


@masked_linear_bwd.register_fake
def _(dy, x, weight, keep, saved, tile_row, col_idx, t_row_ptr, t_col_idx, t_row_order, block_n, block_k, act,
      precision, need_dx, need_dw, need_db):
    return (
        x.new_empty(x.shape if need_dx else (0,)),
        x.new_empty(weight.shape if need_dw else (0,)),
        x.new_empty((weight.shape[0],) if need_db else (0,)),
    )


class MaskedLinearFunction(torch.autograd.Function):
    """Autograd of y = act(x @ W^T + b) on a 2-D x, W masked at rest, over a block layout's
    index tensors (passed one by one: ``torch.compile`` traces tensors, not the container)."""

    @staticmethod
    def forward(ctx, x, weight, bias, keep, row_ptr, col_idx, row_order, tile_row, t_row_ptr, t_col_idx,
                t_row_order, block_n, block_k, act, precision):
        y, z = torch.ops.strnn_fast.masked_linear_fwd(x, weight, bias, row_ptr, col_idx, row_order,
                                                      block_n, block_k, act, precision)
        saved = z if act in _NEEDS_Z else y
        ctx.save_for_backward(x, weight, keep, saved, tile_row, col_idx, t_row_ptr, t_col_idx, t_row_order)
        ctx.meta = (block_n, block_k, act, precision, bias is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, keep, saved, tile_row, col_idx, t_row_ptr, t_col_idx, t_row_order = ctx.saved_tensors
        block_n, block_k, act, precision, has_bias = ctx.meta
        need_dx, need_dw, need_db = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        dx, dw, db = torch.ops.strnn_fast.masked_linear_bwd(
            dy, x, weight, keep, saved, tile_row, col_idx, t_row_ptr, t_col_idx, t_row_order,
            block_n, block_k, act, precision, need_dx, need_dw, need_db and has_bias,
        )
        return (dx if need_dx else None, dw if need_dw else None, db if need_db and has_bias else None,
                *([None] * 12))


# Layouts already validated for the kernels (checked once per layout, not per call).
_CHECKED_LAYOUTS: "weakref.WeakSet" = weakref.WeakSet()


def precision_of(dtype: torch.dtype, cuda: bool, allow_tf32: Optional[bool] = None) -> str:
    r"""``input_precision`` of the kernels' dots for `dtype`.

    fp32 on CUDA is "tf32" when TF32 is allowed and "tf32x3" otherwise (never the fp32 FMA
    dot, which spills); the interpreter and 16-bit types use "ieee".

    Example:
        >>> precision_of(torch.float32, cuda=True, allow_tf32=False)
        'tf32x3'
    """
    if dtype != torch.float32 or not cuda:
        return "ieee"
    if allow_tf32 is None:
        allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    return "tf32" if allow_tf32 else "tf32x3"


def masked_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    keep: Optional[torch.Tensor],
    layout,
    activation: str = "identity",
    allow_tf32: Optional[bool] = None,
) -> torch.Tensor:
    r"""Block-sparse y = act(x @ W^T + b) with autograd, W masked at rest.

    Arguments:
        x: (..., in) input, fp32/fp16/bf16 (fp32/fp16 in the interpreter).
        weight: (out, in) weight of x's dtype and device, **zero wherever the mask is zero**
            (the kernels do not read the mask in the forward and dX passes).
        bias: (out,) bias or None.
        keep: (out, in) bool/uint8 mask: the entries dW may write. None keeps every entry of
            the layout's tiles (frozen models, or weights whose gradient needs no mask).
        layout: the :class:`~strnn_fast.layout.BlockLayout` of the mask, on x's device.
        activation: one of identity, relu, tanh, softplus, elu, gelu, silu.
        allow_tf32: use TF32 for fp32 inputs (else tf32x3); None follows
            ``torch.backends.cuda.matmul.allow_tf32``.

    Returns:
        The (..., out) output in x's dtype.

    Example:
        >>> from strnn_fast.layout import BlockLayout
        >>> m = torch.tril(torch.ones(20, 20, dtype=torch.uint8))
        >>> w = torch.randn(20, 20) * m
        >>> y = masked_linear(torch.randn(3, 20), w, None, m, BlockLayout.from_mask(m, (16, 16)))
        >>> y.shape
        torch.Size([3, 20])
    """
    if not torch.compiler.is_compiling():
        _check(x, weight, bias, keep, layout, activation)
    N, K = weight.shape
    precision = precision_of(x.dtype, x.is_cuda, allow_tf32)
    if precision == "tf32x3" and _capability(x.device.index or 0) < 9:
        # Before Hopper, tf32x3 needs more registers than the mma.sync layout leaves (it spills):
        # exact fp32 goes to cuBLAS on the same masked weight (keep masks dW through autograd).
        w = weight if keep is None else weight * keep.to(weight.dtype)
        return ACTIVATIONS[activation](torch.nn.functional.linear(x, w, bias))
    if keep is not None and keep.dtype == torch.bool:
        keep = keep.view(torch.uint8)
    x2 = x.reshape(-1, K)
    y = MaskedLinearFunction.apply(
        x2, weight, bias, keep, layout.row_ptr, layout.col_idx, layout.row_order, layout.tile_row,
        layout.t_row_ptr, layout.t_col_idx, layout.t_row_order, layout.block[0], layout.block[1],
        ACTIVATION_CODES[activation], precision,
    )
    return y.reshape(*x.shape[:-1], N)


def _check(x, weight, bias, keep, layout, activation) -> None:
    """Per-call checks of the tensors (cheap attribute reads); the layout's own once per layout."""
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("x and weight must be torch tensors")
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"unknown activation {activation!r}; expected one of: {', '.join(ACTIVATION_CODES)}")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x (..., {weight.shape[-1]}) and weight (out, in) do not match: {tuple(x.shape)}, {tuple(weight.shape)}")
    if weight.numel() >= 2**31:  # the weight's offsets are int32 inside the kernels
        raise ValueError(f"weight has {weight.numel()} entries; the kernels index weights below 2**31 entries")
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
    if keep is not None and (keep.shape != weight.shape or keep.dtype not in (torch.bool, torch.uint8)
                             or keep.device != x.device):
        raise ValueError(f"keep must be a bool/uint8 tensor shaped like weight {tuple(weight.shape)} on x's device")
    if tuple(layout.shape) != tuple(weight.shape):
        raise ValueError(f"layout is for a {layout.shape} mask but weight is {tuple(weight.shape)}")
    if layout.device != x.device:
        raise ValueError(f"layout is on {layout.device} but x is on {x.device}; use layout.to(x.device)")
    if layout not in _CHECKED_LAYOUTS:
        if min(layout.block) < 16 or any(b & (b - 1) for b in layout.block):
            raise ValueError(f"layout.block must be powers of two >= 16 for the kernels, got {layout.block}")
        index = (layout.row_ptr, layout.col_idx, layout.row_order, layout.tile_row, layout.t_row_ptr,
                 layout.t_col_idx, layout.t_row_order)
        if any(t.dtype != torch.int32 or not t.is_contiguous() for t in index):
            raise ValueError("layout index tensors must be contiguous int32 (build it with BlockLayout.from_mask)")
        _CHECKED_LAYOUTS.add(layout)
