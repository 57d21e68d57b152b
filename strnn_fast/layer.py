r"""MaskedLinear: a linear layer restricted to a fixed binary mask, stored dense or packed.

The layer owns everything derived from its mask (CSR structure, block layouts, density), its
storage (a dense weight and mask, or only the kept weights), their initialization and their
conversion to and from state dicts; :mod:`strnn_fast.backends` computes it and
:mod:`strnn_fast.dispatch` decides, for backend="auto", which backend runs a call.
:class:`~strnn_fast.nn.FastStrNN` stacks these layers.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from . import backends, dispatch
from ._validate import as_positive_int, choice
from .activations import ACTIVATIONS, GAINS
from .csr_ops import forget_views
from .layout import BlockLayout
from .sparse_ops import MaskStructure, scatter_dense

__all__ = ["MaskedLinear", "INITS", "PACK_MAX_DENSITY", "PACK_MIN_WEIGHTS"]

INITS = ("masked", "kaiming")
# backend="auto" stores a layer packed (only the mask's nonzeros) when its mask keeps at most this
# fraction of a weight matrix of at least PACK_MIN_WEIGHTS entries: the values, their gradient and
# the optimizer state then shrink with the nonzeros (the per-layer dispatch timings do not see the
# optimizer step, which packing speeds up too), and the dense path, when the measured dispatch picks
# it, pays one scatter of the values per call. Measured on 2 cores, 1 thread: at d=100, hidden
# (200, 200), masks 1-4% dense, a packed train step (AdamW included) took 1.5 ms against 2.3 ms dense;
# CSR kernels lose to dense from about 10-20% density (MADE's 50% masks stay dense).
PACK_MAX_DENSITY = 0.1
PACK_MIN_WEIGHTS = 1 << 12


class MaskedLinear(nn.Module):
    r"""Linear layer restricted to a fixed binary mask, with a fused activation.

    The layer alone owns everything derived from its mask (CSR structure and its transpose,
    block layouts, density); every change of the mask goes through :meth:`set_mask` (or loading,
    or :meth:`permute_`), which invalidates all of it at once. Weights are kept masked at rest:
    masked-out entries are exactly zero and never receive gradient, so no backend multiplies by
    the mask per call and the dense path is plain ``F.linear``.

    Storage is either dense (``weight`` (out, in) parameter and ``mask`` buffer, the reference's
    state_dict keys) or packed (``values``: one parameter entry per kept weight, in CSR order,
    with ``crow_indices``/``col_indices`` buffers): memory then grows with the mask's nonzeros.
    Either way ``.weight`` and ``.mask`` read as dense (out, in) tensors (materialized when
    packed; write through :meth:`set_weight`), and ``load_state_dict`` accepts both layouts.

    Arguments:
        in_features: input width.
        out_features: output width.
        mask: optional (out, in) binary mask (dense, or scipy.sparse kept sparse); all ones when omitted.
        bias: whether the layer has a bias.
        activation: name of the activation applied after the affine map ("identity" for none).
        init: "masked" (Kaiming uniform with fan-in counted from the mask) or "kaiming"
            (nn.Linear's default, for parity with the reference).
        backend: "dense" (``F.linear``), "sparse" (torch CSR SpMM/SDDMM, training included),
            "cpu" (the C++ CSR kernels: CPU, float32/float64, any order of derivatives),
            "triton" (block-sparse kernels) or "auto" (per call, the measured choice of
            :mod:`strnn_fast.dispatch`; dense where nothing is measured). The backend is a speed
            choice only: the same seed gives the same initial weights on every backend.
        packed: store only the mask's nonzeros. Default: for backend="sparse" or "cpu", and for "auto"
            when the layer is large and sparse (see ``PACK_MAX_DENSITY``).

    Example:
        >>> layer = MaskedLinear(3, 2, mask=torch.tensor([[1, 0, 0], [1, 1, 0]]))
        >>> layer(torch.randn(5, 3)).shape
        torch.Size([5, 2])
        >>> layer.weight[0, 1].item()  # masked out: zero at rest
        0.0
    """

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
        packed: bool | None = None,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        self.in_features = as_positive_int(in_features, "in_features")
        self.out_features = as_positive_int(out_features, "out_features")
        self.activation = choice(activation, tuple(ACTIVATIONS), "activation")
        self.init = choice(init, INITS, "init")
        self.backend = choice(backend, backends.CHOICES, "backend")
        shape = (self.out_features, self.in_features)
        structure = (MaskStructure.from_dense(np.ones(shape, dtype=np.uint8)) if mask is None
                     else MaskStructure.from_mask(mask, shape))
        if packed is None:
            packed = self.backend in ("sparse", "cpu") or (
                self.backend == "auto" and structure.density <= PACK_MAX_DENSITY
                and shape[0] * shape[1] >= PACK_MIN_WEIGHTS)
        if not isinstance(packed, bool):
            raise TypeError(f"packed must be True, False or None, got {packed!r}")
        factory = {"device": device, "dtype": dtype}
        self._derived: dict[Any, Any] = {}
        self.seen_cases: set = set()  # dispatch cases this layer ran (for backend reports)
        if packed:
            self.values = nn.Parameter(torch.empty(structure.nnz, **factory))
            self.register_buffer("crow_indices", structure.crow.to(device))
            self.register_buffer("col_indices", structure.col.to(device))
        else:
            self.weight = nn.Parameter(torch.empty(shape, **factory))
            self.register_buffer("mask", structure.dense(self.weight.dtype).to(device))
        self.invalidate(structure)
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self.reset_parameters()

    # ------------------------------------------------------------------ storage views
    @property
    def packed(self) -> bool:
        """Whether only the mask's nonzeros are stored."""
        return "values" in self._parameters

    def __getattr__(self, name: str) -> Any:
        if name in ("weight", "mask") and "values" in self.__dict__.get("_parameters", {}):
            # Packed storage: dense views, materialized on request (grad flows to the values).
            s = self.csr(self.values.device)
            return scatter_dense(self.values, s) if name == "weight" else s.dense(self.values.dtype)
        return super().__getattr__(name)

    @property
    def param_dtype(self) -> torch.dtype:
        return (self.values if self.packed else self.weight).dtype

    @property
    def param_device(self) -> torch.device:
        return (self.values if self.packed else self.weight).device

    def _mask_key(self, compiling: bool | None = None) -> tuple:
        # Dense storage also follows in-place edits of the mask buffer (eager mode only).
        if self.packed or (torch.compiler.is_compiling() if compiling is None else compiling):
            return ()
        m = self._buffers["mask"]
        return (m._version, m.data_ptr())

    def _get(self, what: Any, build):
        # The one invalidation rule: everything derived was built at one mask key; a different key
        # (set_mask, loading, permute_, .to(), an in-place edit of the mask buffer) drops it all.
        # (Asked per forward by the fused chain: each Python call here counts, ~1 us a layer.)
        if not torch.compiler.is_compiling():
            key = self._mask_key(False)
            if self._derived.get("_key", key) != key:
                self._derived.clear()
            self._derived["_key"] = key
        hit = self._derived.get(what)
        if hit is None:
            hit = self._derived[what] = build()
        return hit

    def invalidate(self, structure: MaskStructure | None = None) -> None:
        """Drops every derived structure; `structure` (CPU) seeds the new one when the caller has it."""
        self._derived.clear()
        self._last_dispatch = None
        if structure is not None:
            self._derived["_key"] = self._mask_key()
            self._derived["csr", torch.device("cpu")] = structure

    def csr(self, device: torch.device | str | None = None) -> MaskStructure:
        """The mask's CSR structure (and its transpose) on `device`, cached until the mask changes."""
        if not isinstance(device, torch.device):
            device = torch.device(device) if device is not None else self.param_device

        def build() -> MaskStructure:
            if device.type != "cpu":
                return self.csr(torch.device("cpu")).to(device)
            if self.packed:
                return MaskStructure.from_csr((self.out_features, self.in_features), self.crow_indices.cpu(),
                                              self.col_indices.cpu())
            return MaskStructure.from_dense(self._buffers["mask"])

        return self._get(("csr", device), build)

    def density(self) -> float:
        """Fraction of weights the mask keeps."""
        return self._get("density", lambda: self.csr(torch.device("cpu")).density)

    def dispatch_memo(self) -> dict:
        """Per-call dispatch answers of this layer (owned here so that a mask change drops them)."""
        return self._get("dispatch_memo", dict)

    def keep_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(out, in) uint8 keep-mask on `device` (materialized, cached)."""
        device = torch.device(device) if device is not None else self.param_device
        return self._get(("keep", device), lambda: self.csr(device).dense(torch.uint8).contiguous())

    def block_layout(self, device: torch.device | str, block: tuple[int, int]) -> tuple[BlockLayout, torch.Tensor]:
        """(BlockLayout of the mask in `block` tiles on `device`, uint8 keep-mask), cached."""
        device = torch.device(device)

        def build() -> BlockLayout:
            return BlockLayout.from_mask(self.keep_mask("cpu").numpy(), block).to(device)

        return self._get(("layout", device, tuple(block)), build), self.keep_mask(device)

    def dense_weight(self) -> torch.Tensor:
        """The (out, in) weight, zero off the mask (a scatter of the values when packed)."""
        return self.weight

    def grad_mask(self) -> torch.Tensor | None:
        """The mask a dense weight's gradient is restricted to; None when packed (a scatter's
        gradient reaches only the kept values)."""
        return None if self.packed else self._buffers["mask"]

    def packed_values(self) -> torch.Tensor:
        """The kept weights in CSR order (a gather of the dense weight when not packed; differentiable)."""
        if self.packed:
            return self.values
        return self.weight.reshape(-1)[self.csr(self.weight.device).flat]

    # ------------------------------------------------------------------ mutation
    @torch.no_grad()
    def set_mask(self, mask: Any) -> None:
        """Sets a new (out, in) binary mask (dense or scipy.sparse); weights off it become zero.

        Kept weights keep their values; newly unmasked ones start at zero. A packed layer gets a
        new ``values`` parameter when the number of nonzeros changes: create optimizers after.
        """
        new = MaskStructure.from_mask(mask, (self.out_features, self.in_features))
        self._set_structure(new)

    def _set_structure(self, new: MaskStructure) -> None:
        if self.packed:
            old = self.csr(torch.device("cpu"))
            vals = self.values.detach()
            out = vals.new_zeros(new.nnz)
            if old.nnz:  # kept weights keep their values
                pos = torch.searchsorted(old.flat, new.flat).clamp_max(old.nnz - 1)
                hit = old.flat[pos] == new.flat
                out[hit.to(out.device)] = vals[pos[hit].to(vals.device)]
            if new.nnz == vals.numel():
                self.values.copy_(out)
            else:
                self.values = nn.Parameter(out, requires_grad=self.values.requires_grad)
            self.crow_indices = new.crow.to(self.crow_indices.device)
            self.col_indices = new.col.to(self.col_indices.device)
        else:
            self._buffers["mask"].copy_(new.dense(self.weight.dtype))
            self.weight.masked_fill_(self._buffers["mask"] == 0, 0.0)
        self.invalidate(new)

    @torch.no_grad()
    def set_weight(self, weight: Any) -> None:
        """Copies an (out, in) weight in, keeping only its entries on the mask."""
        w = torch.as_tensor(weight)
        if w.shape != (self.out_features, self.in_features):
            raise ValueError(f"weight must have shape {(self.out_features, self.in_features)}, got {tuple(w.shape)}")
        if self.packed:
            s = self.csr(self.values.device)
            self.values.copy_(w.to(self.values.device).reshape(-1)[s.flat])
        else:
            self.weight.copy_(w)
            self.weight.masked_fill_(self._buffers["mask"] == 0, 0.0)

    @torch.no_grad()
    def apply_mask_(self) -> MaskedLinear:
        """Zeroes the weights off the mask again, after editing ``weight`` in place by hand.

        Optimizers never need it (masked-out weights get zero gradient); code that adds noise
        to or copies into ``weight`` directly does. A packed layer has nothing off its mask.
        """
        if not self.packed:
            self.weight.masked_fill_(self._buffers["mask"] == 0, 0.0)
        return self

    @torch.no_grad()
    def zero_(self) -> MaskedLinear:
        """Sets all weights and the bias to zero (e.g. an identity-initialized flow's last layer)."""
        (self.values if self.packed else self.weight).zero_()
        if self.bias is not None:
            self.bias.zero_()
        return self

    @torch.no_grad()
    def permute_(self, out_perm: Any = None, in_perm: Any = None) -> None:
        """Reorders output units (rows) and/or input units (columns): new position k holds old unit perm[k]."""
        dev = self.param_device
        po = None if out_perm is None else torch.as_tensor(out_perm, dtype=torch.int64)
        pi = None if in_perm is None else torch.as_tensor(in_perm, dtype=torch.int64)
        if self.packed:
            s = self.csr(torch.device("cpu"))
            rows = torch.repeat_interleave(torch.arange(self.out_features), s.crow.diff())
            cols = s.col
            if po is not None:
                rows = torch.argsort(po)[rows]
            if pi is not None:
                cols = torch.argsort(pi)[cols]
            order = torch.argsort(rows * self.in_features + cols)
            rows, cols = rows[order], cols[order]
            crow = torch.zeros(self.out_features + 1, dtype=torch.int64)
            crow[1:] = torch.cumsum(torch.bincount(rows, minlength=self.out_features), 0)
            self.values.copy_(self.values[order.to(dev)])
            new = MaskStructure.from_csr((self.out_features, self.in_features), crow, cols)
            self.crow_indices = new.crow.to(dev)
            self.col_indices = new.col.to(dev)
            self.invalidate(new)
        else:
            for t, dim, p in ((self.weight, 0, po), (self._buffers["mask"], 0, po),
                              (self.weight, 1, pi), (self._buffers["mask"], 1, pi)):
                if p is not None:
                    t.copy_(t.index_select(dim, p.to(t.device)))
            self.invalidate()
        if po is not None and self.bias is not None:
            self.bias.copy_(self.bias[po.to(self.bias.device)])

    def reset_parameters(self) -> None:
        """Re-draws weights and bias ("masked": fan-in counted from the mask; "kaiming": nn.Linear's rule).

        The random numbers drawn depend only on the mask, the init and the dtype, never on the
        storage or backend: "masked" draws one number per kept weight in CSR (row-major) order,
        "kaiming" draws the full (out, in) matrix as ``nn.Linear`` does (row blocks at a time when
        packed) and keeps the entries on the mask. So the same seed gives bit-identical weights
        packed or dense, on every backend.
        """
        s = self.csr(torch.device("cpu"))
        dtype, device = self.param_dtype, self.param_device
        with torch.no_grad():
            if self.init == "kaiming":  # nn.Linear's rule: U(-1/sqrt(in), 1/sqrt(in)) for both
                bound_b = torch.tensor(1.0 / math.sqrt(self.in_features), dtype=torch.float64)
                values = self._kaiming_values(s, dtype, device)
            else:
                # Each unit sees only its unmasked inputs; scaling by the full width would shrink
                # activations layer after layer in sparse masks.
                fan_in = s.crow.diff().to(torch.float64).clamp_min(1.0)
                gain = nn.init.calculate_gain(GAINS[self.activation])
                rows = torch.repeat_interleave(torch.arange(self.out_features), s.crow.diff())
                bound_w = (gain * torch.sqrt(3.0 / fan_in))[rows]
                bound_b = 1.0 / torch.sqrt(fan_in)
                values = torch.empty(s.nnz, dtype=dtype, device=device).uniform_(-1.0, 1.0)
                values.mul_(bound_w.to(values))
            if self.packed:
                self.values.copy_(values)
            else:
                self.weight.zero_()
                self.weight.view(-1)[s.flat.to(device)] = values
            if self.bias is not None and self.init == "kaiming":
                self.bias.uniform_(-float(bound_b), float(bound_b))
            elif self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_(bound_b.to(self.bias))

    def _kaiming_values(self, s: MaskStructure, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """nn.Linear's weight draws (kaiming_uniform_, a=sqrt(5)) at the kept entries, in CSR order.

        The (out, in) matrix is drawn in row blocks of about 2^22 entries: the generator's stream
        is the same as one draw of the whole matrix, and memory stays bounded for packed layers.
        """
        # nn.init.kaiming_uniform_'s arithmetic, step for step, so that the bound matches to the bit.
        bound = math.sqrt(3.0) * (nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(self.in_features))
        rows_per = max(1, (1 << 22) // self.in_features)
        parts = []
        for r0 in range(0, self.out_features, rows_per):
            r1 = min(r0 + rows_per, self.out_features)
            block = torch.empty((r1 - r0) * self.in_features, dtype=dtype, device=device).uniform_(-bound, bound)
            lo, hi = int(s.crow[r0]), int(s.crow[r1])
            parts.append(block[(s.flat[lo:hi] - r0 * self.in_features).to(device)])
        return torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=device)

    # ------------------------------------------------------------------ compute
    def decision(self, batch: int, phase: str, dtype: torch.dtype | None = None, device: Any = None) -> str:
        """What backend="auto" runs for this case (the dispatch table's answer; no measuring)."""
        return dispatch.decide((self.out_features, self.in_features), self.density(), batch,
                               dtype or self.param_dtype, phase, device if device is not None else self.param_device)

    def resolved_backend(self, x: torch.Tensor) -> str:
        """The backend this call runs on: the fixed one, or for "auto" the dispatch's measured choice."""
        if self.backend != "auto":
            return self.backend
        if torch.compiler.is_compiling():
            return dispatch.choose_backend(self, x)
        # The common case, a call like the previous one, answered from a few cheap attributes
        # (the per-call cost of "auto"). Any backend computes the same function, so a stale answer
        # (after e.g. freezing the parameters) can only cost speed; mask changes clear it
        # (invalidate), table changes bump dispatch.GENERATION.
        key = (x.shape, x.dtype, bool(getattr(x, "is_cuda", False)), torch.is_grad_enabled(),
               bool(getattr(x, "requires_grad", False)), dispatch.GENERATION[0])
        last = self._last_dispatch
        if last is not None and last[0] == key:
            return last[1]
        backend = dispatch.choose_backend(self, x)
        self._last_dispatch = (key, backend)
        return backend

    def run_backend(self, backend: str, x: torch.Tensor) -> torch.Tensor:
        """The layer's output on a given backend (all agree to rounding; see :mod:`strnn_fast.backends`)."""
        return backends.run(backend, self, x)

    def forward(self, x: torch.Tensor, row_major: bool = False) -> torch.Tensor:
        """The output for x (..., in); `row_major`: C-contiguous (see :func:`strnn_fast.backends.run`)."""
        return backends.run(self.resolved_backend(x), self, x, row_major)

    # ------------------------------------------------------------------ state
    def _apply(self, fn, recurse=True):  # .to()/.half(): derived tensors live on devices, rebuild them
        structure = self._derived.get(("csr", torch.device("cpu")))
        out = super()._apply(fn, recurse)
        self.invalidate(structure)  # the CPU structure does not depend on device or dtype
        forget_views(self._parameters.values())
        return out

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Accepts dense (weight [+ mask], the reference's keys) and packed (values + CSR) checkpoints
        # whatever this layer's storage, converting on the way in.
        names = ("weight", "mask", "values", "crow_indices", "col_indices", "bias")
        got = {n: state_dict[prefix + n] for n in names if prefix + n in state_dict}
        for key in state_dict:
            if key.startswith(prefix) and "." not in key[len(prefix):] and key[len(prefix):] not in names:
                unexpected_keys.append(key)
        shape = (self.out_features, self.in_features)
        try:
            with torch.no_grad():
                if "crow_indices" in got and "col_indices" in got:
                    self._set_structure(MaskStructure.from_csr(shape, got["crow_indices"], got["col_indices"]))
                elif "mask" in got:
                    self._set_structure(MaskStructure.from_mask(got["mask"], shape, prefix + "mask"))
                else:
                    missing_keys.append(prefix + ("crow_indices" if self.packed else "mask"))
                if "values" in got:
                    s = self.csr(torch.device("cpu"))
                    if got["values"].shape != (s.nnz,):
                        raise ValueError(f"{prefix}values must have shape ({s.nnz},), got {tuple(got['values'].shape)}")
                    if self.packed:  # packed to packed: never through a dense (out, in) weight
                        self.values.copy_(got["values"].detach().to(self.values))
                    else:
                        self.set_weight(scatter_dense(got["values"].detach().cpu(), s))
                elif "weight" in got:
                    self.set_weight(got["weight"].detach().cpu())
                else:
                    missing_keys.append(prefix + ("values" if self.packed else "weight"))
                if self.bias is not None:
                    if "bias" not in got:
                        missing_keys.append(prefix + "bias")
                    elif got["bias"].shape != self.bias.shape:
                        raise ValueError(f"{prefix}bias must have shape {tuple(self.bias.shape)}, got {tuple(got['bias'].shape)}")
                    else:
                        self.bias.copy_(got["bias"])
                elif "bias" in got:
                    unexpected_keys.append(prefix + "bias")
        except ValueError as err:
            error_msgs.append(str(err))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activation={self.activation}, mask_density={self.density():.3g}, packed={self.packed}")
