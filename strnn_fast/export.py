r"""Export a trained model to one self-contained file: an AOTInductor package (``.pt2``) or ONNX.

:func:`export` traces one method of a model with :func:`torch.export.export` (a dynamic batch
dimension; the context an input where the model has one) and compiles it with AOTInductor
(``format="pt2"``) or writes it with the dynamo ONNX exporter (``format="onnx"``). The artifact
needs torch (``.pt2``: ``torch._inductor.aoti_load_package``, or ``AOTIModelPackageLoader`` in
C++) or onnxruntime, never strnn_fast.

What the trace runs, and why it exports:

* in a ``.pt2``, every CPU :class:`~strnn_fast.FastStrNN` whose masks are sparse enough as
  grouped dense products of its kept weights (:mod:`strnn_fast.grouped`: up to a batch size,
  dense beyond; a StrNN conditioner's parameters at any batch size, through one product per
  variable, in the feature-major layout the spline then computes in); on CUDA, sparse layers
  through the Triton forward kernel (a ``triton_op``: AOTInductor compiles it in); every other
  MaskedLinear on its "dense" backend (masked dense weights), since torch.export takes neither
  sparse CSR tensors nor the C++ kernels; all restored afterwards;
* every autoregressive inverse as a level plan of dense blocks (:func:`~strnn_fast.flows.levels.traceable_plan`:
  each conditioner unit once), else ``depth + 1`` full passes (no host-side early stop);
* a StrCNF's fixed-step solve unrolled in torch ops, divergence exact (``flows/fixed_step.py``);
* the spline through its torch ops (the C++ kernels are opaque to the tracer), unrolled over its
  K knots: elementwise ops and selects that Inductor fuses into one vectorized loop (no
  ``searchsorted``, gather or boolean-mask indexing), so ONNX takes it too.

Sampling methods take the base noise as an input (``noise``: draws from the model's prior, e.g.
``torch.randn`` for the normal prior), so the artifact is deterministic and reproducible;
``interventional_samples`` of a :class:`~strnn_fast.CausalFlow` also takes the ``do`` values
(one column per target fixed at export). Standardization (``Standardized``, ``CausalFlow``) is
inside the graph: inputs and outputs are in the data's units.

The artifact computes the masked function: a layer stored dense gets its weights zeroed off its
mask in the exported copy (with a warning when some were not). The dense backend trusts weights
masked at rest, while "sparse" and "cpu" read only the kept entries; so a model whose weights
were edited in place without ``MaskedLinear.apply_mask_()`` computes, in eager mode, whatever
function the backend that "auto" measured fastest for that batch size and process computes.
Such a model once looked like an AOTInductor miscompile at large batches (bench/results/export_notes.md).

The metadata (variable names, method, input and output names and shapes, versions) is stored in
the artifact: ``loader.get_metadata()["strnn_fast"]`` (a JSON string) for ``.pt2``, the
``strnn_fast`` entry of ``metadata_props`` for ONNX.

Refused (ValueError): a method the model lacks, a model or parameter that is not finite, a
CausalFlow that was never fitted ("untrained": the only model with a fitted flag; other models
are refused only when non-finite), StrCNF with an adaptive solver or implicit_adams (data-dependent
steps), the inverse and sampling of UMNN flows (a bisection that stops when every row has
converged), and in ONNX everything but forward/log_prob/transform of FastStrNN and affine/spline flows.

Example:
    >>> import numpy as np, torch, tempfile, os
    >>> net = FastStrNN(3, (8,), 3, adjacency=np.tril(np.ones((3, 3)), -1), backend="dense")
    >>> plan = methods(net)
    >>> sorted(plan)
    ['forward']
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
import torch.nn as nn

from ._files import atomic_path
from .backends import prepare_export
from .causal import CausalFlow
from .causal.queries import do_inverse
from .density import StrNNDensityEstimator
from .flows.autoregressive import FlowStep
from .flows.base import Flow
from .flows.levels import traceable_plan
from .flows.cnf import StrCNF
from .flows.conditioners import StrNNConditioner
from .flows.normalizers.base import Normalizer
from .flows.normalizers.umnn import UMNNNormalizer
from .grouped import grouped_networks
from .nn import FastStrNN, MaskedLinear
from .standardize import Standardized

__all__ = ["FORMATS", "export", "methods"]

FORMATS = ("pt2", "onnx")
#: Methods ONNX can express (affine and spline flows, FastStrNN; no sampling).
ONNX_METHODS = ("forward", "log_prob", "transform")


@dataclass
class _Plan:
    """One exportable method: its function of tensors, input names and widths, output names."""

    fn: Callable[..., Any]
    inputs: list[tuple[str, int]]
    outputs: list[str]


class _Program(nn.Module):
    # The traced module: holds the model (so its parameters become constants of the artifact).
    def __init__(self, model: nn.Module, fn: Callable[..., Any]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> Any:
        return self.fn(*args)


def _flow_plans(flow: Flow, pre: Callable | None = None, post: Callable | None = None,
                ctx: Callable | None = None, log_scale: Callable | None = None) -> dict[str, _Plan]:
    # log_prob, transform, inverse and sample of a flow, in data units when pre/post/ctx standardize.
    pre = pre or (lambda x: x)
    post = post or (lambda x: x)
    ctx = ctx or (lambda c: c)
    shift = log_scale or (lambda: 0.0)
    d, C = flow.d, flow.context_features
    data, noise = [("x", d)], [("noise", d)]
    if C:
        data, noise = data + [("context", C)], noise + [("context", C)]

    def c_of(rest: tuple) -> torch.Tensor | None:
        return ctx(rest[0]) if rest else None

    def transform(x, *rest):
        return flow.transform(pre(x), c_of(rest))

    return {
        "log_prob": _Plan(lambda x, *rest: flow.log_prob(pre(x), c_of(rest)) - shift(), data, ["log_prob"]),
        "transform": _Plan(transform, data, ["z", "log_abs_det"]),
        "inverse": _Plan(lambda z, *rest: post(flow.inverse(z, c_of(rest))), [("z", d)] + data[1:], ["x"]),
        "sample": _Plan(lambda z, *rest: post(flow.inverse(z, c_of(rest))), noise, ["x"]),
    }


def methods(model: nn.Module, do: Sequence[Any] | None = None) -> dict[str, _Plan]:
    r"""The exportable methods of ``model``: name -> plan (inputs and outputs by name).

    Arguments:
        model: FastStrNN, a flow (StrAF, ARF, GNF, StrCNF), StrNNDensityEstimator,
            ``Standardized`` of one of these, or CausalFlow.
        do: CausalFlow only: the intervened variables (names or indices) of
            ``interventional_samples``, whose values become an input.

    Raises:
        TypeError: a model of another class.
    """
    if isinstance(model, FastStrNN):
        return {"forward": _Plan(lambda x: model(x), [("x", model.layers[0].in_features)], ["y"])}
    if isinstance(model, StrNNDensityEstimator):
        return _density_plans(model)
    if isinstance(model, Flow):
        return _flow_plans(model)
    if isinstance(model, Standardized):
        if not isinstance(model.base, Flow):
            raise TypeError(f"Standardized exports a flow; its base is a {type(model.base).__name__}")
        return _standardized_plans(model)
    if isinstance(model, CausalFlow):
        return _causal_plans(model, do)
    raise TypeError(f"model must be a FastStrNN, a flow, StrNNDensityEstimator, Standardized or CausalFlow, "
                    f"got {type(model).__name__}")


def _density_plans(model: StrNNDensityEstimator) -> dict[str, _Plan]:
    d, C = model.d, model.context_features
    extra = [("context", C)] if C else []
    passes = model.depth + 1  # read here: in the trace, .max() of the levels is data-dependent

    def sample(noise: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        # The ancestral loop of StrNNDensityEstimator.sample with the noise as an input: gaussian
        # draws mean + std * noise; binary draws 1 where noise (uniform on [0, 1)) < sigmoid(logit).
        c = rest[0] if rest else None
        x = torch.zeros_like(noise)
        for lvl in range(passes):
            out = model(x, c)
            if model.data_type == "binary":
                draw = (noise < torch.sigmoid(out)).to(noise.dtype)
            else:
                mean, log_std = model._gaussian(out)
                draw = mean + torch.exp(log_std) * noise
            x = torch.where(model.level == lvl, draw, x)
        return x

    return {
        "forward": _Plan(lambda x, *rest: model(x, rest[0] if rest else None), [("x", d)] + extra, ["outputs"]),
        "log_prob": _Plan(lambda x, *rest: model.log_prob(x, rest[0] if rest else None),
                          [("x", d)] + extra, ["log_prob"]),
        "sample": _Plan(sample, [("noise", d)] + extra, ["x"]),
    }


def _data_units(model: Standardized) -> tuple[Callable, Callable, Callable]:
    # The statistics of a Standardized as plain tensor maths (its checks would be data-dependent
    # guards in the trace): rows and covariates to the base's units, latents' images back.
    c_mean, c_std = model.context_mean, model.context_std
    ctx = (lambda c: (c - c_mean) / c_std) if c_mean is not None else (lambda c: c)
    return (lambda x: (x - model.mean) / model.std), model._from_base, ctx


def _standardized_plans(model: Standardized) -> dict[str, _Plan]:
    pre, post, ctx = _data_units(model)
    return _flow_plans(model.base, pre=pre, post=post, ctx=ctx, log_scale=model.log_scale)


def _causal_plans(model: CausalFlow, do: Sequence[Any] | None) -> dict[str, _Plan]:
    flow, (pre, post, ctx) = model.standardized.base, _data_units(model.standardized)
    plans = _standardized_plans(model.standardized)

    def c_of(rest: tuple) -> torch.Tensor | None:
        return ctx(rest[0]) if rest else None

    plans["transform"] = _Plan(lambda x, *rest: flow.transform(pre(x), c_of(rest))[0], plans["transform"].inputs,
                               ["z"])
    if do is not None:
        if isinstance(do, (str, int)) or not isinstance(do, Sequence):
            raise TypeError(f"do must be a list of variables (names or indices), got {type(do).__name__}")
        idx = [i for i, _, _ in model.variables.do_items({key: 0.0 for key in do}, "do")]

        def intervene(noise: torch.Tensor, values: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            c = c_of(rest)
            return do_inverse(lambda x: flow.transform(pre(x), c)[0], lambda z: post(flow.inverse(z, c)),
                              model.flow_adjacency, noise, idx, values)

        extra = [("context", model.context_features)] if model.context_features else []
        plans["interventional_samples"] = _Plan(intervene, [("noise", model.d), ("do_values", len(idx))] + extra,
                                                ["x"])
    return plans


def _check_exportable(model: nn.Module, method: str, fmt: str) -> None:
    # Refusals before any tracing: unfitted or non-finite models, methods ONNX cannot express.
    if isinstance(model, CausalFlow) and not bool(model.fitted):
        raise ValueError("exporting an untrained model: refused (this CausalFlow was never fitted; fit or load it)")
    bad = [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"exporting a non-finite model: refused ({bad[0]} holds NaN or infinite values)")
    flow = _inner_flow(model)
    if method in ("inverse", "sample") and any(isinstance(m, UMNNNormalizer) for m in model.modules()):
        raise ValueError(f"{method!r} of a UMNN flow is not exportable: its inverse is a bisection that stops "
                         "when every row has converged (a data-dependent loop); log_prob and transform export")
    if fmt == "onnx":
        if method not in ONNX_METHODS:
            raise ValueError(f"format='onnx' cannot express {method!r} (sampling and inverses loop over passes "
                             f"of the graph); use format='pt2'. ONNX exports {', '.join(ONNX_METHODS)}")
        if isinstance(flow, StrCNF) or any(isinstance(m, UMNNNormalizer) for m in model.modules()):
            raise ValueError("format='onnx' cannot express UMNN normalizers or StrCNF (integrals solved "
                             "numerically); use format='pt2'")
        if isinstance(model, (StrNNDensityEstimator, CausalFlow)):
            raise ValueError(f"format='onnx' exports FastStrNN and affine/spline flows, not "
                             f"{type(model).__name__}; use format='pt2'")


def _inner_flow(model: nn.Module) -> nn.Module:
    if isinstance(model, Standardized):
        return model.base
    if isinstance(model, CausalFlow):
        return model.standardized.base
    return model


@contextlib.contextmanager
def export_mode(model: nn.Module, grouped: bool = True, levels: bool = True) -> Iterator[None]:
    r"""Runs ``model`` as the tracer needs it (see the module docstring), restoring it afterwards.

    ``grouped=False``: CPU networks on the dense backend too (ONNX); ``levels=False``: no level plans.

    Example:
        >>> from strnn_fast.flows import StrAF
        >>> flow = StrAF([("a", "b")], hidden_sizes=(4,), flow_steps=1, backend="sparse")
        >>> with export_mode(flow):
        ...     flow.steps[0].conditioner.net.layers[0].backend
        'dense'
        >>> flow.steps[0].conditioner.net.layers[0].backend
        'sparse'
    """
    saved: list[tuple[nn.Module, str, Any]] = []
    blocks = {m.net: m.n_params for m in model.modules() if isinstance(m, StrNNConditioner)}
    for m in model.modules():
        if isinstance(m, MaskedLinear):
            saved.append((m, "backend", m.backend))
            m.backend = prepare_export(m)  # "dense", or on CUDA "triton" for sparse layers
        elif isinstance(m, FlowStep):  # full passes, or with a StrNN conditioner each unit once
            saved += [(m, "early_stop", m.early_stop), (m, "traced_plan", m.traced_plan)]
            m.early_stop, m.traced_plan = False, traceable_plan(m) if levels else None
        elif isinstance(m, Normalizer):  # torch ops only (the spline's knot search unrolled)
            saved.append((m, "torch_only", m.torch_only))
            m.torch_only = True
        elif isinstance(m, StrCNF):  # refuses adaptive solvers before anything is traced
            saved.append((m, "unrolled_steps", m.unrolled_steps))
            m.unrolled_steps = m.fixed_steps()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), grouped_networks(model, blocks) if grouped else contextlib.nullcontext():
            yield
    finally:
        model.train(was_training)
        for m, name, value in reversed(saved):
            setattr(m, name, value)


def _mask_at_rest(model: nn.Module) -> list[str]:
    # Zeroes every dense-stored MaskedLinear's weights off its mask (a copy's); names those that had any.
    off = []
    for name, m in model.named_modules():
        if isinstance(m, MaskedLinear) and not m.packed:
            if bool((m.weight.detach() * (m.mask == 0)).any()):
                off.append(name)
            m.apply_mask_()
    return off


def _names(model: nn.Module) -> dict[str, Any]:
    inner = _inner_flow(model)
    return {"variables": getattr(model, "names", None) or getattr(inner, "names", None),
            "context_names": getattr(inner, "context_names", None)}


def export(model: nn.Module, path: str | os.PathLike, *, method: str, format: str = "pt2",
           batch: int = 2, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
           do: Sequence[Any] | None = None, force: bool = False) -> dict[str, Any]:
    r"""Exports one method of a trained model to ``path``; returns the metadata stored in it.

    Arguments:
        model: see :func:`methods`.
        path: the file to write (atomically; an existing one only with ``force=True``).
        method: "forward", "log_prob", "transform", "inverse", "sample" or (CausalFlow, with
            ``do``) "interventional_samples"; :func:`methods` lists a model's.
        format: "pt2" (AOTInductor package) or "onnx".
        batch: example batch size for the trace (>= 2; the batch dimension stays dynamic).
        dtype: the artifact's floating dtype (the model is exported in a copy of this dtype).
        device: "cpu" or "cuda".
        do: the intervened variables of ``interventional_samples``.
        force: overwrite an existing file.

    Raises:
        ValueError: unknown method or format, an untrained or non-finite model, a method the
            format cannot express, an existing file without ``force``, or a trace that failed
            (the message names the model and method).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from strnn_fast.flows import StrAF
        >>> flow = StrAF([("a", "b")], hidden_sizes=(4,), flow_steps=1)
        >>> export(flow, os.path.join(tempfile.mkdtemp(), "f.pt2"), method="fly")
        Traceback (most recent call last):
        ...
        ValueError: method 'fly' is not exportable for StrAF; choose one of inverse, log_prob, sample, transform
    """
    import copy

    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a strnn_fast model, got {type(model).__name__}")
    if method == "interventional_samples" and not isinstance(model, CausalFlow):
        raise ValueError(f"method 'interventional_samples' is a CausalFlow method, not one of {type(model).__name__}")
    if method == "interventional_samples" and do is None:
        raise ValueError("method 'interventional_samples' needs do=[variables] (their values become an input)")
    plans = methods(model, do)
    if method not in plans:
        raise ValueError(f"method {method!r} is not exportable for {type(model).__name__}; "
                         f"choose one of {', '.join(sorted(plans))}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 2:
        raise ValueError(f"batch must be an int >= 2 (a size-1 example would fix the batch dimension), got {batch!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    device = torch.device(device)
    path = os.fspath(path)
    if os.path.exists(path) and not force:
        raise ValueError(f"path {path!r} exists; pass force=True to overwrite it")
    _check_exportable(model, method, format)
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    off = _mask_at_rest(model)
    if off:
        warnings.warn(f"{len(off)} masked layer(s) of this {type(model).__name__} held nonzero weights off their "
                      f"mask (first: {off[0]}; edited in place without apply_mask_()?); the artifact zeroes them, "
                      "as the sparse and cpu backends do, so it may differ from eager on the dense backend",
                      RuntimeWarning, stacklevel=2)
    plans = methods(model, do)  # closures over the copy
    plan = plans[method]
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.randn(batch, width, generator=gen, dtype=dtype).to(device) for _, width in plan.inputs)
    meta = {"format": format, "method": method, "model": type(model).__name__, **_names(model),
            "inputs": [{"name": n, "shape": ["batch", w], "dtype": str(dtype).removeprefix("torch.")}
                       for n, w in plan.inputs],
            "outputs": plan.outputs, "device": device.type,
            "versions": {"strnn_fast": _version(), "torch": torch.__version__}}
    if do is not None:
        meta["do"] = [str(v) for v in do]
    program = _Program(model, plan.fn).eval()
    batch_dim = torch.export.Dim("batch", min=1)
    dynamic = (tuple({0: batch_dim} for _ in plan.inputs),)  # one entry: the *args of _Program.forward
    with export_mode(model, grouped=format == "pt2", levels=method not in ("forward", "log_prob", "transform")):
        try:
            if format == "onnx":
                _write_onnx(program, example, dynamic, plan, path, meta)
            else:
                _write_pt2(program, example, dynamic, path, meta)
        except (ValueError, TypeError):
            raise
        except Exception as err:  # a tracer or compiler failure, named rather than dumped
            raise ValueError(f"exporting {type(model).__name__}.{method} to {format} failed: "
                             f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    return meta


def _version() -> str:
    # The installed distribution's (not strnn_fast.__version__: the package's __init__ imports this module).
    try:
        return metadata.version("strnn_fast")
    except metadata.PackageNotFoundError:
        return "unknown"


def _write_pt2(program: nn.Module, example: tuple, dynamic: tuple, path: str, meta: dict) -> None:
    ep = torch.export.export(program, example, dynamic_shapes=dynamic)
    buffer = io.BytesIO()  # the packager wants a name ending in .pt2 or a buffer; the file is written atomically
    torch._inductor.aoti_compile_and_package(
        ep, package_path=buffer,
        # check_lowerbound off, so that AOTI_RUNTIME_CHECK_INPUTS=1 (README) does not refuse batch 1
        inductor_configs={"aot_inductor.metadata": {"strnn_fast": json.dumps(meta)},
                          "aot_inductor.check_lowerbound": False})
    _write_bytes(path, buffer.getvalue())


def _write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def _write_onnx(program: nn.Module, example: tuple, dynamic: tuple, plan: _Plan, path: str, meta: dict) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ValueError("format='onnx' needs the onnx and onnxscript packages "
                         "(pip install 'strnn_fast[export]')") from err
    onnx_program = torch.onnx.export(program, example, dynamo=True, dynamic_shapes=dynamic,
                                     input_names=[n for n, _ in plan.inputs], output_names=plan.outputs,
                                     verbose=False)
    proto = onnx_program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "strnn_fast", json.dumps(meta)
    _write_bytes(path, proto.SerializeToString())
