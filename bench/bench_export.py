r"""Latency of exported artifacts against eager: spline StrAF, log_prob and sample, 1 thread.

For a spline StrAF (8 bins, 3 steps; parameters moved off their zero initialization, so the
conditioners read their inputs) at d=15 (the multimodal graph, hidden (64, 64)) and d=100 (a
random DAG with 1-3 parents, hidden (256, 256)), ``log_prob`` and ``sample`` at batch 1, 64 and
4096 through

* ``eager``: the model's own method (sample: ``inverse`` of the same noise, with the CPU early stop);
* ``frozen``: :func:`strnn_fast.freeze.freeze` applies to FastStrNN only, not to flows: n/a here;
* ``aoti``: the ``.pt2`` of :func:`strnn_fast.export.export`, loaded with ``aoti_load_package``;
* ``onnxruntime``: the ONNX file (log_prob only; ONNX cannot express sampling), one intra-op thread.

Each timing is the median of interleaved repetitions in one process (the machine is shared, so
ratios matter more than absolute times). Writes bench/results/export.json and export.md, with
the package sizes.

"eager err" and "aoti err": largest error against the float64 model, relative where |value| > 1.

Run: python bench/bench_export.py [--cases d15,d100] [--reps 30] [--methods log_prob,sample]
(STRNN_FAST_BENCH_OUT renames the results files).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _machine import cpu_name
from strnn_fast.data import make_multimodal
from strnn_fast.data.adjacency import random_dag
from strnn_fast.export import export
from strnn_fast.flows import StrAF
from strnn_fast.nn import MaskedLinear

CASES = {
    "d15": (lambda: make_multimodal(n=10, seed=0).adjacency, (64, 64)),
    "d100": (lambda: random_dag(100, parents=(1, 3), seed=0), (256, 256)),
}
BATCHES = (1, 64, 4096)
RESULTS = Path(__file__).parent / "results"


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


def _median_ms(fns: dict, reps: int) -> dict:
    times = {k: [] for k in fns}
    for k, f in fns.items():
        f()  # warm-up
    for _ in range(reps):
        for k, f in fns.items():  # interleaved: contention hits every contender alike
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def run_case(case: str, reps: int, tmp: Path, methods: tuple[str, ...]) -> list[dict]:
    flow = _model(case)
    ref = _model(case).double()  # float64 reference: which of eager and aoti is off, when they differ
    rows = []
    ort = None
    try:
        import onnxruntime

        ort = onnxruntime
    except ImportError:
        pass
    for method in methods:
        pt2 = tmp / f"{case}_{method}.pt2"
        t = time.perf_counter()
        export(flow, pt2, method=method)
        compile_s = time.perf_counter() - t
        aoti = torch._inductor.aoti_load_package(str(pt2))
        sizes = {"pt2_MiB": os.path.getsize(pt2) / 2**20, "pt2_compile_s": compile_s}
        sess = None
        if method == "log_prob" and ort is not None:
            onx = tmp / f"{case}.onnx"
            export(flow, onx, method="log_prob", format="onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(onx), so, providers=["CPUExecutionProvider"])
            sizes["onnx_MiB"] = os.path.getsize(onx) / 2**20
        for b in BATCHES:
            x = torch.randn(b, flow.d)
            with torch.no_grad():
                eager = (lambda: flow.log_prob(x)) if method == "log_prob" else (lambda: flow.inverse(x))
                fns = {"eager": eager, "aoti": lambda: aoti(x)}
                if sess is not None:
                    xn = x.numpy()
                    fns["onnxruntime"] = lambda: sess.run(None, {"x": xn})
                med = _median_ms(fns, reps if b < 4096 else max(5, reps // 3))
                exact = ref.log_prob(x.double()) if method == "log_prob" else ref.inverse(x.double())
                scale = exact.abs().clamp_min(1)  # relative where |value| > 1
                err = float((aoti(x) - eager()).abs().max())
                rel = {f"{k}_rel_err_f64": float(((f().double() - exact).abs() / scale).max())
                       for k, f in (("eager", eager), ("aoti", lambda: aoti(x)))}
            rows.append({"case": case, "method": method, "batch": b, **{f"{k}_ms": v for k, v in med.items()},
                         "aoti_vs_eager": med["aoti"] / med["eager"],
                         **({"ort_vs_eager": med["onnxruntime"] / med["eager"]} if "onnxruntime" in med else {}),
                         "aoti_max_abs_err": err, **rel, **sizes})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="d15,d100")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--methods", default="log_prob,sample")
    args = p.parse_args()
    torch.set_num_threads(1)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for case in args.cases.split(",")
                for r in run_case(case, args.reps, Path(tmp), tuple(args.methods.split(",")))]
    meta = {"command": f"python bench/bench_export.py --cases {args.cases} --reps {args.reps} --methods {args.methods}",
            "cpu": cpu_name(), "threads": 1, "uptime_before": load, "torch": torch.__version__,
            "note": "shared 2-core machine (other agents' jobs running): compare ratios, not absolute times"}
    RESULTS.mkdir(exist_ok=True)
    name = os.environ.get("STRNN_FAST_BENCH_OUT", "export")
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Exported spline StrAF: latency (ms, median) against eager, 1 thread", "",
             *(f"- {k}: {v}" for k, v in meta.items()), "- frozen: n/a (strnn_fast.freeze applies to FastStrNN only)", "",
             "| case | method | batch | eager | aoti | onnxruntime | aoti/eager | ort/eager | eager err | aoti err "
             "| .pt2 MiB | .onnx MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|",
             ]
    for r in rows:
        ort_ms = f"{r['onnxruntime_ms']:.3f}" if "onnxruntime_ms" in r else "n/a"
        ort_r = f"{r['ort_vs_eager']:.2f}" if "ort_vs_eager" in r else "n/a"
        onnx_mb = f"{r['onnx_MiB']:.2f}" if "onnx_MiB" in r else "n/a"
        lines.append(f"| {r['case']} | {r['method']} | {r['batch']} | {r['eager_ms']:.3f} | {r['aoti_ms']:.3f} | "
                     f"{ort_ms} | {r['aoti_vs_eager']:.2f} | {ort_r} | {r['eager_rel_err_f64']:.1e} | "
                     f"{r['aoti_rel_err_f64']:.1e} | {r['pt2_MiB']:.2f} | {onnx_mb} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
