"""Per-layer CPU benchmark of the C++ masked-layer kernel (strnn_fast.csr_ops) against torch dense
(F.linear on the masked weight) and torch CSR (sparse_ops.sparse_linear), side by side in one
process, with this machine's limits measured in the same run (a large copy for bandwidth, a large
GEMM for the FMA rate) and each layer's roofline fraction.

Layers are those of FastStrNN(d, (h, h), d) on random DAGs (1-3 parents). 1 thread, then the
thread scaling at d=1000 on 2 threads. Writes bench/results/cpu_layer.md and .json.

    python bench/bench_cpu_layer.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from strnn_fast.csr_ops import csr_linear
from strnn_fast.data.adjacency import random_dag
from strnn_fast.nn import FastStrNN
from strnn_fast.sparse_ops import scatter_dense, sparse_linear

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_name  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CONFIGS = {50: 256, 100: 256, 200: 512, 1000: 2000}  # d -> hidden width


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_limits() -> dict:
    """Copy bandwidth (read + write bytes / s) and fp32 GEMM FMA rate on 1 thread."""
    a = torch.empty(64 * 2**20 // 4)
    b = torch.empty_like(a)
    t = median_time(lambda: b.copy_(a), 9)
    n = 1024
    m1, m2 = torch.randn(n, n), torch.randn(n, n)
    g = median_time(lambda: m1 @ m2, 5)
    return {"bandwidth_Bps": 2 * a.numel() * 4 / t, "fma_per_s": n**3 / g}


def layer_row(layer_name, s, batch, limits, reps):
    out, inn = s.shape
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(s.nnz, generator=gen).requires_grad_()
    b = torch.randn(out, generator=gen).requires_grad_()
    w = scatter_dense(v.detach(), s).requires_grad_()
    x = torch.randn(batch, inn, generator=gen).requires_grad_()
    g = torch.randn(batch, out, generator=gen)

    def fwd(f):
        def run():
            with torch.no_grad():
                f()
        return run

    def fwdbwd(f):
        # The three gradients as a network's backward asks for them (autograd.grad: nothing is
        # accumulated into .grad, whose layout contract would charge a copy to one impl only).
        def run():
            torch.autograd.grad(f(), inputs[f], g)
        return run

    impls = {
        "cpp": lambda: csr_linear(x, v, b, s),
        "dense": lambda: F.linear(x, w, b),
        "torch_csr": lambda: sparse_linear(x, v, b, s),
    }
    inputs = {impls["cpp"]: (x, v, b), impls["dense"]: (x, w, b), impls["torch_csr"]: (x, v, b)}
    row = {"layer": layer_name, "out": out, "in": inn, "nnz": s.nnz, "density": s.nnz / (out * inn), "batch": batch}
    for name, f in impls.items():
        row[f"{name}_fwd_s"] = median_time(fwd(f), reps)
        row[f"{name}_fwdbwd_s"] = median_time(fwdbwd(f), reps)
    bytes_moved = 4 * (batch * (inn + out) + out) + 12 * s.nnz  # x, y, bias; values + int64 columns
    roof = max(bytes_moved / limits["bandwidth_Bps"], batch * s.nnz / limits["fma_per_s"])
    row["roofline_s"] = roof
    row["roofline_fraction"] = roof / row["cpp_fwd_s"]
    return row


def layers_of(d: int, h: int):
    adjacency = random_dag(d, parents=(1, 3), seed=d)
    model = FastStrNN(d, (h, h), d, adjacency=adjacency)
    return [(f"d{d} L{i} {m.out_features}x{m.in_features}", m.csr(torch.device("cpu")))
            for i, m in enumerate(model.layers)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    limits = machine_limits()
    rows = []
    for d, h in CONFIGS.items():
        batches = (1, 64, 256, 1024, 4096) if d < 1000 else (1, 256, 1024)
        if args.quick:
            batches = (1, 256)
        layers = layers_of(d, h)
        if d == 1000:
            layers = layers[1:2]  # the (h x h) layer: the big one
        for name, s in layers:
            for batch in batches:
                reps = 21 if batch * s.nnz < 1e6 else 5
                rows.append(layer_row(name, s, batch, limits, reps))
                r = rows[-1]
                print(f"{name:24s} B={batch:5d} nnz={r['nnz']:7d} cpp {r['cpp_fwd_s']*1e6:9.1f}us "
                      f"dense {r['dense_fwd_s']*1e6:9.1f}us csr {r['torch_csr_fwd_s']*1e6:9.1f}us "
                      f"roof {r['roofline_fraction']:.2f}", flush=True)
    # Thread scaling: the C++ forward and forward+backward at d=1000, batch 1024, 1 vs 2 threads.
    name, s = layers_of(1000, CONFIGS[1000])[1]
    scaling = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        r = layer_row(name, s, 1024, limits, 5)
        scaling[threads] = {"cpp_fwd_s": r["cpp_fwd_s"], "cpp_fwdbwd_s": r["cpp_fwdbwd_s"]}
    torch.set_num_threads(1)
    meta = {"cpu": cpu_name(), "torch": torch.__version__, "threads": 1, "load_before": load_before,
            "load_after": os.getloadavg(), "command": "python bench/bench_cpu_layer.py" + (" --quick" if args.quick else ""),
            "limits": limits, "scaling_d1000_b1024": scaling}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_layer.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_markdown(meta, rows)


def write_markdown(meta, rows) -> None:
    lim = meta["limits"]
    lines = [
        "# C++ masked-layer kernel vs torch dense and torch CSR, per layer (CPU, fp32)",
        "",
        f"`{meta['command']}` on {meta['cpu']}, torch {meta['torch']}, 1 thread (torch.set_num_threads(1)).",
        f"Shared 2-core machine: load average {meta['load_before'][0]:.1f} before, {meta['load_after'][0]:.1f} after "
        "(other agents' jobs ran beside it; ratios measured side by side are the figures to trust).",
        f"Machine limits measured in the same run: copy bandwidth {lim['bandwidth_Bps']/1e9:.1f} GB/s, "
        f"fp32 GEMM {lim['fma_per_s']/1e9:.1f} GFMA/s.",
        "Roofline time = max(bytes / bandwidth, batch * nnz / FMA rate); fraction = roofline / C++ forward time.",
        "Medians; speed-up columns are torch time / C++ time.",
        "",
        "| layer | density | batch | C++ fwd us | dense fwd x | CSR fwd x | C++ fwd+bwd us | dense f+b x | CSR f+b x | roofline frac |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {100*r['density']:.1f}% | {r['batch']} | {r['cpp_fwd_s']*1e6:.1f} | "
            f"{r['dense_fwd_s']/r['cpp_fwd_s']:.2f} | {r['torch_csr_fwd_s']/r['cpp_fwd_s']:.2f} | "
            f"{r['cpp_fwdbwd_s']*1e6:.1f} | {r['dense_fwdbwd_s']/r['cpp_fwdbwd_s']:.2f} | "
            f"{r['torch_csr_fwdbwd_s']/r['cpp_fwdbwd_s']:.2f} | {r['roofline_fraction']:.2f} |")
    sc = meta["scaling_d1000_b1024"]
    lines += [
        "",
        "## Thread scaling, d=1000 (h x h) layer, batch 1024",
        "",
        f"forward: 1 thread {sc[1]['cpp_fwd_s']*1e3:.2f} ms, 2 threads {sc[2]['cpp_fwd_s']*1e3:.2f} ms "
        f"({sc[1]['cpp_fwd_s']/sc[2]['cpp_fwd_s']:.2f}x); forward+backward: {sc[1]['cpp_fwdbwd_s']*1e3:.2f} ms, "
        f"{sc[2]['cpp_fwdbwd_s']*1e3:.2f} ms ({sc[1]['cpp_fwdbwd_s']/sc[2]['cpp_fwdbwd_s']:.2f}x).",
        "",
    ]
    (RESULTS / "cpu_layer.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
