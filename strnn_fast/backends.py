r"""The backends of a masked layer: the one place that runs y = act(x @ W^T + b) by name.

A masked layer computes ``act(x @ W^T + b)`` with W zero off a fixed binary mask. Four backends
compute it, and agree to rounding:

* ``"dense"``: ``F.linear`` on the masked weight (the honest baseline; weights are masked at
  rest, so no ``W * M`` per call). When the layer trains, the weight gradient is restricted to
  the mask by differentiable ops, so gradients of gradients stay masked too.
* ``"sparse"``: torch's CSR kernels (SpMM forward and input gradient, SDDMM weight gradient),
  :func:`strnn_fast.sparse_ops.sparse_linear`; first derivatives only.
* ``"cpu"``: the C++ CSR kernels of ``csrc/masked_linear.cpp`` (:mod:`strnn_fast.csr_ops`): batch
  as the vector dimension, bias and activation fused, threads as torch's, any order of
  derivatives; CPU, float32/float64.
* ``"triton"``: the block-sparse Triton kernels of ``kernels/masked_linear.py`` (CUDA; the CPU
  interpreter under ``TRITON_INTERPRET=1``).

:func:`run` is called by :class:`~strnn_fast.nn.MaskedLinear` and by the frozen layers of
:mod:`strnn_fast.freeze`; :mod:`strnn_fast.dispatch` decides which name "auto" runs and asks
:func:`eligible` which names a case may use. A layer takes part through a small interface
(:class:`LayerLike`): its dense weight, its kept weights in CSR order, its bias, activation,
CSR structure, block layout, and the mask its dense weight gradient must be restricted to.

Example:
    >>> import torch
    >>> from strnn_fast import MaskedLinear
    >>> layer = MaskedLinear(3, 2, mask=torch.tensor([[1, 0, 0], [1, 1, 0]]), backend="dense")
    >>> x = torch.randn(4, 3)
    >>> torch.allclose(run("sparse", layer, x), run("dense", layer, x))
    True
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from .activations import ACTIVATIONS
from .layout import BlockLayout
from .dense_ops import linear, masked_dense_linear
from .sparse_ops import MaskStructure, sparse_linear

# The backends a layer can run, and what a layer's ``backend`` argument may say.
NAMES = ("dense", "sparse", "cpu", "triton")
CHOICES = ("auto", *NAMES)
# Dtypes of the Triton kernels (also those of frozen models) and of the C++ CPU kernels.
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CPU_DTYPES = (torch.float32, torch.float64)


class LayerLike(Protocol):
    """What :func:`run` needs of a layer (MaskedLinear and FrozenLayer provide it)."""

    in_features: int
    out_features: int
    activation: str
    bias: torch.Tensor | None

    def dense_weight(self) -> torch.Tensor: ...
    def packed_values(self) -> torch.Tensor: ...
    def grad_mask(self) -> torch.Tensor | None: ...
    def csr(self, device: Any = None) -> MaskStructure: ...
    def block_layout(self, device: Any, block: tuple[int, int]) -> tuple[BlockLayout, torch.Tensor | None]: ...


def default_block(device: torch.device) -> tuple[int, int]:
    """Tile shape (block_out, block_in) of the Triton layouts on `device`: small in the CPU interpreter."""
    return (64, 64) if device.type == "cuda" else (16, 16)


def _cpu_kernels_available() -> bool:
    try:
        from .csr_ops import csr_linear  # noqa: F401
    except ImportError:  # pragma: no cover - an extension built without the kernels
        return False
    return True


def _triton_available() -> bool:
    try:
        from .kernels.masked_linear import masked_linear  # noqa: F401
    except ImportError:  # triton is an optional dependency
        return False
    return True


def eligible(device_key: str, dtype: torch.dtype) -> tuple[str, ...]:
    r"""The backends that can run a case on `device_key` ("cpu" or "cuda:<name>") in `dtype`.

    Likely winners on sparse masks come first. "dense" and "sparse" run everywhere; "cpu" on
    the CPU in float32/float64, where it replaces "sparse" (torch's CSR kernels: slower there,
    and first derivatives only, while "cpu" and "dense" take derivatives of any order, so that
    "auto" never picks a path a gradient penalty cannot go through); "triton" on CUDA in its
    dtypes (when triton is installed).

    Example:
        >>> eligible("cpu", torch.float32)
        ('cpu', 'dense')
        >>> eligible("cpu", torch.float16)
        ('sparse', 'dense')
    """
    if device_key.startswith("cuda"):
        return ("triton", "sparse", "dense") if dtype in TRITON_DTYPES and _triton_available() else ("sparse", "dense")
    return ("cpu", "dense") if dtype in CPU_DTYPES and _cpu_kernels_available() else ("sparse", "dense")


def runnable(device_key: str, dtype: torch.dtype) -> tuple[str, ...]:
    r"""The backends that can run at all on `device_key` in `dtype` (a table or a user may pin any of these).

    Example:
        >>> runnable("cpu", torch.float64)
        ('dense', 'sparse', 'cpu')
    """
    extra = ()
    if device_key.startswith("cuda"):
        extra = ("triton",) if dtype in TRITON_DTYPES and _triton_available() else ()
    elif dtype in CPU_DTYPES and _cpu_kernels_available():
        extra = ("cpu",)
    return ("dense", "sparse", *extra)


def export_backend(backend: str, packed: bool, device: torch.device, dtype: torch.dtype) -> str:
    r"""The backend a layer runs on while :mod:`strnn_fast.export` traces it.

    "triton" on CUDA, in a Triton dtype, for a layer whose backend runs the Triton kernels there
    (backend "triton") or that is stored sparse (packed: "sparse", "cpu" or a sparse "auto", whose
    CUDA sparse path is Triton); "dense" otherwise. torch.export takes neither torch's CSR
    tensors nor the C++ kernels, while the Triton forward is a ``torch.library.triton_op`` whose
    kernel AOTInductor compiles into the package.

    Example:
        >>> export_backend("sparse", True, torch.device("cpu"), torch.float32)
        'dense'
        >>> export_backend("auto", False, torch.device("cuda"), torch.float32)
        'dense'
    """
    sparse = backend == "triton" or packed
    return "triton" if device.type == "cuda" and sparse and "triton" in runnable("cuda", dtype) else "dense"


def prepare_export(layer: Any) -> str:
    r"""The backend a MaskedLinear `layer` traces through (:func:`export_backend`), its block
    layout built now when that is "triton": the tracer's fake tensors hold no mask to build it from."""
    device = layer.param_device
    name = export_backend(layer.backend, layer.packed, device, layer.param_dtype)
    if name == "triton":
        layout(layer, device)
    return name


def layout(layer: LayerLike, device: torch.device) -> tuple[BlockLayout, torch.Tensor | None]:
    r"""The layer's Triton block layout on `device` in the default tile, and its uint8 keep-mask (or None).

    The layer builds and caches both (``layer.block_layout``); this names the tile.
    """
    return layer.block_layout(device, default_block(device))


def run(name: str, layer: LayerLike, x: torch.Tensor, row_major: bool = False) -> torch.Tensor:
    r"""``act(x @ W^T + b)`` of `layer` on the backend `name` (one of :data:`NAMES`).

    Arguments:
        name: "dense", "sparse", "cpu" or "triton".
        layer: a MaskedLinear or a frozen layer.
        x: (..., in) input.
        row_major: a C-contiguous output (the "cpu" kernel writes it so; other backends' outputs
            are made contiguous). Otherwise the backend's own layout (column-major from "cpu" and
            "sparse", which the next masked layer reads without a copy).

    Raises:
        ValueError: an unknown name, or "cpu" on a device or dtype it does not run.
        RuntimeError: "triton" without the triton package, or on the CPU outside the interpreter.
    """
    if name == "cpu":
        from .csr_ops import csr_linear

        return csr_linear(x, layer.packed_values(), layer.bias, layer.csr(x.device), layer.activation, row_major)
    y = _run_other(name, layer, x)
    return y.contiguous() if row_major else y


def _run_other(name: str, layer: LayerLike, x: torch.Tensor) -> torch.Tensor:
    """:func:`run` on the backends other than "cpu", in their own output layouts."""
    if name == "dense":
        mask = layer.grad_mask()
        w = layer.dense_weight()
        y = linear(x, w, layer.bias) if mask is None else masked_dense_linear(x, w, layer.bias, mask)
        return ACTIVATIONS[layer.activation](y)
    if name == "sparse":
        y = sparse_linear(x, layer.packed_values(), layer.bias, layer.csr(x.device))
        return ACTIVATIONS[layer.activation](y)
    if name == "triton":
        try:
            from .kernels.masked_linear import masked_linear
        except ImportError as err:
            raise RuntimeError("backend='triton' needs the triton package (pip install 'strnn_fast[gpu]'), "
                               "or use backend='dense'") from err
        lay, keep = layout(layer, x.device)
        return masked_linear(x, layer.dense_weight(), layer.bias, keep, lay, layer.activation)
    raise ValueError(f"backend must be one of {NAMES}, got {name!r}")


def inference_runner(name: str, layer: LayerLike, row_major: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``x -> run(name, layer, x, row_major)`` for calls without gradients, with the layer's tensors bound once.

    Frozen models run these in sequence (:class:`strnn_fast.freeze.FrozenStrNN`): at batch 1 a
    masked layer costs a few microseconds, which the per-call lookups of :func:`run` would double.
    The runner reads the layer's tensors as they are when it is made (in-place edits are seen;
    a layer moved to another device or dtype needs a new runner).

    Example:
        >>> import torch
        >>> from strnn_fast import MaskedLinear
        >>> layer = MaskedLinear(3, 2, mask=torch.tensor([[1, 0, 0], [1, 1, 0]]), activation="relu")
        >>> x = torch.randn(4, 3)
        >>> with torch.no_grad():
        ...     bool(torch.equal(inference_runner("dense", layer)(x), run("dense", layer, x)))
        True
    """
    if name == "dense":
        w, b = layer.dense_weight().detach(), None if layer.bias is None else layer.bias.detach()
        act = ACTIVATIONS[layer.activation]
        return lambda x: act(linear(x, w, b))  # row-major already
    if name == "cpu":
        from .csr_ops import csr_runner

        return csr_runner(layer.packed_values().detach(), None if layer.bias is None else layer.bias.detach(),
                          layer.csr(torch.device("cpu")), layer.activation, row_major)
    return lambda x: run(name, layer, x, row_major)
