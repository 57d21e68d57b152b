r"""A FastStrNN's masked layers as one fused CPU chain: one autograd node for the whole network.

At the sizes of the paper's data (d = 15, hidden 64) a masked layer's arithmetic takes a few
microseconds, and what a flow step pays is the framework around it: per layer a module call, a
dispatch lookup, an autograd node with its Python backward, an activation and its backward. The
chain runs every layer through the C++ CSR kernels (``csrc/masked_linear.cpp``) from one
:class:`torch.autograd.Function`: the forward is one loop of kernel calls (bias and relu fused),
the first-order backward one loop of ``_C.CsrPattern.backward`` calls, and a dense-stored
layer's kept weights are gathered by the kernels themselves.

Derivatives of higher order (gradient penalties, exact divergences) are exact: under
``create_graph`` the backward recomputes the network through the per-layer ops of
:mod:`strnn_fast.csr_ops`, whose own derivatives are the same kernels.

Whether a network runs fused is measured, like a layer's backend (:mod:`strnn_fast.dispatch`):
on the first call of each (batch bucket, dtype, phase) the chain and the per-layer path are timed
on the call's shape, and the chain is kept only where the per-layer path is at least
``dispatch.MARGIN`` times slower. It applies on the CPU, in float32/float64, to networks whose
layers all have backend "auto" or "cpu" and identity or relu activations, outside
``torch.compile``, ``torch.export`` and ``torch.func`` transforms.

Example:
    >>> import numpy as np, torch
    >>> from strnn_fast import FastStrNN
    >>> net = FastStrNN(3, (8,), 3, adjacency=np.tril(np.ones((3, 3)), -1))
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(run(net, x), net.layers[1](net.layers[0](x)), atol=1e-6)
    True
"""
from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import dispatch
from ._function import apply
from .csr_ops import DTYPES, FUSED, _either_major, _index_arrays, _view
from .dense_ops import is_transposed, randn_transposed
from .sparse_ops import MaskStructure
from .timing import time_candidates


class _Layer(NamedTuple):
    """One layer of a chain: its structure, its checked C++ pattern (with the transpose, for the
    backward), relu, and for a dense-stored layer the flat indices of its kept weights."""

    structure: MaskStructure
    pattern: Any  # _C.CsrPattern
    relu: bool
    flat: Tensor | None
    flat_array: np.ndarray | None


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_CPU = torch.device("cpu")


def _layers(net: Any) -> Any:
    """net.layers without nn.Module.__getattr__ (~1 us a name; a call asked it five times)."""
    return net._modules["layers"]


def plan_of(net: Any) -> tuple[_Layer, ...]:
    """The chain of `net`'s layers, cached until a layer's structure changes."""
    hit = _PLANS.get(net)
    net_layers = _layers(net)
    # layer.csr is cached too, and rebuilt on any change of the mask (in-place edits included).
    if hit is not None and len(hit) == len(net_layers) and all(
            layer.csr(_CPU) is lay.structure for layer, lay in zip(net_layers, hit)):
        return hit
    layers = []
    for layer in net_layers:
        s = layer.csr(_CPU)
        flat = None if layer.packed else s.flat
        layers.append(_Layer(s, _index_arrays(s).pattern, layer.activation == "relu", flat,
                             None if flat is None else flat.numpy()))
    plan = _PLANS[net] = tuple(layers)
    return plan


# The weights reach the kernels as _view(w): a packed layer's values, or a dense-stored layer's
# weight flattened, whose kept entries the kernels gather through the plan's flat indices on every
# call (a cached gather would miss the updates of optimizers that write in place without bumping
# the version, as fused AdamW does; the cached view shares the storage and follows them). Made
# afresh, the weight's and the bias's views cost ~8 us a layer on the 2-core VM, a d=50 network's
# kernels ~10 us a layer at batch 64.

def forward_arrays(x: np.ndarray, plan: tuple[_Layer, ...], params: tuple[Tensor | None, ...],
                   row_major: bool = False) -> list[np.ndarray]:
    """Every layer's output (column-major (B, out) arrays; the last one C-contiguous with `row_major`) for x."""
    threads = torch.get_num_threads()
    outs = []
    h = x
    last = len(plan) - 1
    for i, lay in enumerate(plan):
        w, b = params[2 * i], params[2 * i + 1]
        h = lay.pattern.linear(h, _view(w), None if b is None else _view(b), lay.relu, threads,
                               lay.flat_array, row_major and i == last)
        outs.append(h)
    return outs


def layers_path(x: Tensor, plan: tuple[_Layer, ...], params: tuple[Tensor | None, ...]) -> Tensor:
    """The same network through the per-layer differentiable ops (any order of derivatives)."""
    from .csr_ops import csr_linear

    h = x
    for i, lay in enumerate(plan):
        w, b = params[2 * i], params[2 * i + 1]
        values = w if lay.flat is None else w.reshape(-1)[lay.flat]
        h = csr_linear(h, values, b, lay.structure, "relu" if lay.relu else "identity")
    return h


def recompute_grads(fn: Any, leaves: list[Tensor | None], needs: tuple[bool, ...], grads_out: Any) -> list[Tensor | None]:
    """Under create_graph: the gradients of `fn(*leaves)` (outputs weighted by `grads_out`) with respect
    to the leaves that `needs` marks, recomputed through differentiable ops (None for the others)."""
    wanted = [t for t, need in zip(leaves, needs) if need and t is not None]
    with torch.enable_grad():
        got = iter(torch.autograd.grad(fn(*leaves), wanted, grads_out, create_graph=True, allow_unused=True))
    return [next(got) if need and t is not None else None for t, need in zip(leaves, needs)]


def backward_arrays(g: np.ndarray, x: Tensor, outs: list[np.ndarray], plan: tuple[_Layer, ...],
                    params: tuple[Tensor | None, ...], needs: tuple[bool, ...],
                    need_x: bool) -> tuple[np.ndarray | None, list[Tensor | None]]:
    """First-order backward of the chain from the output gradient g (B, out), either layout: the input's
    gradient (a column-major array, or None) and the parameters' (``needs[i]`` marks params[i])."""
    threads = torch.get_num_threads()
    grads: list[Tensor | None] = [None] * len(params)
    gn = g
    for i in range(len(plan) - 1, -1, -1):
        lay = plan[i]
        w, b = params[2 * i], params[2 * i + 1]
        need_b = b is not None and needs[2 * i + 1]
        x_in = outs[i - 1] if i else _either_major(x.detach()).numpy()
        gx, gv, gb = lay.pattern.backward(gn, x_in, _view(w), outs[i] if lay.relu else None, i > 0 or need_x,
                                          needs[2 * i], need_b, threads,
                                          lay.flat_array)  # a dense-stored weight's gradient comes dense
        grads[2 * i] = None if gv is None else torch.from_numpy(gv)
        grads[2 * i + 1] = None if gb is None else torch.from_numpy(gb)
        gn = gx
    return (gn if need_x else None), grads


class _Chain(torch.autograd.Function):
    """y = the network's output (column-major, or C-contiguous with row_major) for x (B, in); params =
    (weight or values, bias) per layer."""

    @staticmethod
    def forward(ctx, x: Tensor, plan: tuple[_Layer, ...], row_major: bool, *params: Tensor | None) -> Tensor:
        outs = forward_arrays(_either_major(x).numpy(), plan, params, row_major)
        y = torch.from_numpy(outs[-1])
        ctx.plan, ctx.outs = plan, outs[:-1]  # the hidden outputs; y is saved (an in-place edit of it is caught)
        ctx.save_for_backward(x, y, *params)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, *params = ctx.saved_tensors
        plan, needs = ctx.plan, ctx.needs_input_grad[:1] + ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():  # create_graph: recompute through ops that differentiate again
            grads = recompute_grads(lambda x, *ps: layers_path(x, plan, ps), [x, *params], needs, g)
            return grads[0], None, None, *grads[1:]
        gx, grads = backward_arrays(_either_major(g).numpy(), x, [*ctx.outs, y.detach().numpy()], plan,
                                    tuple(params), needs[1:], needs[0])
        return (None if gx is None else torch.from_numpy(gx)), None, None, *grads


def params_of(net: Any) -> tuple[Tensor | None, ...]:
    out: list[Tensor | None] = []
    for layer in _layers(net):
        p = layer._parameters  # nn.Module.__getattr__ costs a microsecond a name
        out += [p["values"] if "values" in p else p["weight"], p.get("bias")]
    return tuple(out)


def applies(net: Any, x: Tensor) -> bool:
    """Whether `net` can run fused on `x` (see the module docstring); cheap, called per forward."""
    return _applies(net, x, params_of(net))


def _applies(net: Any, x: Tensor, params: tuple[Tensor | None, ...]) -> bool:
    # is_cpu, not device.type: no device object per tensor (asked per forward)
    if type(x) is not Tensor or not x.is_cpu or x.dtype not in DTYPES or x.dim() != 2:
        return False
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    for layer in _layers(net):
        if layer.backend not in ("auto", "cpu") or layer.activation not in FUSED:
            return False
    dtype = x.dtype
    return all(p is None or (p.dtype == dtype and p.is_cpu) for p in params)


def _training(x: Tensor, params: tuple[Tensor | None, ...]) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params))


def _run(x: Tensor, plan: tuple[_Layer, ...], params: tuple[Tensor | None, ...], training: bool,
         row_major: bool = False) -> Tensor:
    if training:
        return apply(_Chain, x, plan, row_major, *params)
    return torch.from_numpy(forward_arrays(_either_major(x).numpy(), plan, params, row_major)[-1])


def run(net: Any, x: Tensor) -> Tensor:
    """The network's output for x (B, in) through the fused chain, column-major (B, out)."""
    params = params_of(net)
    return _run(x, plan_of(net), params, _training(x, params))


class Fused(NamedTuple):
    """What a fused call of a network runs on: its plan, its parameters, and whether a gradient is taken."""

    plan: tuple[_Layer, ...]
    params: tuple[Tensor | None, ...]
    training: bool


def decided(net: Any, x: Tensor, params: tuple[Tensor | None, ...] | None = None) -> Fused | None:
    """The plan, parameters and phase where `net` runs `x` fused (the chain applies and was measured
    faster), else None; each looked up once per call (`params`: :func:`params_of`, where the caller has them)."""
    params = params_of(net) if params is None else params
    if not _applies(net, x, params):
        return None
    plan, training = plan_of(net), _training(x, params)
    return Fused(plan, params, training) if _chosen(net, x, plan, training) else None


def forward(net: Any, x: Tensor, row_major: bool = False,
            params: tuple[Tensor | None, ...] | None = None) -> Tensor | None:
    """The network's output for x through the chain where it applies and is measured faster (C-contiguous
    with `row_major`, else column-major), else None (the caller runs the layers one by one); `params`:
    :func:`params_of`, where the caller has them."""
    # A "no" is remembered for calls like the last one: deciding cost ~17 us (the checks, the plan and
    # signature lookups; ~10 us since), 8% of a d=100 MADE network's eval forward on dense layers. A stale "no"
    # (parameters frozen or moved since) can only cost speed; a "yes" is decided afresh every call.
    key = (x.shape, x.dtype, x.is_cpu, torch.is_grad_enabled(), x.requires_grad, dispatch.GENERATION[0],
           tuple(layer.backend for layer in _layers(net))) if type(x) is Tensor else None
    if key is not None and net.__dict__.get("_chain_declined") == key:
        return None
    fused = decided(net, x, params)
    if fused is None:
        if key is not None:
            net.__dict__["_chain_declined"] = key
        return None
    return _run(x, *fused, row_major)


# (layer signatures, batch bucket, dtype, training) -> {"chain": bool, "times_us": ...}, measured at
# the first call of a case. Keyed by the architecture, not the object (as dispatch's cases are), so
# that two networks alike (a model and its saved-and-loaded copy) make the same choice and agree
# bitwise.
CHOICES: dict[tuple, dict[str, Any]] = {}
# Per network: (plan, layer backends, signature), the signature recomputed when either changes.
_SIGNATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(net: Any, plan: tuple[_Layer, ...]) -> tuple:
    return tuple((layer.out_features, layer.in_features, lay.structure.nnz, layer.activation, layer.packed,
                  layer.backend) for layer, lay in zip(_layers(net), plan))


def _chosen(net: Any, x: Tensor, plan: tuple[_Layer, ...], training: bool) -> bool:
    backends = tuple(layer.backend for layer in _layers(net))
    sig = _SIGNATURES.get(net)
    if sig is None or sig[0] is not plan or sig[1] != backends:  # the plan's identity marks the masks
        sig = _SIGNATURES[net] = (plan, backends, _signature(net, plan))
    key = (sig[2], dispatch.batch_bucket(x.shape[0]), x.dtype, training)
    hit = CHOICES.get(key)
    if hit is None:
        with dispatch._LOCK:  # measured once, one measurement at a time
            hit = CHOICES.get(key)
            if hit is None:
                hit = CHOICES[key] = _measure(net, x, training)
    return hit["chain"]


def _measure(net: Any, like: Tensor, training: bool) -> dict[str, Any]:
    """Times the chain and the per-layer path on an input shaped like `like` (its layout, its need of a
    gradient); the chain wins only by ``dispatch.MARGIN``. Gradients are taken by autograd.grad:
    nothing is accumulated into the parameters' ``.grad``."""
    gen = torch.Generator().manual_seed(0)
    rows, width = like.shape
    x = randn_transposed(rows, width, dtype=like.dtype, generator=gen) if is_transposed(like) \
        else torch.randn(rows, width, dtype=like.dtype, generator=gen)
    x.requires_grad_(training and like.requires_grad)
    params = [p for p in net.parameters() if p.requires_grad]

    def timed(fused: bool):
        def fn() -> None:
            with torch.set_grad_enabled(training):
                y = run(net, x) if fused else net.layered(x)
                if training:
                    torch.autograd.grad(y, [*params, *([x] if x.requires_grad else [])], torch.ones_like(y))
        return fn

    times = time_candidates({"chain": timed(True), "layers": timed(False)})
    return {"chain": times["layers"] >= dispatch.MARGIN * times["chain"], "times_us": times}


def report(net: Any) -> list[dict[str, Any]]:
    """The measured choices for `net`'s architecture: batch bucket, dtype, phase, whether fused, times (us)."""
    sig = _signature(net, plan_of(net))
    return [{"batch_bucket": b, "dtype": str(d).removeprefix("torch."), "phase": "train" if t else "eval",
             "fused": v["chain"], "times_us": v["times_us"]}
            for (s, b, d, t), v in sorted(CHOICES.items(), key=str) if s == sig]
