r"""Backend dispatch for masked layers: measured once per case, cached, never guessed.

A *case* is (layer shape, mask density, batch bucket, dtype, phase, device). :func:`decide` is
the one pure decision: it looks the case up in a table of measured decisions and answers
"dense" where nothing was measured. ``MaskedLinear`` (backend="auto") and ``freeze`` both call
it, through :func:`case_of`, so a frozen layer and its original make the same choice.

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
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .layout import BlockLayout

MARGIN = 1.1
# Packed layers whose dense weight would exceed this are not timed (nor run) on the dense path.
DENSE_PROBE_MAX_BYTES = 256 << 20
PHASES = ("eval", "train")
BACKENDS = ("dense", "sparse", "triton")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
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


def default_block(device: torch.device) -> tuple[int, int]:
    """Tile shape (block_out, block_in) of the layouts on `device`: small in the CPU interpreter."""
    return (64, 64) if device.type == "cuda" else (16, 16)


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
    entry = (DECISIONS if table is None else table).get(make_case(shape, density, batch, dtype, phase, device))
    return "dense" if entry is None else entry["backend"]


def phase_of(x: torch.Tensor, params: Iterable[torch.Tensor]) -> str:
    """"train" when this call builds a graph (grad enabled and x or a parameter needs it), else "eval"."""
    if not torch.is_grad_enabled():
        return "eval"
    return "train" if getattr(x, "requires_grad", False) or any(p.requires_grad for p in params) else "eval"


def eligible(device: Any, dtype: torch.dtype) -> tuple[str, ...]:
    """Backends that can run a case, likely winners of sparse masks first: torch-sparse and dense
    everywhere, Triton on CUDA in its dtypes."""
    key = device if isinstance(device, str) else device_key(device)
    if key.startswith("cuda") and dtype in _KERNEL_DTYPES:
        return ("triton", "sparse", "dense")
    return ("sparse", "dense")


def record(case: Case, times_us: dict[str, float], source: str = "measured", native: str = "dense") -> str:
    r"""Stores the decision for `case` from measured times (microseconds per call); returns it.

    The fastest backend wins only if the layer's native path is at least ``MARGIN`` times slower
    than it. The native path is dense, except for a packed layer (parameters stored as the
    mask's nonzeros), whose dense path is not the plain ``F.linear`` baseline but a scatter of the
    values first, and whose native path is therefore "sparse".
    """
    best = min(times_us, key=times_us.get)
    base = times_us.get(native, math.inf)
    backend = best if best == native or base >= MARGIN * times_us[best] else native
    DECISIONS[case] = {"backend": backend, "times_us": dict(times_us), "source": source, "native": native}
    GENERATION[0] += 1
    return backend


def override(case: Case, backend: str) -> None:
    r"""Pins `case` (from :func:`make_case`) to `backend`, replacing any measurement.

    Example:
        >>> c = make_case((8, 8), 0.5, 16, torch.float32, "eval", "cpu")
        >>> override(c, "sparse"); decide((8, 8), 0.5, 16, torch.float32, "eval", "cpu")
        'sparse'
        >>> forget(c)
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    DECISIONS[case] = {"backend": backend, "times_us": {}, "source": "override"}
    GENERATION[0] += 1


def forget(case: Case | None = None) -> None:
    """Drops one case's decision, or all of them when `case` is None."""
    if case is None:
        DECISIONS.clear()
    else:
        DECISIONS.pop(case, None)
    GENERATION[0] += 1


def _sync(device: Any) -> None:
    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def time_candidates(fns: dict[str, Callable[[], Any]], device: Any = None, min_total_s: float = 0.02,
                    max_rounds: int = 10) -> dict[str, float]:
    r"""Best-of-a-few wall time, in microseconds, of each zero-argument callable.

    All are warmed up (twice when cheap: first calls pay allocations and lazy initialization),
    then timed in interleaved rounds (one run of each per round, so that load from other
    processes hits all alike), at least 3 rounds and until `min_total_s` is spent, at most
    `max_rounds`; each keeps its minimum, the run least disturbed. A candidate over 10 ms and 3x
    slower than the best drops out after its first timed run, and one whose warm-up alone is big (> 50 ms)
    and 10x the best is not run again: measuring big dense layers stays cheap. A candidate that
    raises is left out of the result (RuntimeError if all do). List the likely winner first.
    """
    times: dict[str, float] = {}
    live = []
    failed: dict[str, Exception] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        try:
            fn()
            _sync(device)
        except Exception as err:  # e.g. a dtype torch's CUDA CSR kernels lack: out of the running
            failed[name] = err
            continue
        warm = time.perf_counter() - t0
        times[name] = warm
        if len(times) > 1 and warm > 0.05 and warm > 10 * min(times.values()):
            continue
        if warm < 0.01:
            fn()
            _sync(device)
        live.append(name)
        times[name] = math.inf
    if not live:
        raise RuntimeError(f"no backend could run: {failed}")
    spent = 0.0
    for rnd in range(max_rounds):
        for name in list(live):
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            dt = time.perf_counter() - t0
            spent += dt
            times[name] = min(times[name], dt)
        best = min(times.values())
        # Only big candidates drop out: a small one may just have been preempted once.
        live = [n for n in live if times[n] <= 3 * best or times[n] < 0.01]
        if len(live) <= 1 or (rnd >= 2 and spent >= min_total_s):
            break
    return {name: t * 1e6 for name, t in times.items()}


def _layer_candidates(layer: nn.Module, batch: int, phase: str, dtype: torch.dtype, device: Any,
                      names: Iterable[str], like: torch.Tensor | None = None) -> dict[str, Callable[[], Any]]:
    """Zero-argument runs of a clone of `layer` on each backend (its parameters and grads untouched).

    With `like` (the input of the call being decided) the probe's input copies its layout
    (row- or column-major: sparse layers hand on column-major activations) and whether it needs
    a gradient (a first layer's does not), which change what each backend costs.
    """
    from .sparse_ops import is_transposed

    probe = copy.deepcopy(layer).to(device=device, dtype=dtype)
    probe.train(phase == "train")
    for p in probe.parameters():
        p.requires_grad_(phase == "train")
    x_grad = phase == "train" and (like is None or bool(getattr(like, "requires_grad", False)))
    if like is not None and isinstance(like, torch.Tensor) and is_transposed(like.reshape(-1, like.shape[-1])):
        x = torch.randn(layer.in_features, batch, device=device, dtype=dtype).T.requires_grad_(x_grad)
    else:
        x = torch.randn(batch, layer.in_features, device=device, dtype=dtype, requires_grad=x_grad)

    def run(backend: str) -> Callable[[], Any]:
        def fn() -> None:
            if phase == "train":
                with torch.enable_grad():
                    y = probe.run_backend(backend, x)
                    y.backward(torch.ones_like(y))
                probe.zero_grad(set_to_none=True)
                if x.requires_grad:
                    x.grad = None
            else:
                with torch.no_grad():
                    probe.run_backend(backend, x)
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
    if "triton" in names:
        try:
            from .kernels import masked_linear  # noqa: F401 - only to see that triton is importable
        except ImportError:
            names = tuple(n for n in names if n != "triton")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        times = time_candidates(_layer_candidates(layer, case[3], phase, dtype, device, names, like), device)
    native = "sparse" if getattr(layer, "packed", False) and "sparse" in times else "dense"
    return record(case, times, native=native)


def _functorch_active() -> bool:
    return torch._C._are_functorch_transforms_active()


def choose_backend(layer: nn.Module, x: torch.Tensor) -> str:
    r"""The backend of one "auto" call of a MaskedLinear: the table's choice for this case.

    On the CPU an unmeasured case is measured first (outside ``torch.compile`` only); on CUDA,
    and wherever measuring fails, an unmeasured case runs dense.

    Arguments:
        layer: the MaskedLinear.
        x: its input.

    Returns:
        "dense", "sparse" or "triton".
    """
    if _functorch_active():
        return "dense"  # torch.func transforms (vmap, jacrev, ...) need ops they can batch
    # The common case, a call like the previous one, answered from a few cheap attributes. Any
    # backend computes the same function, so a stale answer (after e.g. freezing the parameters)
    # can only cost speed; mask changes clear it (MaskedLinear.invalidate).
    last_key = (x.shape, x.dtype, bool(getattr(x, "is_cuda", False)), torch.is_grad_enabled(),
                bool(getattr(x, "requires_grad", False)), GENERATION[0], id(DECISIONS))
    last = layer.__dict__.get("_last_dispatch")
    if last is not None and last[0] == last_key:
        return last[1]
    backend = _choose_memo(layer, x)
    layer.__dict__["_last_dispatch"] = (last_key, backend)
    return backend


def _choose_memo(layer: nn.Module, x: torch.Tensor) -> str:
    rows = x.numel() // max(x.shape[-1], 1)
    phase = phase_of(x, [p for p in layer._parameters.values() if p is not None])  # not .parameters(): per-call cost
    dtype = x.dtype
    memo = layer.dispatch_memo()
    fast = (batch_bucket(rows), phase, dtype, x.device, bool(getattr(x, "is_cuda", False)), id(DECISIONS), GENERATION[0])
    hit = memo.get(fast)
    if hit is not None:
        return hit
    memo[fast] = backend = _choose(layer, x, rows, phase, dtype)
    return backend


def _choose(layer: nn.Module, x: torch.Tensor, rows: int, phase: str, dtype: torch.dtype) -> str:
    if getattr(x, "is_cuda", False):
        dev = device_key(x.device) if x.device.type == "cuda" else "cuda:unknown"  # a stand-in
    else:
        dev = device_key(x.device)
    case = make_case((layer.out_features, layer.in_features), layer.density(), rows, dtype, phase, dev)
    layer.seen_cases.add(case)
    small = layer.out_features * layer.in_features < MIN_TIMED_WEIGHTS
    if (case not in DECISIONS and dev == "cpu" and not small and not torch.compiler.is_compiling()
            and dtype == layer.param_dtype):
        try:
            measure_layer(layer, rows, phase, dtype, x.device, like=x)
        except Exception as err:  # e.g. parameters that cannot be cloned: stay on the baseline
            DECISIONS[case] = {"backend": "dense", "times_us": {}, "source": f"unmeasurable: {err}"}
            GENERATION[0] += 1
    backend = decide((layer.out_features, layer.in_features), layer.density(), rows, dtype, phase, dev)
    if backend == "triton" and (x.dtype not in _KERNEL_DTYPES or layer.param_dtype != x.dtype):
        return "dense"
    return backend


def is_masked_layer(module: nn.Module) -> bool:
    """Whether `module` is a MaskedLinear (by its interface: this module does not import ``nn``)."""
    return all(callable(getattr(type(module), name, None))
               for name in ("run_backend", "structure", "block_layout", "dispatch_memo", "density"))


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
    r"""Adds the decisions stored in a :func:`save_decisions` file; returns how many."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("entries"), list):
        raise ValueError(f"path {str(path)!r} is not a strnn_fast dispatch file (version 1 with 'entries')")
    for e in data["entries"]:
        if e.get("backend") not in BACKENDS:
            raise ValueError(f"path {str(path)!r}: entry {e} has no valid backend")
        case = (int(e["out"]), int(e["in"]), float(e["density"]), int(e["batch_bucket"]), str(e["dtype"]),
                str(e["phase"]), str(e["device"]))
        DECISIONS[case] = {"backend": e["backend"], "times_us": dict(e.get("times_us", {})),
                           "source": e.get("source", "file")}
    GENERATION[0] += 1
    return len(data["entries"])


def layer_layout(layer: nn.Module, device: torch.device) -> tuple[BlockLayout, torch.Tensor]:
    r"""The block layout and uint8 keep-mask of a MaskedLinear on `device` (owned and cached by the layer).

    Returns:
        (layout, mask as a contiguous uint8 tensor on `device`).
    """
    return layer.block_layout(device, default_block(device))


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
            layer.structure(dev)
            layer_layout(layer, dev)


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
    return masked_linear(x, layer.dense_weight(), layer.bias, keep, layout, layer.activation)


if DEFAULT_FILE.exists():
    load_decisions(DEFAULT_FILE)
if os.environ.get("STRNN_FAST_DISPATCH_FILE"):
    load_decisions(os.environ["STRNN_FAST_DISPATCH_FILE"])
