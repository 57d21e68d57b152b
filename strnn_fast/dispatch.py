r"""Backend dispatch for MaskedLinear: dense cuBLAS or the Triton block-sparse kernels.

``choose_backend`` decides per layer and call from the tile density, the shape and the dtype
with the cost model in ``cost_model.json`` (an analytic rule whose constants a GPU benchmark
refits; see that file's ``note`` and ``measured`` fields). ``triton_forward`` builds the layer's
block layout once, caches it on the layer (rebuilt when the mask changes) and runs the kernels.

Example:
    >>> import torch
    >>> from strnn_fast import MaskedLinear
    >>> choose_backend(MaskedLinear(4, 4), torch.randn(2, 4))  # CPU tensors always go dense
    'dense'
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .layout import BlockLayout

COST_MODEL: dict[str, Any] = json.loads(Path(__file__).with_name("cost_model.json").read_text())
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def default_block(device: torch.device) -> tuple[int, int]:
    """Tile shape (block_out, block_in) of the layouts on `device`: small in the CPU interpreter."""
    return (64, 64) if device.type == "cuda" else (16, 16)


def layer_layout(layer: nn.Module, device: torch.device) -> tuple[BlockLayout, torch.Tensor]:
    r"""The block layout and uint8 mask of a MaskedLinear on `device`, cached on the layer.

    The cache is keyed on the mask tensor and its version counter, so ``set_mask``, in-place
    edits and ``.to()`` rebuild it in eager mode. Inside ``torch.compile`` the version is not
    checked: call :func:`prepare` again after changing a mask of a compiled model.

    Returns:
        (layout, mask as a contiguous uint8 tensor on `device`).
    """
    mask = layer.mask
    block = default_block(device)
    cached = layer.__dict__.get("_triton_layout")
    # A compiled graph cannot read the version counter (it is data-dependent there): masks are
    # fixed during training, and prepare() runs before compiling.
    stale = cached is None or cached[0] is not mask or cached[2] != device or cached[3].block != block
    if stale or (not torch.compiler.is_compiling() and cached[1] != mask._version):
        keep = (mask.detach() != 0).to(device=device, dtype=torch.uint8).contiguous()
        layout = BlockLayout.from_mask(keep.cpu().numpy(), block).to(device)
        cached = (mask, mask._version, device, layout, keep)
        layer.__dict__["_triton_layout"] = cached  # a plain attribute: not a buffer, never saved
    return cached[3], cached[4]


def prepare(model: nn.Module, device: torch.device | str | None = None) -> None:
    r"""Builds the layouts of every MaskedLinear in `model` ahead of ``torch.compile``.

    Building a layout calls the C++ core, which a compiled graph cannot contain; with the
    layouts in place, ``torch.compile(model, fullgraph=True)`` has no graph break.

    Arguments:
        model: any module holding MaskedLinear layers.
        device: where the layouts go; defaults to each layer's weight device.
    """
    from .nn import MaskedLinear

    for layer in model.modules():
        if isinstance(layer, MaskedLinear):
            layer_layout(layer, torch.device(device) if device is not None else layer.weight.device)


def predicted_times(density: float, m: int, n: int, k: int, dtype: torch.dtype, train: bool) -> tuple[float, float]:
    r"""Cost-model times in microseconds (dense, triton) of one layer.

    Arguments:
        density: tile density of the layer's layout.
        m, n, k: batch rows, output and input width.
        dtype: compute dtype (float32 counts as TF32 when ``torch.backends.cuda.matmul.allow_tf32``).
        train: forward + backward instead of the forward only.

    Example:
        >>> dense, triton = predicted_times(0.1, 4096, 4096, 4096, torch.bfloat16, False)
        >>> triton < dense
        True
    """
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(dtype)
    if name is None:
        name = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "float32"
    phase = "train" if train else "forward"
    flops = 2.0 * m * n * k * (3.0 if train else 1.0)
    peak = COST_MODEL["peak_tflops"][name] * 1e6  # flops per microsecond
    times = []
    for backend, work in (("dense", 1.0), ("triton", density)):
        c = COST_MODEL[backend][name][phase]
        times.append(c["overhead_us"] + flops * work / (peak * c["efficiency"]))
    return times[0], times[1]


def choose_backend(layer: nn.Module, x: torch.Tensor) -> str:
    r"""Picks "dense" or "triton" for one call of a MaskedLinear.

    CPU inputs, dtypes the kernels lack and dtype mismatches go dense; otherwise the cost model
    compares the two at this layer's tile density and the call's batch size. While the cost model
    is not fitted to GPU measurements (``"measured": false`` in cost_model.json) "auto" stays
    dense: unfitted constants cannot promise never to be slower than cuBLAS.

    Arguments:
        layer: the MaskedLinear.
        x: its input.

    Returns:
        "dense" or "triton".
    """
    if not x.is_cuda or x.dtype not in _KERNEL_DTYPES or layer.weight.dtype != x.dtype:
        return "dense"
    if not COST_MODEL.get("measured", False):
        return "dense"
    layout, _ = layer_layout(layer, x.device)
    m = x.numel() // max(x.shape[-1], 1)
    train = torch.is_grad_enabled() and (x.requires_grad or layer.weight.requires_grad)
    dense, triton = predicted_times(layout.density, m, layer.out_features, layer.in_features, x.dtype, train)
    return "triton" if dense >= COST_MODEL["margin"] * triton else "dense"


def triton_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""Runs a MaskedLinear through the Triton block-sparse kernels.

    Raises:
        RuntimeError: triton is not installed, or x is on the CPU and the kernels were not
            loaded in the interpreter (TRITON_INTERPRET=1 before importing strnn_fast).
    """
    try:
        from .kernels.masked_linear import masked_linear
    except ImportError as err:  # triton is an optional dependency
        raise RuntimeError("backend='triton' needs the triton package (pip install 'strnn_fast[gpu]'), "
                           "or use backend='dense'") from err
    layout, keep = layer_layout(layer, x.device)
    return masked_linear(x, layer.weight, layer.bias, keep, layout, layer.activation)
