r"""Latency of exported artifacts against eager: spline StrAF, log_prob and sample, one pytest-benchmark run.

For a spline StrAF (8 bins, 3 steps; parameters moved off their zero initialization and kept
masked, so the conditioners read their inputs) at d=15 (the multimodal graph, hidden (64, 64))
and d=100 (a random DAG with 1-3 parents, hidden (256, 256)), ``log_prob`` and ``sample`` at
batch 1, 64 and 4096 through

* ``eager``: the model's own method (sample: ``inverse`` of the same noise, with the CPU early stop);
* ``aoti``: the ``.pt2`` of :func:`strnn_fast.export.export`, loaded with ``aoti_load_package``;
* ``onnxruntime``: the ONNX file (log_prob only; ONNX cannot express sampling), one intra-op thread;
* ``frozen``: not timed: :func:`strnn_fast.freeze.freeze` applies to FastStrNN, not to flows.

Artifacts are exported once per case and method (the compile time and the file sizes go into each
row's extra_info, with the artifact's and eager's largest error against the float64 model,
relative where |value| > 1). Threads: 1 (bench/conftest.py).

    pytest bench/bench_export.py --benchmark-enable --benchmark-min-rounds=5 \\
        --benchmark-json=bench/results/export.json
    python bench/bench_export.py bench/results/export.json [more.json ...] > bench/results/export.md

``STRNN_FAST_BENCH_CASES=d100`` picks cases, ``STRNN_FAST_BENCH_METHODS=log_prob`` methods.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest
import torch

from strnn_fast.data import make_multimodal
from strnn_fast.data.adjacency import random_dag
from strnn_fast.export import export
from strnn_fast.flows import StrAF
from strnn_fast.nn import MaskedLinear

CASES = {
    "d15": (lambda: make_multimodal(n=10, seed=0).adjacency, (64, 64)),
    "d100": (lambda: random_dag(100, parents=(1, 3), seed=0), (256, 256)),
}
SELECTED = [c for c in os.environ.get("STRNN_FAST_BENCH_CASES", ",".join(CASES)).split(",") if c]
BATCHES = (1, 64, 4096)
METHODS = tuple(m for m in os.environ.get("STRNN_FAST_BENCH_METHODS", "log_prob,sample").split(",") if m)
IMPLS = ("eager", "aoti", "onnxruntime")
ARTIFACTS = Path(os.environ.get("STRNN_FAST_BENCH_TMP", "/tmp/strnn_fast_bench_export"))


def _model(case: str) -> StrAF:
    A, hidden = CASES[case][0](), CASES[case][1]
    torch.manual_seed(0)
    flow = StrAF(A, hidden_sizes=hidden, flow_steps=3, normalizer="spline", bins=8)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for layer in flow.modules():  # weights masked at rest (noise off the mask changes the dense backend's function)
        if isinstance(layer, MaskedLinear):
            layer.apply_mask_()
    return flow.eval()


@cache
def _flows(case: str) -> tuple[StrAF, StrAF]:
    return _model(case), _model(case).double()  # the float64 twin: which of eager and aoti is off


@cache
def _artifact(case: str, method: str, fmt: str) -> tuple[str, dict]:
    # Exported once per session (the process that times it), with its compile time and size.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{case}_{method}.{fmt}"
    t = time.perf_counter()
    export(_flows(case)[0], path, method=method, format=fmt, force=True)
    info = {f"{fmt}_export_s": time.perf_counter() - t, f"{fmt}_MiB": os.path.getsize(path) / 2**20}
    return str(path), info


def _runner(case: str, method: str, impl: str, x: torch.Tensor):
    flow = _flows(case)[0]
    if impl == "eager":
        return (lambda: flow.log_prob(x)) if method == "log_prob" else (lambda: flow.inverse(x)), {}
    if impl == "aoti":
        path, info = _artifact(case, method, "pt2")
        model = torch._inductor.aoti_load_package(path)
        return (lambda: model(x)), info
    ort = pytest.importorskip("onnxruntime")
    if method != "log_prob":
        pytest.skip("ONNX cannot express sampling (export refuses it)")
    path, info = _artifact(case, method, "onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    return (lambda: torch.from_numpy(sess.run(None, {"x": xn})[0])), info


def _error(case: str, method: str, got: torch.Tensor, x: torch.Tensor) -> float:
    ref = _flows(case)[1]
    with torch.no_grad():
        exact = ref.log_prob(x.double()) if method == "log_prob" else ref.inverse(x.double())
    return float(((got.double() - exact).abs() / exact.abs().clamp_min(1)).max())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", SELECTED)
def test_latency(benchmark, case: str, method: str, batch: int, impl: str) -> None:
    x = torch.randn(batch, _flows(case)[0].d, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        fn, info = _runner(case, method, impl, x)
        benchmark.group = f"{case} {method} B={batch}"
        benchmark.extra_info.update(case=case, method=method, batch=batch, impl=impl,
                                    rel_err_f64=_error(case, method, fn(), x), **info)
        benchmark(fn)


def summarize(*paths: str) -> str:
    """The markdown table of ``--benchmark-json`` files (of one machine): medians (ms) and ratios to eager."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    data = runs[0]
    rows: dict = defaultdict(dict)
    for b in (b for run in runs for b in run["benchmarks"]):
        e = b["extra_info"]
        rows[(e["case"], e["method"], e["batch"])][e["impl"]] = (b["stats"]["median"] * 1e3, e)
    m = data["machine_info"]
    out = [f"# Exported spline StrAF: latency (ms, median) against eager, {m.get('torch_threads')} thread(s)", "",
           f"`pytest bench/bench_export.py` (pytest-benchmark, medians), {data['datetime']}; "
           f"CPU {m.get('cpu', {}).get('brand_raw', '?')}, torch {m.get('torch')}. Errors: largest against the "
           "float64 model, relative where |value| > 1. `frozen`: n/a (freeze applies to FastStrNN, not flows)."
           + ("" if len(runs) == 1 else " Runs (a later run's rows replace an earlier one's; ratios to eager may "
              "then span runs): " + ", ".join(f"{Path(p).name} {r['datetime'][:19]}" for p, r in zip(paths, runs)) + "."),
           "",
           "| case | method | batch | eager | aoti | onnxruntime | aoti/eager | ort/eager | eager err | aoti err |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    sizes = {}
    for (case, method, batch), impls in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        eager = impls["eager"][0]

        def cell(k: str) -> str:
            return f"{impls[k][0]:.3f}" if k in impls else "n/a"

        def ratio(k: str) -> str:
            return f"{impls[k][0] / eager:.2f}" if k in impls else "n/a"

        out.append(f"| {case} | {method} | {batch} | {eager:.3f} | {cell('aoti')} | {cell('onnxruntime')} | "
                   f"{ratio('aoti')} | {ratio('onnxruntime')} | {impls['eager'][1]['rel_err_f64']:.1e} | "
                   f"{impls['aoti'][1]['rel_err_f64'] if 'aoti' in impls else float('nan'):.1e} |")
        for impl in ("aoti", "onnxruntime"):
            if impl in impls:
                info = impls[impl][1]
                fmt = "pt2" if impl == "aoti" else "onnx"
                sizes[(case, method, fmt)] = (info[f"{fmt}_MiB"], info[f"{fmt}_export_s"])
    out += ["", "| case | method | format | size (MiB) | export + compile (s) |", "|---|---|---|---|---|"]
    out += [f"| {c} | {me} | {f} | {s:.2f} | {t:.1f} |" for (c, me, f), (s, t) in sorted(sizes.items())]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarize(*sys.argv[1:]), end="")
