r"""FastStrNN: the drop-in structured MLP, trainable sparse (its layers: :mod:`strnn_fast.layer`).

``FastStrNN`` keeps the constructor of the reference's ``strnn.models.strNN.StrNN`` and gives the
same outputs for the same masks and weights (it loads the reference's checkpoints). Beyond it: a
mask-aware initialization, more activations, weights kept masked at rest (so the dense path is
plain ``F.linear``), packed storage that grows with the masks' nonzeros, CSR training
(``backend="sparse"``), the C++ CSR kernels (``backend="cpu"``), the Triton kernels, and
``backend="auto"``, which runs each layer on the backend measured fastest for its case
(:mod:`strnn_fast.dispatch`). The backends themselves live in :mod:`strnn_fast.backends`.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import backends, chain, dispatch
from ._validate import (as_binary_matrix, as_binary_sparse, as_input, as_positive_int, as_sizes, choice,
                        is_binary_array, is_scipy_sparse)
from .activations import ACTIVATIONS
from .factorize import METHODS, check_masks, factorize
from .layer import PACK_MAX_DENSITY, PACK_MIN_WEIGHTS, MaskedLinear
from .serialization import Savable

def _env_bytes(name: str, default: int) -> int:
    """A positive byte count from the environment variable `name`; a bad value warns and keeps `default`
    (it must not break ``import strnn_fast``)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(float(raw))
        if value > 0:
            return value
    except (ValueError, OverflowError):
        pass
    warnings.warn(f"{name}={raw!r} is not a positive number of bytes; using {default}", RuntimeWarning, stacklevel=2)
    return default


# A dense-storage model whose parameters, gradients and AdamW state (4 copies of the weights)
# would exceed this many bytes is refused before anything is allocated. Raise it with the
# environment variable STRNN_FAST_MAX_DENSE_BYTES or by setting strnn_fast.nn.MAX_DENSE_BYTES.
MAX_DENSE_BYTES = _env_bytes("STRNN_FAST_MAX_DENSE_BYTES", 8 << 30)
# Above this many mask entries (sum of fan_in * fan_out) the factorizer is asked for sparse masks.
SPARSE_FACTORIZE_MIN_ENTRIES = 1 << 26


class FastStrNN(Savable, nn.Module):
    r"""Structured Neural Network: an MLP whose masks make output i depend only on inputs j with A[i, j] = 1.

    Drop-in for ``strnn.models.strNN.StrNN`` (same arguments, ``.masks``, ``.A``, ``update_masks()``,
    same outputs for the same masks and weights; ``load_state_dict`` also takes the reference's
    checkpoints, keys ``net.0.weight``, ``net.0.mask``, ...).

    Arguments:
        nin: number of inputs.
        hidden_sizes: widths of the hidden layers.
        nout: number of outputs: ``A.shape[0]``, or ``k * A.shape[0]`` for k outputs per output
            row of A, output ``p * A.shape[0] + i`` being parameter p of row i.
        opt_type: factorizer, one of "greedy", "zuko", "made", "exact".
        opt_args: options for the factorizer (e.g. ``{"improve": True}`` for greedy). The
            reference's ``var_penalty_weight`` is accepted and ignored except by "exact". None:
            the class's ``default_opt_args`` (none here, the reference's in ``compat.StrNN``).
        precomputed_masks: masks to use instead of factorizing (reference orientation).
        adjacency: (n_out x nin) binary matrix. Defaults to the full lower triangle when opt_type="made".
        activation: "relu", "tanh", "softplus", "elu", "gelu" or "silu".
        backend: "auto" (measured per layer and case, see :mod:`strnn_fast.dispatch`), "dense",
            "sparse" (torch CSR, trains; parameters stored packed), "cpu" (the C++ CSR kernels;
            parameters stored packed) or "triton". A speed choice only: the initial weights for
            a seed are the same on every backend.
        init: "masked" or "kaiming" (the reference's nn.Linear default); None: the class's
            ``default_init`` ("masked" here, "kaiming" in :class:`strnn_fast.compat.StrNN`).
        reorder: permute hidden units so that fewer weight tiles are nonzero (same function,
            same variable order; see ``strnn_fast.reorder``). Default: only for backend="triton",
            because afterwards hidden unit k no longer matches the reference's unit k.

    Example:
        >>> A = np.tril(np.ones((3, 3)), -1)
        >>> net = FastStrNN(3, (8, 8), 3, adjacency=A)
        >>> net(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """

    # What init=None and opt_args=None mean: a subclass with other defaults (compat.StrNN, the
    # reference's) sets these two instead of repeating the signature.
    default_init: str = "masked"
    default_opt_args: Mapping[str, Any] = MappingProxyType({})

    def __init__(
        self,
        nin: int,
        hidden_sizes: Sequence[int],
        nout: int,
        opt_type: str = "greedy",
        opt_args: dict | None = None,
        precomputed_masks: Sequence[Any] | None = None,
        adjacency: Any = None,
        activation: str = "relu",
        backend: str = "auto",
        init: str | None = None,
        reorder: bool | None = None,
    ):
        super().__init__()
        self.nin = as_positive_int(nin, "nin")
        self.nout = as_positive_int(nout, "nout")
        self.hidden_sizes = as_sizes(hidden_sizes)
        self.opt_type = choice(opt_type, METHODS, "opt_type")
        self.opt_args = dict(self.default_opt_args if opt_args is None else opt_args)
        self.activation = choice(activation, tuple(a for a in ACTIVATIONS if a != "identity"), "activation")
        self.backend = choice(backend, backends.CHOICES, "backend")
        self.init = self.default_init if init is None else init
        self._register_load_state_dict_pre_hook(_reference_keys)

        if adjacency is None:
            if self.opt_type != "made":
                raise ValueError("adjacency must be given unless opt_type='made'")
            warnings.warn("adjacency is unspecified, defaulting to the fully autoregressive structure")
            adjacency = np.tril(np.ones((self.nin, self.nin), dtype=np.uint8), -1)
        # A scipy sparse adjacency stays sparse (a CSR array): large graphs never become dense.
        self.A = (as_binary_sparse(adjacency, "adjacency") if is_scipy_sparse(adjacency)
                  else as_binary_matrix(adjacency, "adjacency"))
        if self.A.shape[1] != self.nin:
            raise ValueError(f"adjacency must have nin={self.nin} columns, got shape {self.A.shape}")
        if self.nout % self.A.shape[0]:
            raise ValueError(f"nout={self.nout} must be a multiple k * adjacency.shape[0] of adjacency.shape[0]="
                             f"{self.A.shape[0]} (k outputs per row of the adjacency)")
        self.outputs_per_var = self.nout // self.A.shape[0]
        self._check_memory()
        self.precomputed_masks = precomputed_masks

        sizes = [self.nin, *self.hidden_sizes, self.nout]
        masks = self._masks(precomputed_masks)
        self._check_memory(masks)
        self.layers = nn.ModuleList(
            MaskedLinear(fan_in, fan_out, _out_in(mask), activation="identity" if idx == len(sizes) - 2 else self.activation,
                         init=self.init, backend=self.backend)
            for idx, (fan_in, fan_out, mask) in enumerate(zip(sizes, sizes[1:], self._replicated(masks)))
        )
        # Masks a rebuild must reuse: the given ones, or after reordering the reordered ones.
        self._saved_masks = list(masks) if precomputed_masks is not None else None
        if reorder is None:
            reorder = self.backend == "triton"
        if not isinstance(reorder, bool):
            raise TypeError(f"reorder must be True, False or None, got {reorder!r}")
        if reorder:
            from .reorder import reorder_model

            reorder_model(self)
            # Rebuilding from the reordered masks keeps save/load (and update_masks) consistent
            # with the weights.
            masks = self.masks
            self._saved_masks = masks[:-1] + [np.ascontiguousarray(masks[-1][:, : self.A.shape[0]])]
            self.precomputed_masks = self._saved_masks

    def _resolved_config(self) -> dict[str, Any]:
        # Validated values; a rebuild never reorders again (the saved masks are already reordered).
        return {"hidden_sizes": list(self.hidden_sizes), "opt_type": self.opt_type, "opt_args": self.opt_args,
                "adjacency": self.A, "precomputed_masks": self._saved_masks, "activation": self.activation,
                "backend": self.backend, "init": self.init, "reorder": False}

    def _check_memory(self, masks: list[Any] | None = None) -> None:
        """Refuses a model whose dense-stored layers would need more than MAX_DENSE_BYTES.

        Before factorizing only backend "dense"/"triton" is known to store every layer densely;
        with the masks, "auto"'s layers that would stay dense (not sparse enough to pack) count too.
        """
        sizes = [self.nin, *self.hidden_sizes, self.nout]
        shapes = list(zip(sizes, sizes[1:]))
        if masks is None:
            dense_layers = shapes if self.backend in ("dense", "triton") else []
        elif self.backend == "auto":
            dense_layers = [(a, b) for (a, b), m in zip(shapes, masks)
                            if not (_density(m) <= PACK_MAX_DENSITY and a * b >= PACK_MIN_WEIGHTS)]
        else:
            dense_layers = []
        entries = sum(a * b for a, b in dense_layers)
        if entries:
            need = 4 * entries * torch.tensor([], dtype=torch.get_default_dtype()).element_size()
            if need > MAX_DENSE_BYTES:
                raise ValueError(
                    f"hidden_sizes={self.hidden_sizes} with backend={self.backend!r} needs about {need / 2**30:.1f} GiB "
                    f"for dense weights, gradients and AdamW state, above the limit MAX_DENSE_BYTES="
                    f"{MAX_DENSE_BYTES / 2**30:.1f} GiB; use backend='sparse' (memory grows with the masks' "
                    f"nonzeros), or raise the limit with STRNN_FAST_MAX_DENSE_BYTES or strnn_fast.nn.MAX_DENSE_BYTES")

    def _factorize(self) -> list[Any]:
        opts = {k: v for k, v in self.opt_args.items() if not (k == "var_penalty_weight" and self.opt_type != "exact")}
        if self.opt_type == "exact" and "var_penalty_weight" in opts:
            opts["var_penalty"] = opts.pop("var_penalty_weight")
        sizes = [self.nin, *self.hidden_sizes, self.A.shape[0]]
        if self.backend != "dense" and sum(a * b for a, b in zip(sizes, sizes[1:])) >= SPARSE_FACTORIZE_MIN_ENTRIES:
            # Large models: scipy.sparse csr masks, never a dense (h x d) array.
            return factorize(self.A, self.hidden_sizes, self.opt_type, sparse=True, **opts)
        return factorize(self.A, self.hidden_sizes, self.opt_type, **opts)

    def _masks(self, precomputed: Sequence[Any] | None) -> list[Any]:
        if precomputed is None:
            return self._factorize()
        if isinstance(precomputed, (str, bytes)) or not isinstance(precomputed, Sequence):
            raise TypeError("precomputed_masks must be a list of 2-D arrays")
        masks = [m if is_scipy_sparse(m) or is_binary_array(m)
                 else as_binary_matrix(m, f"precomputed_masks[{i}]", allow_zero=True) for i, m in enumerate(precomputed)]
        sizes = [self.nin, *self.hidden_sizes, self.A.shape[0]]
        expected = list(zip(sizes, sizes[1:]))
        if [tuple(m.shape) for m in masks] != expected:
            raise ValueError(f"precomputed_masks must have shapes {expected}, got {[tuple(m.shape) for m in masks]}")
        if not check_masks(masks, self.A):
            raise ValueError("precomputed_masks do not have the adjacency's sparsity pattern")
        return masks

    def _replicated(self, masks: list[Any]) -> list[Any]:
        """The masks with the last one repeated k times along the outputs (k outputs per row of A)."""
        k = self.outputs_per_var
        if k == 1:
            return list(masks)
        last = masks[-1]
        if is_scipy_sparse(last):
            import scipy.sparse as sp

            return list(masks[:-1]) + [sp.hstack([last] * k, format="csr")]
        return list(masks[:-1]) + [np.concatenate([last] * k, axis=1)]

    def update_masks(self) -> None:
        """Re-computes the masks (factorizing ``A``, or from ``precomputed_masks``) and sets them on the layers.

        As the reference's method of the same name; weights off the new masks become zero.
        """
        masks = self._replicated(self._masks(self.precomputed_masks))
        for layer, mask in zip(self.layers, masks):
            layer.set_mask(_out_in(mask))

    @property
    def masks(self) -> list[np.ndarray]:
        """The layers' masks in the reference orientation (fan_in x fan_out), materialized on access."""
        return [np.ascontiguousarray(layer.keep_mask("cpu").numpy().T) for layer in self.layers]

    def backend_report(self) -> list[dict[str, Any]]:
        r"""What each layer ran (or would run) per dispatch case, and why.

        One row per (layer, case seen): layer index, shape, density, batch bucket, dtype, phase,
        device, the backend "auto" picks, the measured times in microseconds and the source
        ("measured", "file", "override"). Pin a case with :func:`strnn_fast.dispatch.override`,
        or fix a backend for every call with ``layer.backend = "sparse"``.

        Example:
            >>> net = FastStrNN(3, (8,), 3, adjacency=np.tril(np.ones((3, 3)), -1))
            >>> _ = net(torch.randn(4, 3))
            >>> sorted(net.backend_report()[0])[:4]
            ['backend', 'batch_bucket', 'density', 'device']
        """
        rows = []
        for idx, layer in enumerate(self.layers):
            for case in sorted(layer.seen_cases, key=str):
                entry = dispatch.lookup(case) or {"backend": "dense", "times_us": {}, "source": "unmeasured"}
                fixed = layer.backend != "auto"
                rows.append({
                    "layer": idx, "out": case[0], "in": case[1], "density": case[2], "batch_bucket": case[3],
                    "dtype": case[4], "phase": case[5], "device": case[6],
                    "backend": layer.backend if fixed else entry["backend"], "times_us": entry["times_us"],
                    "source": "fixed by layer.backend" if fixed else entry["source"], "packed": layer.packed,
                })
        return rows

    def forward(self, x: torch.Tensor, *, keep_layout: bool = False) -> torch.Tensor:
        """The outputs for x (..., nin), row-major; ``keep_layout=True`` returns the fused chain's
        (:mod:`strnn_fast.chain`) column-major outputs as they are, without a copy."""
        # Named errors for a numpy array or a wrong width; other float dtypes are cast to the model's.
        params = chain.params_of(self)  # its first is layer 0's weight (next(self.parameters()) took ~8 us)
        x = as_input(x, self.nin, params[0], "x")
        y = chain.forward(self, x, row_major=not keep_layout, params=params)
        if y is not None and keep_layout:
            return y
        # Sparse layers and the fused chain hand on column-major activations (no transposes between
        # layers); callers get the usual row-major layout (a strided output slows what they do next),
        # which the C++ kernel of the last layer writes itself (a copy after it cost ~5% of a d=1000
        # train step; backends.run makes another backend's output contiguous).
        return self.layered(x, row_major=True) if y is None else y

    def layered(self, x: torch.Tensor, row_major: bool = False) -> torch.Tensor:
        """The layers one by one, each on its own backend (the forward when the fused chain of
        :mod:`strnn_fast.chain` is not measured faster); the output in the last layer's layout, or
        C-contiguous with `row_major`."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, row_major=True) if row_major and i == last else layer(x)
        return x

    def block_view(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The outputs for x as (..., nout/k, k): ``[..., i, p]`` is output ``p * nout/k + i`` (k per variable).

        Example:
            >>> net = FastStrNN(3, (8,), 6, adjacency=np.tril(np.ones((3, 3)), -1))
            >>> x = torch.randn(4, 3)
            >>> torch.equal(net.block_view(x, 2)[:, 1, 0], net(x)[:, 1])
            True
        """
        # The chain's column-major outputs go to the normalizers as they are (their C++ and torch
        # paths read any strides): d=15 StrAF log_prob at batch 1024, 1.69 ms vs 1.91 with a
        # row-major copy, spline 8.2 vs 9.0; train steps equal (interleaved, 1 thread).
        return per_variable(self(x, keep_layout=True), k)

    @property
    def net(self) -> nn.ModuleList:
        """The masked layers (the reference calls its container ``net``)."""
        return self.layers


def per_variable(y: torch.Tensor, k: int) -> torch.Tensor:
    """Outputs y (..., k*d) as a (..., d, k) view: ``[..., i, p]`` is output ``p * d + i``.

    Example:
        >>> per_variable(torch.arange(6.0).view(1, 6), 2)[0, :, 1]
        tensor([3., 4., 5.])
    """
    return y.view(*y.shape[:-1], k, -1).transpose(-1, -2)


def _density(mask: Any) -> float:
    """Fraction of ones of a dense or scipy.sparse 0/1 mask."""
    nnz = mask.nnz if is_scipy_sparse(mask) else int(np.count_nonzero(mask))
    return nnz / max(mask.shape[0] * mask.shape[1], 1)


def _out_in(mask: Any) -> Any:
    """A reference-orientation (fan_in x fan_out) mask as (out, in), scipy masks staying sparse."""
    return mask.T.tocsr() if is_scipy_sparse(mask) else np.asarray(mask).T  # a view: the layer reads it once


def _reference_keys(state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: the reference's ``net.{2i}.*`` keys (Linear, activation, ...) -> ``layers.{i}.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        idx, _, rest = key[len(prefix) + 4:].partition(".")
        if idx.isdigit() and int(idx) % 2 == 0:
            state_dict[f"{prefix}layers.{int(idx) // 2}.{rest}"] = state_dict.pop(key)
