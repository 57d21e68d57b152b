r"""MaskedLinear and FastStrNN: the drop-in structured MLP.

``FastStrNN`` keeps the constructor of the reference's ``strnn.models.strNN.StrNN`` and gives the
same outputs for the same masks and weights. Beyond it: a mask-aware initialization, more
activations, cached masked weights in inference, and a ``backend`` switch for the Triton kernels.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import as_binary_matrix, as_input, as_positive_int, as_sizes, choice
from .activations import ACTIVATIONS, GAINS
from .factorize import METHODS, check_masks, factorize
from .serialization import Savable

BACKENDS = ("auto", "dense", "sparse", "triton")

# CPU inference switches to a CSR weight below this mask density (and batch >= 8): measured on
# 2 cores, 1 thread, at 500x500 and 2000x2000 layers, CSR addmm was 2-4x faster than dense at
# density <= 0.1 and slower from about 0.2; at batch 1 it only wins below ~0.03.
CSR_MAX_DENSITY = 0.1
CSR_MIN_BATCH = 8
INITS = ("masked", "kaiming")


class MaskedLinear(nn.Linear):
    r"""Linear layer whose weight is multiplied by a fixed binary mask, with a fused activation.

    The mask is stored like ``weight``: (out_features, in_features).

    Arguments:
        in_features: input width.
        out_features: output width.
        mask: optional (out, in) binary mask; all ones when omitted.
        activation: name of the activation applied after the affine map ("identity" for none).
        init: "masked" (Kaiming uniform with fan-in counted from the mask) or "kaiming"
            (nn.Linear's default, for parity with the reference).
        backend: "auto", "dense", "sparse" (CSR weight, inference only) or "triton".

    Example:
        >>> layer = MaskedLinear(3, 2, mask=torch.tensor([[1, 0, 0], [1, 1, 0]]))
        >>> layer(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    mask: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: Any = None,
        *,
        bias: bool = True,
        activation: str = "identity",
        init: str = "masked",
        backend: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ):
        self.activation = choice(activation, tuple(ACTIVATIONS), "activation")
        self.init = choice(init, INITS, "init")
        self.backend = choice(backend, BACKENDS, "backend")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("mask", torch.ones(out_features, in_features, device=device, dtype=self.weight.dtype))
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self._csr_cache: tuple[tuple, torch.Tensor] | None = None
        if mask is not None:
            self.set_mask(mask)
        self.reset_parameters()

    def set_mask(self, mask: Any) -> None:
        """Stores a new (out, in) binary mask and re-initializes nothing."""
        m = as_binary_matrix(mask, "mask", allow_zero=True)
        if m.shape != (self.out_features, self.in_features):
            raise ValueError(f"mask must have shape {(self.out_features, self.in_features)}, got {m.shape}")
        with torch.no_grad():
            self.mask.copy_(torch.from_numpy(m))
        self._cache = self._csr_cache = None

    def reset_parameters(self) -> None:
        if getattr(self, "init", "kaiming") == "kaiming" or not hasattr(self, "mask"):
            super().reset_parameters()
            return
        # Each unit sees only its unmasked inputs; scaling by the full width would shrink
        # activations layer after layer in sparse masks.
        fan_in = self.mask.sum(dim=1).clamp_min(1.0)
        gain = nn.init.calculate_gain(GAINS[self.activation])
        with torch.no_grad():
            bound = (gain * torch.sqrt(3.0 / fan_in)).unsqueeze(1)
            self.weight.uniform_(-1.0, 1.0).mul_(bound)
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(1.0 / torch.sqrt(fan_in))
        self._cache = None

    def inference(self) -> bool:
        """True when no gradient can flow to the weights: eval mode under no_grad, or frozen weights."""
        return not self.training and not (torch.is_grad_enabled() and self.weight.requires_grad)

    def _weights_key(self) -> tuple:
        return (self.weight._version, self.mask._version, self.weight.data_ptr(), self.mask.data_ptr(),
                self.weight.dtype, self.weight.device)

    def masked_weight(self) -> torch.Tensor:
        """W ⊙ M; in inference computed once and reused until the weight or the mask change."""
        if not self.inference():
            return self.weight * self.mask
        key = self._weights_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.weight * self.mask)
        return self._cache[1]

    def csr_weight(self) -> torch.Tensor:
        """W ⊙ M as a cached sparse CSR tensor (inference only)."""
        key = self._weights_key()
        if self._csr_cache is None or self._csr_cache[0] != key:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._csr_cache = (key, self.masked_weight().to_sparse_csr())
        return self._csr_cache[1]

    def resolved_backend(self, x: torch.Tensor) -> str:
        """The backend this call runs on.

        "auto": on CPU, dense while training and CSR in sparse inference; on CUDA, decided per
        layer by the cost model in ``strnn_fast.dispatch``.
        """
        if self.backend == "sparse" and not self.inference():
            raise ValueError("backend='sparse' is inference-only: call .eval() and run under torch.no_grad()")
        if self.backend != "auto":
            return self.backend
        if x.is_cuda:
            from .dispatch import choose_backend

            return choose_backend(self, x)
        if self.inference() and x.numel() >= CSR_MIN_BATCH * self.in_features and self.density() <= CSR_MAX_DENSITY:
            return "sparse"
        return "dense"

    def density(self) -> float:
        """Fraction of weights the mask keeps (cached with the mask)."""
        key = (self.mask._version, self.mask.data_ptr())
        if getattr(self, "_density", (None, 0.0))[0] != key:
            self._density = (key, float(self.mask.float().mean()) if self.mask.numel() else 0.0)
        return self._density[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = self.resolved_backend(x)
        if backend == "triton":
            from .dispatch import triton_forward

            return triton_forward(self, x)
        if backend == "sparse":
            flat = x.reshape(-1, self.in_features)
            bias = self.bias if self.bias is not None else torch.zeros(self.out_features, dtype=x.dtype, device=x.device)
            # CSR @ dense wants the batch on the columns.
            y = torch.addmm(bias.unsqueeze(1), self.csr_weight(), flat.T).T
            return ACTIVATIONS[self.activation](y.reshape(*x.shape[:-1], self.out_features))
        return ACTIVATIONS[self.activation](F.linear(x, self.masked_weight(), self.bias))

    def _apply(self, fn, recurse=True):  # noqa: D401 - invalidate the caches on .to()/.half()
        self._cache = self._csr_cache = None
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}, mask_density={self.density():.3f}"


class FastStrNN(Savable, nn.Module):
    r"""Structured Neural Network: an MLP whose masks make output i depend only on inputs j with A[i, j] = 1.

    Drop-in for ``strnn.models.strNN.StrNN`` (same arguments, ``.masks``, ``.A``, same outputs for
    the same masks and weights).

    Arguments:
        nin: number of inputs.
        hidden_sizes: widths of the hidden layers.
        nout: number of outputs; ``k * nin`` gives k outputs per variable, output ``p * nin + i``
            being parameter p of variable i.
        opt_type: factorizer, one of "greedy", "zuko", "made", "exact".
        opt_args: options for the factorizer (e.g. ``{"improve": True}`` for greedy). The
            reference's ``var_penalty_weight`` is accepted and ignored except by "exact".
        precomputed_masks: masks to use instead of factorizing (reference orientation).
        adjacency: (nout x nin) binary matrix, or (nin x nin) when nout = k * nin. Defaults to the
            full lower triangle when opt_type="made".
        activation: "relu", "tanh", "softplus", "elu", "gelu" or "silu".
        backend: "auto", "dense", "sparse" or "triton" (see ``MaskedLinear.resolved_backend``).
        init: "masked" (default) or "kaiming" (the reference's nn.Linear default).
        reorder: permute hidden units so that fewer weight tiles are nonzero (same function,
            same variable order; see ``strnn_fast.reorder``). Default: only for backend="triton",
            because afterwards hidden unit k no longer matches the reference's unit k.

    Example:
        >>> A = np.tril(np.ones((3, 3)), -1)
        >>> net = FastStrNN(3, (8, 8), 3, adjacency=A)
        >>> net(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """

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
        init: str = "masked",
        reorder: bool | None = None,
    ):
        super().__init__()
        self.nin = as_positive_int(nin, "nin")
        self.nout = as_positive_int(nout, "nout")
        self.hidden_sizes = as_sizes(hidden_sizes)
        self.opt_type = choice(opt_type, METHODS, "opt_type")
        self.opt_args = dict(opt_args or {})
        self.activation = choice(activation, tuple(a for a in ACTIVATIONS if a != "identity"), "activation")
        self.backend = choice(backend, BACKENDS, "backend")

        if adjacency is None:
            if self.opt_type != "made":
                raise ValueError("adjacency must be given unless opt_type='made'")
            warnings.warn("adjacency is unspecified, defaulting to the fully autoregressive structure")
            adjacency = np.tril(np.ones((self.nin, self.nin), dtype=np.uint8), -1)
        self.A = as_binary_matrix(adjacency, "adjacency")
        if self.A.shape[1] != self.nin:
            raise ValueError(f"adjacency must have nin={self.nin} columns, got shape {self.A.shape}")
        if self.A.shape[0] == self.nout:
            self.outputs_per_var = 1
        elif self.nout % self.nin == 0 and self.A.shape[0] == self.nin:
            self.outputs_per_var = self.nout // self.nin
        else:
            raise ValueError(
                f"nout={self.nout} must equal adjacency.shape[0]={self.A.shape[0]}, or be a multiple "
                f"k * nin of nin={self.nin} with a square adjacency (k outputs per variable)"
            )

        masks = self._masks(precomputed_masks)
        self.config = {
            "nin": self.nin, "hidden_sizes": list(self.hidden_sizes), "nout": self.nout,
            "opt_type": self.opt_type, "opt_args": self.opt_args, "adjacency": self.A.tolist(),
            "precomputed_masks": [m.tolist() for m in masks] if precomputed_masks is not None else None,
            "activation": self.activation, "backend": self.backend, "init": init,
        }
        k = self.outputs_per_var
        self.masks = masks[:-1] + [np.concatenate([masks[-1]] * k, axis=1)] if k > 1 else masks
        sizes = [self.nin, *self.hidden_sizes, self.nout]
        layers = []
        for idx, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            last = idx == len(sizes) - 2
            layers.append(
                MaskedLinear(fan_in, fan_out, self.masks[idx].T, activation="identity" if last else self.activation,
                             init=init, backend=self.backend)
            )
        self.layers = nn.ModuleList(layers)
        if reorder is None:
            reorder = self.backend == "triton"
        if not isinstance(reorder, bool):
            raise TypeError(f"reorder must be True, False or None, got {reorder!r}")
        if reorder:
            from .reorder import reorder_model

            reorder_model(self)
            # Rebuilding from the reordered masks keeps save/load consistent with the weights.
            self.config["precomputed_masks"] = [m.tolist() for m in self.masks[:-1]] + [
                self.masks[-1][:, : self.A.shape[0]].tolist()
            ]
        self.config["reorder"] = False

    def _masks(self, precomputed: Sequence[Any] | None) -> list[np.ndarray]:
        if precomputed is None:
            opts = {k: v for k, v in self.opt_args.items() if not (k == "var_penalty_weight" and self.opt_type != "exact")}
            if self.opt_type == "exact" and "var_penalty_weight" in opts:
                opts["var_penalty"] = opts.pop("var_penalty_weight")
            return factorize(self.A, self.hidden_sizes, self.opt_type, **opts)
        if isinstance(precomputed, (str, bytes)) or not isinstance(precomputed, Sequence):
            raise TypeError("precomputed_masks must be a list of 2-D arrays")
        masks = [as_binary_matrix(m, f"precomputed_masks[{i}]", allow_zero=True) for i, m in enumerate(precomputed)]
        sizes = [self.nin, *self.hidden_sizes, self.A.shape[0]]
        expected = list(zip(sizes, sizes[1:]))
        if [m.shape for m in masks] != expected:
            raise ValueError(f"precomputed_masks must have shapes {expected}, got {[m.shape for m in masks]}")
        if not check_masks(masks, self.A):
            raise ValueError("precomputed_masks do not have the adjacency's sparsity pattern")
        return masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Named errors for a numpy array or a wrong width; other float dtypes are cast to the model's.
        x = as_input(x, self.nin, next(self.parameters()), "x")
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def net(self) -> nn.ModuleList:
        """The masked layers (the reference calls its container ``net``)."""
        return self.layers
