r"""Backend dispatch for masked layers: measured once per case, cached, never guessed.

This module only decides: it answers a backend *name*; :mod:`strnn_fast.backends` runs it.
A *case* is (layer shape, mask density, batch bucket, dtype, phase, device). :func:`decide` is
the one pure decision: it looks the case up in a table of measured decisions and answers
"dense" where nothing was measured (or where the recorded backend cannot run the case).
``MaskedLinear`` (backend="auto") and ``freeze`` both call it, through :func:`choose_backend`,
so a frozen layer and its original make the same choice.

On the CPU an unmeasured case is timed on its first call (:func:`time_candidates`, on clones of
the layer, so autograd and the caller's tensors are untouched; never inside ``torch.compile``)
and the winner recorded. Leaving dense needs a margin: another backend wins only when dense
is at least ``MARGIN`` (1.1) times slower (for a packed layer, whose own path is the sparse one,
leaving sparse needs the same margin; see :func:`record`). CUDA cases are never timed implicitly: they stay
dense until a measurement is loaded or made with :func:`measure_model` (the GPU benchmark
does this and writes the table with :func:`save_decisions`; :func:`load_decisions` reads it
back; the environment variable ``STRNN_FAST_DISPATCH_FILE`` names a file loaded at import,
and the package's own ``dispatch_decisions.json`` is always loaded first). :func:`override`
pins a case to a backend by hand.

Thread safety: a case is measured once, under a lock, and every thread then runs the backend
recorded; timing draws its inputs from a private generator, never from the global RNG.

Example:
    >>> import torch
    >>> from strnn_fast import MaskedLinear
    >>> decide((4, 4), 1.0, 2, torch.float32, "eval", "cuda:Unmeasured GPU")  # nothing measured
    'dense'
"""
from __future__ import annotations

import copy
import json
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import backends
from .timing import time_candidates

MARGIN = 1.1
# Packed layers whose dense weight would exceed this are not timed (nor run) on the dense path.
DENSE_PROBE_MAX_BYTES = 256 << 20
PHASES = ("eval", "train")
DEFAULT_FILE = Path(__file__).with_name("dispatch_decisions.json")
# Layers with fewer weights are never timed implicitly and run on their native path: their work is
# microseconds, below the timing noise of a busy machine (a 20x16 layer was once "measured" faster
# on the sparse path), and no backend beats one small GEMM there. measure_layer still times them.
MIN_TIMED_WEIGHTS = 1 << 12

# (out, in, density, batch bucket, dtype, phase, device) -> {"backend", "times_us", "source"}
Case = tuple[int, int, float, int, str, str, str]
DECISIONS: dict[Case, dict[str, Any]] = {}
# Bumped at every change of DECISIONS made through this module: layers memoize their per-call
# answers against it, which keeps the per-call dispatch cost to a dict lookup.
GENERATION = [0]
# Held while a case is measured and recorded: concurrent first calls of one case measure it once
# and all run the backend recorded (threads never disagree on a case).
_LOCK = threading.RLock()


def batch_bucket(rows: int) -> int:
    """The power of two at or above `rows` (at least 1): cases are measured per bucket."""
    return 1 << max(int(rows) - 1, 0).bit_length()


def device_key(device: Any) -> str:
    """"cpu", or "cuda:<device name>" so that a table measured on one GPU model is not used on another."""
    kind = getattr(device, "type", str(device))
    if kind != "cuda":
        return str(kind)
    try:
        return f"cuda:{torch.cuda.get_device_name(device)}"
    except Exception:  # a stand-in device, or no driver: an unmeasured name
        return "cuda:unknown"


def make_case(shape: tuple[int, int], density: float, batch: int, dtype: torch.dtype, phase: str, device: Any) -> Case:
    """Normalizes a case: density to 2 significant digits, batch to its bucket, names for dtype and device."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    dens = float(f"{float(density):.2g}")
    dev = device if isinstance(device, str) else device_key(device)
    return (int(shape[0]), int(shape[1]), dens, batch_bucket(batch), str(dtype).replace("torch.", ""), phase, dev)


def decide(shape: tuple[int, int], density: float, batch: int, dtype: torch.dtype, phase: str, device: Any,
           table: dict[Case, dict[str, Any]] | None = None) -> str:
    r"""The backend for one case: the measured (or overridden) choice, else "dense".

    A recorded backend that cannot run the case (a table that pins "triton" on the CPU, "cpu"
    on CUDA, or a dtype the kernels lack) answers "dense" instead.

    Arguments:
        shape: (out, in) of the layer.
        density: fraction of weights its mask keeps.
        batch: rows of the input (bucketed to a power of two).
        dtype: compute dtype.
        phase: "eval" (no gradient) or "train" (forward + backward).
        device: torch.device, or a device key string as :func:`device_key` returns.
        table: decisions to consult; the module's ``DECISIONS`` by default.

    Example:
        >>> decide((8, 8), 0.5, 3, torch.float32, "train", "cpu", table={})
        'dense'
    """
    case = make_case(shape, density, batch, dtype, phase, device)
    entry = (DECISIONS if table is None else table).get(case)
    if entry is None or entry["backend"] not in backends.runnable(case[6], dtype):
        return "dense"
    return entry["backend"]


def phase_of(x: torch.Tensor, params: Iterable[torch.Tensor]) -> str:
    """"train" when this call builds a graph (grad enabled and x or a parameter needs it), else "eval"."""
    if not torch.is_grad_enabled():
        return "eval"
    return "train" if getattr(x, "requires_grad", False) or any(p.requires_grad for p in params) else "eval"


def eligible(device: Any, dtype: torch.dtype) -> tuple[str, ...]:
    """Backends that can run a case (see :func:`strnn_fast.backends.eligible`), likely winners first."""
    return backends.eligible(device if isinstance(device, str) else device_key(device), dtype)


def record(case: Case, times_us: dict[str, float], source: str = "measured", native: str = "dense") -> str:
    r"""Stores the decision for `case` from measured times (microseconds per call); returns it.

    The fastest backend wins only if the layer's native path is at least ``MARGIN`` times slower
    than it. The native path is dense, except for a packed layer (parameters stored as the
    mask's nonzeros), whose dense path is not the plain ``F.linear`` baseline but a scatter of the
    values first, and whose native path is therefore its sparse kernel ("cpu", else "sparse").
    """
    best = min(times_us, key=times_us.get)
    base = times_us.get(native, math.inf)
    backend = best if best == native or base >= MARGIN * times_us[best] else native
    with _LOCK:
        DECISIONS[case] = {"backend": backend, "times_us": dict(times_us), "source": source, "native": native}
        GENERATION[0] += 1
    return backend


def lookup(case: Case) -> dict[str, Any] | None:
    r"""The recorded decision of `case` (a copy: backend, times_us, source), or None if unmeasured.

    Example:
        >>> lookup(make_case((3, 3), 0.5, 1, torch.float32, "eval", "cuda:never measured")) is None
        True
    """
    entry = DECISIONS.get(case)
    return None if entry is None else dict(entry)


def override(case: Case, backend: str) -> None:
    r"""Pins `case` (from :func:`make_case`) to `backend`, replacing any measurement.

    Example:
        >>> c = make_case((8, 8), 0.5, 16, torch.float32, "eval", "cpu")
        >>> override(c, "sparse"); decide((8, 8), 0.5, 16, torch.float32, "eval", "cpu")
        'sparse'
        >>> forget(c)
    """
    if backend not in backends.NAMES:
        raise ValueError(f"backend must be one of {backends.NAMES}, got {backend!r}")
    with _LOCK:
        DECISIONS[case] = {"backend": backend, "times_us": {}, "source": "override"}
        GENERATION[0] += 1


def forget(case: Case | None = None) -> None:
    """Drops one case's decision, or all of them when `case` is None."""
    with _LOCK:
        if case is None:
            DECISIONS.clear()
        else:
            DECISIONS.pop(case, None)
        GENERATION[0] += 1


def _layer_candidates(layer: nn.Module, batch: int, phase: str, dtype: torch.dtype, device: Any,
                      names: Iterable[str], like: torch.Tensor | None = None) -> dict[str, Callable[[], Any]]:
    """Zero-argument runs of a clone of `layer` on each backend (its parameters and grads untouched).

    With `like` (the input of the call being decided) the probe's input copies its layout
    (row- or column-major: sparse layers hand on column-major activations) and whether it needs
    a gradient (a first layer's does not), which change what each backend costs.
    """
    from .dense_ops import is_transposed, randn_transposed

    probe = copy.deepcopy(layer).to(device=device, dtype=dtype)
    probe.train(phase == "train")
    for p in probe.parameters():
        p.requires_grad_(phase == "train")
    x_grad = phase == "train" and (like is None or bool(getattr(like, "requires_grad", False)))
    # A private generator: timing never draws from (or restores) the global RNG, which other
    # threads may be drawing from at the same moment.
    gen = torch.Generator(device=device).manual_seed(0)
    if like is not None and isinstance(like, torch.Tensor) and is_transposed(like.reshape(-1, like.shape[-1])):
        x = randn_transposed(batch, layer.in_features, device=device, dtype=dtype, generator=gen).requires_grad_(x_grad)
    else:
        x = torch.randn(batch, layer.in_features, device=device, dtype=dtype, generator=gen).requires_grad_(x_grad)

    def run(backend: str) -> Callable[[], Any]:
        def fn() -> None:
            if phase == "train":
                with torch.enable_grad():
                    y = backends.run(backend, probe, x)
                    y.backward(torch.ones_like(y))
                probe.zero_grad(set_to_none=True)
                if x.requires_grad:
                    x.grad = None
            else:
                with torch.no_grad():
                    backends.run(backend, probe, x)
        return fn

    return {name: run(name) for name in names}


def measure_layer(layer: nn.Module, batch: int, phase: str, dtype: torch.dtype | None = None,
                  device: Any = None, like: torch.Tensor | None = None) -> str:
    r"""Times the eligible backends of `layer` for one case, records and returns the decision.

    Arguments:
        layer: a MaskedLinear.
        batch: input rows (the case uses its bucket, and so does the timing).
        phase: "eval" or "train".
        dtype, device: default to the layer's.
        like: the input of the call being decided, if any (its layout and need of a gradient).
    """
    dtype = dtype or layer.param_dtype
    device = torch.device(device) if device is not None else layer.param_device
    case = make_case((layer.out_features, layer.in_features), layer.density(), batch, dtype, phase, device)
    names = eligible(device, dtype)
    dense_bytes = layer.out_features * layer.in_features * torch.tensor([], dtype=dtype).element_size()
    if layer.packed and dense_bytes > DENSE_PROBE_MAX_BYTES:
        # A packed layer this big must not materialize its dense weight (and gradient) just to be
        # timed: memory is why it is packed. Its dense path is out of the running.
        names = tuple(n for n in names if n != "dense")
    with _LOCK:  # one measurement at a time: concurrent timings would disturb each other
        times = time_candidates(_layer_candidates(layer, case[3], phase, dtype, device, names, like), device)
        # A packed layer's own path is its sparse kernel (its dense path scatters the values first).
        packed_native = [n for n in ("cpu", "sparse") if n in times]
        native = packed_native[0] if getattr(layer, "packed", False) and packed_native else "dense"
        return record(case, times, native=native)


def _functorch_active() -> bool:
    return torch._C._are_functorch_transforms_active()


def choose_backend(layer: nn.Module, x: torch.Tensor) -> str:
    r"""The backend of one "auto" call of a MaskedLinear (or frozen layer): the table's choice for this case.

    On the CPU an unmeasured case is measured first (outside ``torch.compile`` only, once per
    case: concurrent first calls wait for one measurement); on CUDA, and wherever measuring
    fails, an unmeasured case runs dense. Inside ``torch.compile`` this only reads the table.
    The answer for the layer's next calls is memoized by the layer (``dispatch_memo``), keyed
    by :data:`GENERATION`, so that any change of the table is seen.

    Arguments:
        layer: the MaskedLinear.
        x: its input.

    Returns:
        "dense", "sparse", "cpu" or "triton".
    """
    if _functorch_active():
        return "dense"  # torch.func transforms (vmap, jacrev, ...) need ops they can batch
    rows = x.numel() // max(x.shape[-1], 1)
    phase = phase_of(x, [p for p in layer._parameters.values() if p is not None])  # not .parameters(): per-call cost
    dtype = x.dtype
    cuda = bool(getattr(x, "is_cuda", False))
    if torch.compiler.is_compiling():
        return _answer(layer, x, rows, phase, dtype, cuda, measure=False)
    memo = layer.dispatch_memo()
    fast = (batch_bucket(rows), phase, dtype, x.device, cuda, GENERATION[0])
    hit = memo.get(fast)
    if hit is None:
        hit = memo[fast] = _answer(layer, x, rows, phase, dtype, cuda, measure=True)
    return hit


def _answer(layer: nn.Module, x: torch.Tensor, rows: int, phase: str, dtype: torch.dtype, cuda: bool,
            measure: bool) -> str:
    dev = (device_key(x.device) if x.device.type == "cuda" else "cuda:unknown") if cuda else device_key(x.device)
    shape = (layer.out_features, layer.in_features)
    case = make_case(shape, layer.density(), rows, dtype, phase, dev)
    if measure:
        layer.seen_cases.add(case)
        small = shape[0] * shape[1] < MIN_TIMED_WEIGHTS
        if case not in DECISIONS and dev == "cpu" and not small and dtype == layer.param_dtype:
            with _LOCK:
                if case not in DECISIONS:  # another thread may have measured it meanwhile
                    try:
                        measure_layer(layer, rows, phase, dtype, x.device, like=x)
                    except Exception as err:  # e.g. parameters that cannot be cloned: stay on the baseline
                        DECISIONS[case] = {"backend": "dense", "times_us": {}, "source": f"unmeasurable: {err}"}
                        GENERATION[0] += 1
    backend = decide(shape, layer.density(), rows, dtype, phase, dev)
    if backend in ("triton", "cpu") and layer.param_dtype != x.dtype:
        return "dense"
    return backend


def is_masked_layer(module: nn.Module) -> bool:
    """Whether `module` is a MaskedLinear (by its interface: this module does not import ``nn``)."""
    return all(callable(getattr(type(module), name, None))
               for name in ("run_backend", "csr", "block_layout", "dispatch_memo", "density"))


def measure_model(model: nn.Module, batch: int | Iterable[int], phases: Iterable[str] = PHASES,
                  dtype: torch.dtype | None = None) -> list[tuple[Case, str]]:
    r"""Measures every MaskedLinear of `model` on its own device (CUDA included) and records the decisions.

    This is what the GPU benchmark calls before :func:`save_decisions`.

    Arguments:
        model: a module holding MaskedLinear layers (already on the target device).
        batch: one batch size or several.
        phases: "eval" and/or "train".
        dtype: compute dtype; defaults to each layer's.

    Returns:
        (case, backend) for every measurement.

    Example:
        >>> import numpy as np
        >>> from strnn_fast import FastStrNN
        >>> net = FastStrNN(4, (8,), 4, adjacency=np.tril(np.ones((4, 4)), -1))
        >>> [b for _, b in measure_model(net, 2, phases=["eval"])] == [
        ...     net.layers[0].decision(2, "eval"), net.layers[1].decision(2, "eval")]
        True
    """
    sizes = [batch] if isinstance(batch, int) else list(batch)
    done = []
    for layer in model.modules():
        if is_masked_layer(layer):
            for b in sizes:
                for phase in phases:
                    backend = measure_layer(layer, b, phase, dtype)
                    case = make_case((layer.out_features, layer.in_features), layer.density(), b,
                                     dtype or layer.param_dtype, phase, layer.param_device)
                    layer.seen_cases.add(case)
                    done.append((case, backend))
    return done


_FIELDS = ("out", "in", "density", "batch_bucket", "dtype", "phase", "device")


def save_decisions(path: str | os.PathLike, device: str | None = None) -> None:
    r"""Writes the decisions (optionally only those of device keys starting with `device`) as JSON."""
    entries = [dict(zip(_FIELDS, case), **value) for case, value in DECISIONS.items()
               if device is None or case[6].startswith(device)]
    Path(path).write_text(json.dumps({"version": 1, "margin": MARGIN, "entries": entries}, indent=1))


def load_decisions(path: str | os.PathLike) -> int:
    r"""Adds the decisions stored in a :func:`save_decisions` file; returns how many.

    The file is checked whole before anything is added: a broken file changes nothing.

    Raises:
        ValueError: `path` is not a regular file, or not a dispatch file (JSON, version 1, valid entries).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path {str(path)!r} is not a file" + ("" if p.exists() else " (it does not exist)"))
    try:
        data = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"path {str(path)!r} is not a strnn_fast dispatch file (not JSON: {err})") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("entries"), list):
        raise ValueError(f"path {str(path)!r} is not a strnn_fast dispatch file (version 1 with 'entries')")
    new: dict[Case, dict[str, Any]] = {}
    for e in data["entries"]:
        try:
            if e.get("backend") not in backends.NAMES or e.get("phase") not in PHASES:
                raise ValueError("backend or phase")
            case = (int(e["out"]), int(e["in"]), float(e["density"]), int(e["batch_bucket"]), str(e["dtype"]),
                    str(e["phase"]), str(e["device"]))
            times = {str(k): float(v) for k, v in dict(e.get("times_us", {})).items()}
        except (AttributeError, KeyError, TypeError, ValueError):
            raise ValueError(f"path {str(path)!r}: entry {str(e)[:200]} is not a valid decision "
                             f"(fields {_FIELDS} and a backend of {backends.NAMES})") from None
        new[case] = {"backend": e["backend"], "times_us": times, "source": str(e.get("source", "file"))}
    with _LOCK:
        DECISIONS.update(new)
        GENERATION[0] += 1
    return len(new)


def prepare(model: nn.Module, device: torch.device | str | None = None) -> None:
    r"""Builds the derived state (structure, layouts) of every MaskedLinear ahead of ``torch.compile``.

    Building a layout calls the C++ core, which a compiled graph cannot contain; with the
    layouts in place, ``torch.compile(model, fullgraph=True)`` has no graph break.

    Arguments:
        model: any module holding MaskedLinear layers.
        device: where the layouts go; defaults to each layer's weight device.
    """
    for layer in model.modules():
        if is_masked_layer(layer):
            dev = torch.device(device) if device is not None else layer.param_device
            layer.csr(dev)
            backends.layout(layer, dev)


def _load_at_import() -> None:
    # The package's own table, then the user's file. A missing or broken user file must not break
    # `import strnn_fast` (nor every CLI command's --help): it is reported and skipped.
    if DEFAULT_FILE.exists():
        load_decisions(DEFAULT_FILE)
    path = os.environ.get("STRNN_FAST_DISPATCH_FILE")
    if path:
        try:
            load_decisions(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            warnings.warn(f"STRNN_FAST_DISPATCH_FILE={path!r} was not loaded ({type(err).__name__}: {err}); "
                          "backend='auto' measures instead", RuntimeWarning, stacklevel=2)


_load_at_import()
