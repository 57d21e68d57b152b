r"""Production inference: freeze a FastStrNN into precomputed masked weights, layouts and a CUDA graph.

A frozen model holds the masked weights (dense, and packed for the CSR path), the block layouts on its device, an
optional fp16/bf16 copy of the weights, and optionally one CUDA graph captured for a fixed batch
size, which removes the per-layer launch overhead that dominates small batches. It has no
gradients and does not follow later changes of the original model.

Example:
    >>> import numpy as np, torch
    >>> from strnn_fast import FastStrNN
    >>> net = FastStrNN(4, (16,), 4, adjacency=np.tril(np.ones((4, 4)), -1))
    >>> frozen = freeze(net)
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(frozen(x), net(x))
    True
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from . import backends, dispatch
from ._validate import as_input
from .dispatch import choose_backend
from .layout import BlockLayout
from .sparse_ops import MaskStructure


class FrozenLayer(nn.Module):
    """One frozen MaskedLinear: y = act(x @ W^T + b) with W masked at rest, on the backend the
    original layer would use for the same case (the same ``dispatch`` decision), run by
    :func:`strnn_fast.backends.run` like the original."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        device = layer.param_device
        with torch.no_grad():
            self.register_buffer("weight", layer.dense_weight().detach().to(dtype).contiguous())
            self.register_buffer("values", layer.packed_values().detach().to(dtype).contiguous())
            self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().to(dtype).clone())
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.activation = layer.activation
        self.backend = layer.backend
        self._density = layer.density()
        self.seen_cases: set = set()
        self._csr = layer.csr(device)
        self._layout = backends.layout(layer, device)[0]

    # The backend interface (strnn_fast.backends.LayerLike): precomputed, never re-derived.
    @property
    def param_dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def param_device(self) -> torch.device:
        return self.weight.device

    def dense_weight(self) -> torch.Tensor:
        return self.weight

    def packed_values(self) -> torch.Tensor:
        return self.values

    def grad_mask(self) -> None:
        return None  # no gradients

    def csr(self, device: Any = None) -> MaskStructure:
        return self._csr

    def block_layout(self, device: Any, block: tuple[int, int]) -> tuple[BlockLayout, None]:
        return self._layout, None  # masked at rest: the kernels need no keep-mask without gradients

    def dispatch_memo(self) -> dict:
        """Per-call dispatch answers (the frozen weights and mask never change)."""
        return self.__dict__.setdefault("_memo", {})

    def density(self) -> float:
        """Fraction of weights the original layer's mask keeps."""
        return self._density

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._csr = self._csr.to(self.weight.device)
        self._layout = self._layout.to(self.weight.device)
        return out

    def resolved_backend(self, x: torch.Tensor) -> str:
        """The backend of this call: the fixed one, or "auto"'s decision for this case (as the original's)."""
        return self.backend if self.backend != "auto" else choose_backend(self, x)

    def run_backend(self, backend: str, x: torch.Tensor) -> torch.Tensor:
        """The output on a given backend."""
        return backends.run(backend, self, x)

    def forward(self, x: torch.Tensor, row_major: bool = False) -> torch.Tensor:
        return backends.run(self.resolved_backend(x), self, x, row_major)


class FrozenStrNN(nn.Module):
    r"""Inference-only FastStrNN produced by :func:`freeze`; inputs are cast to its dtype.

    Calls with exactly the captured batch shape replay the CUDA graph; others run eagerly.
    """

    def __init__(self, layers: list[FrozenLayer], dtype: torch.dtype):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.dtype = dtype
        self._graph: tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor] | None = None
        self._plan: tuple[tuple, list] | None = None  # (input signature, one runner per layer)

    @torch.no_grad()
    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        # The layers run as a plan: each layer's backend for this input signature, resolved once,
        # as a runner with its tensors bound (backends.inference_runner). At batch 1 on the CPU the
        # per-layer lookups and module calls cost more than the layers. Hooks registered on the
        # inner layers are therefore not called; hooks on this module are.
        key = (x.shape, x.dtype, x.device, dispatch.GENERATION[0])
        if self._plan is not None and self._plan[0] == key:
            return _run_plan(self._plan[1], x)
        runners = []
        for i, layer in enumerate(self.layers):  # the last layer writes the row-major output
            runners.append(backends.inference_runner(layer.resolved_backend(x), layer, i == len(self.layers) - 1))
            x = runners[-1](x)
        if not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            self._plan = (key, runners)
        return x.contiguous()

    def _apply(self, fn, recurse=True):
        self._plan = None  # runners hold the tensors of the old device and dtype
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def capture(self, batch: int) -> None:
        """Captures one CUDA graph of the forward pass for inputs of shape (batch, nin)."""
        device = self.layers[0].weight.device
        static_in = torch.randn(batch, self.layers[0].weight.shape[1], device=device, dtype=self.dtype)
        # Warm up on a side stream: autotuning and lazy initialization may not run during capture.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._eager(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._eager(static_in)
        self._graph = (graph, static_in, static_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan
        if plan is not None and self._graph is None and type(x) is torch.Tensor:
            # A call like the last one (same shape, dtype and device: an input as_input passed).
            if (x.shape, x.dtype, x.device, dispatch.GENERATION[0]) == plan[0]:
                if not torch.is_grad_enabled():
                    return _run_plan(plan[1], x)
                with torch.no_grad():
                    return _run_plan(plan[1], x)
        x = as_input(x, self.layers[0].in_features, self.layers[0].weight, "x")
        if self._graph is not None and x.shape == self._graph[1].shape and x.device == self._graph[1].device:
            graph, static_in, static_out = self._graph
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()  # the next replay overwrites static_out
        return self._eager(x)


def _run_plan(runners: list, x: torch.Tensor) -> torch.Tensor:
    for run in runners:
        x = run(x)
    return x.contiguous()  # sparse layers hand on column-major activations


def freeze(model: nn.Module, dtype: torch.dtype | None = None, cuda_graph_batch: int | None = None) -> FrozenStrNN:
    r"""Freezes a FastStrNN for inference.

    Arguments:
        model: a module whose ``.layers`` are MaskedLinear applied in sequence (FastStrNN).
        dtype: torch.float32, float16 or bfloat16 for the frozen weights and computation; None
            keeps the model's dtype.
        cuda_graph_batch: capture a CUDA graph for inputs of shape (cuda_graph_batch, nin);
            the model must be on CUDA.

    Returns:
        A :class:`FrozenStrNN` that matches the model within the dtype's tolerance.

    Example:
        >>> from strnn_fast import FastStrNN
        >>> freeze(FastStrNN(2, (4,), 2, adjacency=[[0, 0], [1, 0]]), dtype=torch.float16).dtype
        torch.float16
    """
    from .layer import MaskedLinear

    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not layers or not all(isinstance(m, MaskedLinear) for m in layers):
        raise TypeError(f"model must have .layers, a ModuleList of MaskedLinear (a FastStrNN); got {type(model).__name__}")
    if dtype is not None and dtype not in backends.TRITON_DTYPES:
        raise TypeError(f"dtype must be None, torch.float32, torch.float16 or torch.bfloat16; got {dtype!r}")
    dtype = dtype or layers[0].weight.dtype
    frozen = FrozenStrNN([FrozenLayer(layer, dtype) for layer in layers], dtype)
    frozen.eval()
    if cuda_graph_batch is not None:
        if isinstance(cuda_graph_batch, bool) or not isinstance(cuda_graph_batch, int) or cuda_graph_batch <= 0:
            raise ValueError(f"cuda_graph_batch must be a positive int, got {cuda_graph_batch!r}")
        if not layers[0].weight.is_cuda:
            raise ValueError("cuda_graph_batch needs a model on CUDA; move it with model.cuda() first")
        frozen.capture(cuda_graph_batch)
    return frozen
