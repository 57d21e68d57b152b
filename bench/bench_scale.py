r"""d=10,000 end to end on CPU: sparse DAG -> sparse masks -> packed FastStrNN -> AdamW steps -> file.

Random DAG with 2-5 parents per node (``strnn_fast.data.random_dag(..., sparse=True)``), hidden
(20000, 20000), batch 256, backend "auto" (every layer packed: its mask keeps under 0.4% of the
weights), torch pinned to 1 thread. Reports the build time (factorization included), the first
training step (which pays "auto"'s one-off dispatch measurements) and the median of the next
ones, the file size, save/load times and the process's peak RSS (``ru_maxrss``).

Run (about 10 s):
    python bench/bench_scale.py --out bench/results/scale_d10000.md
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import tempfile
import time

import torch

import strnn_fast
from strnn_fast import FastStrNN
from strnn_fast.data import random_dag

from _machine import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", help="markdown file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    d, h = args.d, 2 * args.d
    t0 = time.perf_counter()
    A = random_dag(d, parents=(2, 5), seed=0, sparse=True)
    t1 = time.perf_counter()
    net = FastStrNN(d, (h, h), d, adjacency=A, backend=args.backend)
    t2 = time.perf_counter()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(256, d)
    steps = []
    for _ in range(args.steps):
        s = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        net(x).pow(2).mean().backward()
        opt.step()
        steps.append(time.perf_counter() - s)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.pt")
        s = time.perf_counter()
        net.save(path)
        t_save = time.perf_counter() - s
        size = os.path.getsize(path)
        s = time.perf_counter()
        strnn_fast.load(path)
        t_load = time.perf_counter() - s
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    nnz = [int(layer.csr(torch.device("cpu")).nnz) for layer in net.layers]
    rows = [
        ("graph (random DAG, 2-5 parents)", f"{t1 - t0:.2f} s"),
        ("build: factorize (sparse) + layers", f"{t2 - t1:.2f} s"),
        ("first train step (incl. dispatch measurement)", f"{steps[0]:.3f} s"),
        (f"train step, median of {len(steps) - 1}", f"{statistics.median(steps[1:]):.3f} s"),
        ("kept weights per layer", ", ".join(map(str, nnz))),
        ("file size / save / load", f"{size / 1e6:.1f} MB / {t_save:.2f} s / {t_load:.2f} s"),
        ("peak RSS of the process", f"{rss:.0f} MB"),
    ]
    text = (f"# FastStrNN at d={d}, hidden ({h}, {h}), batch 256, backend={args.backend!r}\n\n"
            f"{cpu_name()}, torch {torch.__version__}, 1 thread, "
            f"{datetime.date.today()}. Command: `python bench/bench_scale.py`.\n\n"
            "| what | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
