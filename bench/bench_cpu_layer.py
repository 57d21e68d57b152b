"""Per-layer CPU benchmark of the C++ masked-layer kernel (strnn_fast.csr_ops) against torch dense
(F.linear on the masked weight) and torch CSR (sparse_ops.sparse_linear), in interleaved rounds, with
this machine's limits timed in the same run (a large copy for the bandwidth, a large GEMM for the
FMA rate), so that the summary gives each layer's roofline fraction.

Layers are those of FastStrNN(d, (h, h), d) on random DAGs (1-3 parents), d = 50, 100, 200 and
the (h x h) layer at d = 1000. Each implementation gets its input (and output gradient) in the
layout its neighbours in a FastStrNN hand it (see ``_operands``). Forward is timed under no_grad;
forward+backward asks for the three gradients with ``torch.autograd.grad`` (as a network's
backward does: nothing is accumulated into ``.grad``, whose layout contract would charge a copy
to one implementation only), next to an autograd.Function that does no work (the floor; and
``test_autograd_floor`` times that floor against torch's own C++ nodes on one-element inputs). Whole
networks on the same graphs (d = 50, 100) are timed too (``test_network``): there one autograd
node, the fused chain, serves every layer, and the per-layer floor is paid once.

Timing: on a shared 2-core VM whose speed drifts by up to 2x within minutes, one implementation
timed after another gave ratios that moved with the drift (the same cell 105 us in one run, 227 us
in the next). Every round therefore runs each implementation back to back, a block of calls each
(about 5 ms of the C++ kernel's), and each speed-up is the median over ROUNDS rounds of that
round's ratio. Threads: 1 (bench/conftest.py); the d=1000 layer at batch 1024 also runs on 1 and
2 threads in interleaved rounds (``test_thread_scaling``).

    pytest bench/bench_cpu_layer.py --benchmark-enable --benchmark-max-time=0.2 \\
        --benchmark-min-rounds=5 --benchmark-json=bench/results/cpu_layer.json
    python bench/bench_cpu_layer.py bench/results/cpu_layer.json > bench/results/cpu_layer.md
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _interleave import interleaved, ratios

from strnn_fast.csr_ops import csr_linear
from strnn_fast.data.adjacency import random_dag
from strnn_fast.dense_ops import randn_transposed
from strnn_fast.nn import FastStrNN
from strnn_fast.sparse_ops import MaskStructure, scatter_dense, sparse_linear

CONFIGS = {50: 256, 100: 256, 200: 512, 1000: 2000}  # d -> hidden width
BATCHES = {50: (1, 64, 256, 1024, 4096), 100: (1, 64, 256, 1024, 4096), 200: (1, 64, 256, 1024, 4096),
           1000: (1, 256, 1024)}
IMPLS = ("cpp", "dense", "torch_csr")
ROUNDS = 15
COPY_FLOATS = 64 * 2**20 // 4  # 64 MiB: well past the caches
GEMM_N = 1024


@cache
def layers_of(d: int) -> list[tuple[str, MaskStructure]]:
    h = CONFIGS[d]
    model = FastStrNN(d, (h, h), d, adjacency=random_dag(d, parents=(1, 3), seed=d))
    layers = [(f"d{d} L{i} {m.out_features}x{m.in_features}", m.csr(torch.device("cpu")))
              for i, m in enumerate(model.layers)]
    return layers[1:2] if d == 1000 else layers  # at d=1000 the (h x h) layer, the big one


CASES = [(d, i, batch) for d in CONFIGS for i in range(1 if d == 1000 else 3) for batch in BATCHES[d]]


def _column_major(t: torch.Tensor, padded: bool) -> torch.Tensor:
    """t's values column-major; `padded`: with the columns padded as the C++ kernels pad theirs."""
    out = randn_transposed(*t.shape, dtype=t.dtype) if padded else torch.empty_like(t.T).T
    return out.copy_(t.detach()).requires_grad_(t.requires_grad)


def _operands(s: MaskStructure, batch: int, impl: str, first: bool, last: bool):
    """The impl's call and its inputs, in the layouts a FastStrNN hands this layer: the network's
    input and a loss gradient row-major; between layers, column-major activations and gradients
    from the C++ and torch-CSR layers (both return them so, the C++ ones with padded columns),
    row-major ones from dense layers."""
    out, inn = s.shape
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(s.nnz, generator=gen).requires_grad_()
    b = torch.randn(out, generator=gen).requires_grad_()
    x = torch.randn(batch, inn, generator=gen).requires_grad_()
    g = torch.randn(batch, out, generator=gen)
    if impl != "dense":
        x = x if first else _column_major(x, impl == "cpp")
        g = g if last else _column_major(g, impl == "cpp")
    if impl == "dense":
        w = scatter_dense(v.detach(), s).requires_grad_()
        return (lambda: F.linear(x, w, b)), (x, w, b), g
    fn = csr_linear if impl == "cpp" else sparse_linear
    return (lambda: fn(x, v, b, s)), (x, v, b), g


def _call(s: MaskStructure, batch: int, impl: str, mode: str, first: bool, last: bool) -> Callable[[], object]:
    """The impl's forward (mode "fwd", run without grad) or its three gradients by autograd.grad."""
    f, inputs, g = _operands(s, batch, impl, first, last)
    return f if mode == "fwd" else lambda: torch.autograd.grad(f(), inputs, g)


class _NoWork(torch.autograd.Function):
    """The autograd floor: a Function that computes nothing (output allocated, gradients made beforehand).

    The C++ layer is a Function of this kind, so dense f+b / this floor bounds the speed-up any kernel
    can give such a layer. A C++ node pays about as much (``test_autograd_floor``): the floor is
    autograd's per-node and per-call cost, not the Python Function's.
    """

    @staticmethod
    def forward(ctx, x, v, b, like, grads):
        ctx.grads = grads
        return torch.empty_strided(like.shape, like.stride())

    @staticmethod
    def backward(ctx, g):
        return (*ctx.grads, None, None)


def _floor_call(s: MaskStructure, batch: int, first: bool) -> Callable[[], object]:
    f, (x, v, b), _ = _operands(s, batch, "cpp", first, False)
    with torch.no_grad():
        like = f()
    grads = (torch.zeros_like(x), torch.zeros_like(v), torch.zeros_like(b))
    return lambda: torch.autograd.grad(_NoWork.apply(x, v, b, like, grads), (x, v, b), like)


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("d,layer,batch", CASES, ids=[f"d{d}-L{i}-B{b}" for d, i, b in CASES])
def test_layer(benchmark, d: int, layer: int, batch: int, mode: str) -> None:
    name, s = layers_of(d)[layer]
    first, last = (layer == 0 and d != 1000), layer == len(layers_of(d)) - 1 and d != 1000
    calls = {impl: _call(s, batch, impl, mode, first, last) for impl in IMPLS}
    if mode == "fwdbwd":
        calls["floor"] = _floor_call(s, batch, first)
    benchmark.group = f"{name} B={batch} {mode}"
    before = copy_bandwidth()
    times = interleaved(benchmark, calls, grad=mode != "fwd", rounds=ROUNDS)
    benchmark.extra_info.update(layer=name, out=s.shape[0], inn=s.shape[1], nnz=s.nnz, batch=batch, mode=mode,
                                threads=torch.get_num_threads(), load=os.getloadavg()[0],
                                bandwidth=statistics.median(before + copy_bandwidth()),
                                median_s={k: statistics.median(t) for k, t in times.items()},
                                # each implementation's time / the C++ kernel's
                                speedup=ratios(times, "cpp"),
                                dense_over_floor=ratios(times, "floor")["dense"] if mode == "fwdbwd" else None)


NETWORK_CASES = [(d, batch) for d in (50, 100) for batch in BATCHES[d][1:]]


@cache
def networks_of(d: int) -> dict[str, FastStrNN]:
    """FastStrNN(d, (h, h), d) on layers_of's graph, alike but for the backend: "cpu" (the C++ layers,
    fused where the chain is measured faster), "auto" (what a user gets) and "dense"."""
    h, adjacency = CONFIGS[d], random_dag(d, parents=(1, 3), seed=d)
    nets = {}
    for backend in ("cpu", "auto", "dense"):
        torch.manual_seed(0)
        nets[backend] = FastStrNN(d, (h, h), d, adjacency=adjacency, backend=backend)
    return nets


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("d,batch", NETWORK_CASES, ids=[f"d{d}-B{b}" for d, b in NETWORK_CASES])
def test_network(benchmark, d: int, batch: int, mode: str) -> None:
    """A whole network's forward (no grad) or its parameters' gradients, per backend: what the layer
    cells above add up to once a network pays one autograd node (the fused chain) for all its layers."""
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(batch, d, generator=gen), torch.randn(batch, d, generator=gen)

    def call(net: FastStrNN) -> Callable[[], object]:
        params = list(net.parameters())
        return (lambda: net(x)) if mode == "fwd" else lambda: torch.autograd.grad(net(x), params, g)

    calls = {"cpp" if k == "cpu" else k: call(net) for k, net in networks_of(d).items()}
    benchmark.group = f"network d{d} B={batch} {mode}"
    times = interleaved(benchmark, calls, grad=mode != "fwd", rounds=ROUNDS)
    benchmark.extra_info.update(network=f"d{d} ({CONFIGS[d]}, {CONFIGS[d]})", batch=batch, mode=mode,
                                load=os.getloadavg()[0], median_s={k: statistics.median(t) for k, t in times.items()},
                                speedup=ratios(times, "cpp"), auto_speedup=ratios(times, "auto"))


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_thread_scaling(benchmark, mode: str) -> None:
    """The d=1000 (h x h) layer at batch 1024, C++, on 1 and 2 threads in interleaved rounds."""
    name, s = layers_of(1000)[0]
    call = _call(s, 1024, "cpp", mode, False, False)
    before = torch.get_num_threads()
    benchmark.group = f"{name} B=1024 {mode} threads"
    try:
        times = interleaved(benchmark, {"1": call, "2": call}, grad=mode != "fwd", rounds=ROUNDS,
                            setup={"1": lambda: torch.set_num_threads(1), "2": lambda: torch.set_num_threads(2)})
    finally:
        torch.set_num_threads(before)
    benchmark.extra_info.update(layer=name, batch=1024, mode=mode, scaling=True, load=os.getloadavg()[0],
                                median_s={k: statistics.median(t) for k, t in times.items()},
                                speedup=ratios(times, "2"))


def test_autograd_floor(benchmark) -> None:
    """One autograd node that does no work, by autograd.grad: a Python Function (as the C++ layer's)
    against torch's own C++ nodes, on one-element inputs. Whether the per-layer floor (the "floor f+b x"
    column) is the Python Function's or autograd's: a C++ node (libtorch) would pay what the native
    ones pay here."""
    x, v, b = (torch.randn(1, requires_grad=True) for _ in range(3))
    g, like = torch.ones(1), torch.ones(1)
    grads = tuple(torch.zeros(1) for _ in range(3))
    w2, x2, g2 = torch.randn(1, 1, requires_grad=True), torch.randn(1, 1, requires_grad=True), torch.ones(1, 1)
    calls = {
        "python_function": lambda: torch.autograd.grad(_NoWork.apply(x, v, b, like, grads), (x, v, b), g),
        "native_addcmul": lambda: torch.autograd.grad(torch.addcmul(b, x, v), (x, v, b), g),  # one C++ node
        "native_linear_1x1": lambda: torch.autograd.grad(F.linear(x2, w2, b), (x2, w2, b), g2),  # dense's graph
    }
    benchmark.group = "autograd floor"
    times = interleaved(benchmark, calls, grad=True, rounds=ROUNDS)
    benchmark.extra_info.update(floor=True, load=os.getloadavg()[0],
                                median_s={k: statistics.median(t) for k, t in times.items()},
                                speedup=ratios(times, "python_function"))


def copy_bandwidth(reps: int = 5) -> list[float]:
    """Bytes read + written per second by `reps` copies of COPY_FLOATS floats, one figure each. Each
    layer is timed between two such sets: on the VM the copy gave 11.9-29.2 GB/s from one run to
    the next, so a figure measured once misstated the roofline of layers timed minutes later."""
    a = torch.ones(COPY_FLOATS)
    b = torch.empty_like(a)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        b.copy_(a)
        out.append(2 * 4 * COPY_FLOATS / (time.perf_counter() - t0))
    return out


def test_limit_copy_bandwidth(benchmark) -> None:
    a = torch.empty(COPY_FLOATS)
    b = torch.empty_like(a)
    benchmark.group = "machine limits"
    benchmark.extra_info.update(limit="bandwidth", bytes=2 * 4 * COPY_FLOATS)  # read + write
    benchmark(b.copy_, a)


def test_limit_gemm_rate(benchmark) -> None:
    m1, m2 = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    benchmark.group = "machine limits"
    benchmark.extra_info.update(limit="fma", fma=GEMM_N**3)
    benchmark(torch.mm, m1, m2)


# ------------------------------------------------------- summary (python bench/bench_cpu_layer.py JSON [JSON ...])

def roofline_s(info: dict, bandwidth: float, fma_rate: float) -> float:
    """max(bytes / bandwidth, batch * nnz / FMA rate): x, y and bias in fp32, values + int64 columns."""
    bytes_moved = 4 * (info["batch"] * (info["inn"] + info["out"]) + info["out"]) + 12 * info["nnz"]
    return max(bytes_moved / bandwidth, info["batch"] * info["nnz"] / fma_rate)


def backward_roofline_s(info: dict, bandwidth: float, fma_rate: float) -> float:
    """The backward's max(bytes / bandwidth, FMAs / FMA rate): g and x read, dx written, values and
    columns read, dv and db written; dx and dv take batch * nnz FMAs each."""
    b, inn, out, nnz = info["batch"], info["inn"], info["out"], info["nnz"]
    bytes_moved = 4 * (b * (out + 2 * inn) + nnz + out) + 12 * nnz
    return max(bytes_moved / bandwidth, 2 * b * nnz / fma_rate)


def ideal_speedup(fwd: dict, fwdbwd: dict, bandwidth: float, fma_rate: float) -> float:
    """Dense f+b time / (the no-work Function's + the forward's and backward's roofline times): what a
    kernel at its roofline behind one autograd node (a Python Function's or a C++ one's: they cost alike,
    ``test_autograd_floor``) would gain over dense. A model: where the
    operands stay in cache (small batches) they move faster than the copy bandwidth."""
    t = fwdbwd["median_s"]
    kernels = roofline_s(fwd, bandwidth, fma_rate) + backward_roofline_s(fwd, bandwidth, fma_rate)
    return t["dense"] / (t["floor"] + kernels)


def summarize(*paths: str) -> str:
    """The markdown tables of one run's JSON; further JSONs (e.g. a thread-scaling run on the same
    machine) add their benchmarks, the first one gives the date and machine."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    data = {**runs[0], "benchmarks": [b for run in runs for b in run["benchmarks"]]}
    cells: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    limits, scaling, floor = {}, {}, None
    networks: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "limit" in info:
            limits[info["limit"]] = (info.get("bytes") or info.get("fma")) / bench["stats"]["median"]
        elif "network" in info:
            networks[info["network"], info["batch"]][info["mode"]] = info
        elif info.get("scaling"):
            scaling[info["mode"]] = info
        elif info.get("floor"):
            floor = info
        else:
            cells[info["layer"], info["batch"]][info["mode"]] = info
    bw, fma = limits["bandwidth"], limits["fma"]
    loads = [i["load"] for c in cells.values() for i in c.values()]
    cell_bw = [i["bandwidth"] for c in cells.values() for i in c.values() if "bandwidth" in i]
    lines = [
        "# C++ masked-layer kernel vs torch dense and torch CSR, per layer (CPU, fp32)",
        "",
        f"`pytest bench/bench_cpu_layer.py` (interleaved rounds), {data['datetime']}; "
        f"{data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, torch {data['machine_info'].get('torch')}, "
        "1 thread unless stated.",
        f"Load average during the run: {min(loads):.1f}-{max(loads):.1f} (shared 2-core machine).",
        f"Machine limits in the same run: copy bandwidth {bw / 1e9:.1f} GB/s, fp32 GEMM {fma / 1e9:.1f} GFMA/s"
        + (f"; around each layer's rounds (the median of 5 copies before and 5 after, the copy GB/s column) the "
           f"copy gave {min(cell_bw) / 1e9:.1f}-{max(cell_bw) / 1e9:.1f} GB/s, and each layer's roofline uses its own."
           if cell_bw else "."),
        "Roofline time = max(bytes / bandwidth, batch * nnz / FMA rate); fraction = roofline / C++ forward time.",
        "Inputs in the layout a FastStrNN hands each layer: row-major into L0; column-major activations (and "
        "gradients) between the C++ or torch-CSR layers, row-major between dense ones.",
        f"Speed-up columns: torch time / C++ time, the median over {ROUNDS} rounds of each round's ratio (every "
        "round runs all implementations back to back, a block of calls each); dense fwd x at batch 1 is "
        "F.linear / C++. Times: medians over rounds. Forward+backward = the three gradients by autograd.grad.",
        "",
        "Floor f+b x: dense f+b time / that of an autograd.Function doing no work (its output and gradients made "
        "beforehand), the most any kernel behind such a Function can gain over dense. Ideal f+b x: dense f+b "
        "time / (that floor + the forward's and backward's roofline times), i.e. a kernel at its roofline behind "
        "such a Function (a model from the medians: operands that stay in cache move faster than the copy "
        "bandwidth, so at small batches it is not a bound).",
        "",
        "| layer | density | batch | C++ fwd us | dense fwd x | CSR fwd x | C++ fwd+bwd us | dense f+b x "
        "| CSR f+b x | floor f+b x | ideal f+b x | roofline frac | copy GB/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (layer, batch), c in sorted(cells.items(), key=lambda kv: (int(kv[0][0].split()[0][1:]), kv[0])):
        f, b = c["fwd"], c["fwdbwd"]
        cf = f["median_s"]["cpp"]
        density = f["nnz"] / (f["out"] * f["inn"])
        # runs made before the copies around each cell have only the run's figure
        bw_f, bw_b = f.get("bandwidth", bw), b.get("bandwidth", bw)
        lines.append(f"| {layer} | {100 * density:.1f}% | {batch} | {cf * 1e6:.1f} | {f['speedup']['dense']:.2f} | "
                     f"{f['speedup']['torch_csr']:.2f} | {b['median_s']['cpp'] * 1e6:.1f} | "
                     f"{b['speedup']['dense']:.2f} | {b['speedup']['torch_csr']:.2f} | "
                     f"{b['dense_over_floor']:.2f} | {ideal_speedup(f, b, bw_b, fma):.2f} | "
                     f"{roofline_s(f, bw_f, fma) / cf:.2f} | {bw_f / 1e9:.1f} |")
    if networks:
        lines += ["", "## Whole networks: FastStrNN(d, (h, h), d) on the same graphs, interleaved rounds", "",
                  "Forward without grad; forward+backward: the parameters' gradients by autograd.grad. C++: "
                  "backend=\"cpu\" (the fused chain where measured faster); auto: the default. x: dense backend "
                  "time / that backend's, the median of each round's ratio.", "",
                  "| network | batch | C++ fwd us | dense fwd x (C++) | dense fwd x (auto) | C++ f+b us "
                  "| dense f+b x (C++) | dense f+b x (auto) |", "|---|---|---|---|---|---|---|---|"]
        for (net, batch), c in sorted(networks.items(), key=lambda kv: (int(kv[0][0].split()[0][1:]), kv[0][1])):
            f, b = c["fwd"], c["fwdbwd"]
            lines.append(f"| {net} | {batch} | {f['median_s']['cpp'] * 1e6:.1f} | {f['speedup']['dense']:.2f} | "
                         f"{f['auto_speedup']['dense']:.2f} | {b['median_s']['cpp'] * 1e6:.1f} | "
                         f"{b['speedup']['dense']:.2f} | {b['auto_speedup']['dense']:.2f} |")
    if scaling:
        lines += ["", "## Thread scaling: the d=1000 (h x h) layer, batch 1024, C++, interleaved rounds", ""]
        for m, info in scaling.items():
            t = info["median_s"]
            lines.append(f"- {m}: 1 thread {t['1'] * 1e3:.2f} ms, 2 threads {t['2'] * 1e3:.2f} ms "
                         f"({info['speedup']['1']:.2f}x, the median of each round's ratio)")
    if floor:
        t, x = floor["median_s"], floor["speedup"]
        lines += ["", "## Autograd floor: one node that does no work, forward + autograd.grad, one-element inputs", "",
                  f"- Python autograd.Function (as the C++ layer's): {t['python_function'] * 1e6:.1f} us",
                  f"- torch's C++ node (addcmul, three inputs): {t['native_addcmul'] * 1e6:.1f} us "
                  f"({x['native_addcmul']:.2f}x the Python Function's time, the median of each round's ratio)",
                  f"- dense's graph (F.linear, 1 x 1): {t['native_linear_1x1'] * 1e6:.1f} us "
                  f"({x['native_linear_1x1']:.2f}x)"]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(*(sys.argv[1:] or [str(Path(__file__).parent / "results" / "cpu_layer.json")])))
