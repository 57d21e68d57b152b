"""StrAF against the reference, zuko MAF and zuko NSF, timed in interleaved rounds on held-out graphs.

The speed half of bench/bench_flows.py times one implementation after another; on a shared 2-core
machine whose speed drifts by up to 2x within minutes, the ratios then move with the drift. Here
every round runs each implementation back to back, a block of REPS calls each (so that each runs
from warm caches, as in a loop of its own: one call per round made the smallest model pay the
others' cache traffic, d=15 log_prob 1.15x instead of 1.4x), pytest-benchmark times the rounds,
and each ratio is the median over rounds of that round's ratio, so a slow spell hits all alike.

Cases: the paper's d=15 graph (hidden (64, 64)) and random DAGs with 1-3 parents on graph seeds
that no other benchmark or test uses (10 and 11; d=50 and d=100 hidden (256, 256), d=200 hidden
(512, 512)). Models as in bench_flows.py (5 steps; ours StrAF affine and spline with 8 bins, the
reference's StrAF, zuko MAF and NSF with the same adjacency), each trained 10 epochs first.
Operations: a train step (batch 256, Adam), log_prob (batch 1024, no grad), sample (1024).
zuko NSF's sampling at d=200 (16 s a call) is left out. 1 thread (bench/conftest.py).
``STRNN_FAST_BENCH_INTERLEAVED_CASES=d15,d50-g10`` picks cases.

    pytest bench/bench_flows_interleaved.py --benchmark-enable \\
        --benchmark-json=bench/results/flows_interleaved.json
    python bench/bench_flows_interleaved.py bench/results/flows_interleaved.json \\
        > bench/results/flows_interleaved.md
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_flows import ALL_BUILDERS  # noqa: E402

from strnn_fast.data import make_multimodal  # noqa: E402
from strnn_fast.data.adjacency import random_dag  # noqa: E402

CASES = {
    "d15": (lambda: make_multimodal(n=10, seed=0).adjacency, (64, 64)),
    **{f"d{d}-g{s}": ((lambda d=d, s=s: random_dag(d, parents=(1, 3), seed=s)), (h, h))
       for d, h in ((50, 256), (100, 256), (200, 512)) for s in (10, 11)},
}
# Its own variable: bench_flows (imported above) reads STRNN_FAST_BENCH_CASES, with other names.
CASES = {k: CASES[k] for k in os.environ.get("STRNN_FAST_BENCH_INTERLEAVED_CASES", ",".join(CASES)).split(",")}
IMPLS = ("ours", "reference", "zuko", "ours-spline", "zuko-nsf")
ROUNDS = {"train": 15, "log_prob": 15, "sample": 5}
REPS = {"train": 5, "log_prob": 5, "sample": 1}  # calls per implementation per round (the mean is kept)
_models: dict[str, dict[str, torch.nn.Module]] = {}


def _trained(case: str) -> dict[str, torch.nn.Module]:
    if case not in _models:
        from strnn_fast.train import fit

        make_adjacency, hidden = CASES[case]
        A = make_adjacency()
        data = make_multimodal(n=1000, adjacency=A, seed=0)
        models = {}
        for impl in IMPLS:
            torch.manual_seed(0)
            models[impl] = ALL_BUILDERS[impl](A, hidden)
            fit(models[impl], data.train, epochs=10, batch_size=256, lr=1e-3, seed=0, verbose=False)
        _models[case] = models
    return _models[case]


def _ops(model: torch.nn.Module, op: str, d: int):
    if op == "train":
        x = torch.randn(256, d)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        model.train(True)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            (-model.log_prob(x).mean()).backward()
            opt.step()
        return step
    model.train(False)
    if op == "log_prob":
        x = torch.randn(1024, d)
        return lambda: model.log_prob(x)
    return lambda: model.sample(1024)


@pytest.mark.parametrize("op", list(ROUNDS))
@pytest.mark.parametrize("case", list(CASES))
def test_interleaved(benchmark, case: str, op: str) -> None:
    models = _trained(case)
    d = CASES[case][0]().shape[0]
    impls = [i for i in IMPLS if not (op == "sample" and i == "zuko-nsf" and d >= 200)]
    fns = {i: _ops(models[i], op, d) for i in impls}
    times: dict[str, list[float]] = defaultdict(list)

    reps = REPS[op]

    def one_round() -> None:
        for impl, fn in fns.items():
            with torch.set_grad_enabled(op == "train"):
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[impl].append((time.perf_counter() - t0) / reps)

    one_round()  # warm-up: dispatch measurements, first allocations
    times.clear()
    benchmark.group = f"{case} {op}"
    benchmark.pedantic(one_round, rounds=ROUNDS[op], iterations=1)
    ours = {"affine": "ours", "spline": "ours-spline"}
    base = {"reference": "affine", "zuko": "affine", "zuko-nsf": "spline"}
    from strnn_fast import chain

    benchmark.extra_info.update(
        case=case, op=op, d=d, threads=torch.get_num_threads(), load=os.getloadavg()[0],
        # the fused-chain decisions of ours' first conditioner (measured at its first calls)
        chain={impl: chain.report(models[impl].steps[0].conditioner.net) for impl in ("ours", "ours-spline")},
        median_ms={i: 1e3 * statistics.median(t) for i, t in times.items()},
        # speed-up of ours over each baseline: the median over rounds of that round's ratio
        ratio={i: statistics.median(b / a for a, b in zip(times[ours[kind]], times[i]))
               for i, kind in base.items() if i in times})


def summarize(path: str) -> str:
    data = json.loads(Path(path).read_text())
    rows = [b["extra_info"] for b in data["benchmarks"]]
    lines = ["# StrAF vs the reference, zuko MAF and zuko NSF, interleaved rounds (CPU, fp32, 1 thread)", "",
             f"`pytest bench/bench_flows_interleaved.py`, {data['datetime']}; "
             f"{data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, torch {data['machine_info'].get('torch')}. "
             "Speed-up = baseline time / ours, the median over rounds of each round's ratio (every round runs all "
             "implementations back to back, a few calls each). Spline: ours-spline vs zuko NSF.", "",
             "| case | op | ours ms | ours-spline ms | vs reference | vs zuko MAF | spline vs zuko NSF |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        m, q = r["median_ms"], r["ratio"]
        nsf = f"{q['zuko-nsf']:.2f}x" if "zuko-nsf" in q else "n/a"
        lines.append(f"| {r['case']} | {r['op']} | {m['ours']:.3f} | {m['ours-spline']:.2f} | {q['reference']:.2f}x | "
                     f"{q['zuko']:.2f}x | {nsf} |")
    lines += ["", "## Per size: mean and worst graph", "",
              "| d | op | vs reference mean / worst | vs zuko MAF mean / worst | spline vs NSF mean / worst |",
              "|---|---|---|---|---|"]
    by = defaultdict(list)
    for r in rows:
        by[r["d"], r["op"]].append(r["ratio"])
    for (d, op), qs in sorted(by.items()):
        cells = []
        for k in ("reference", "zuko", "zuko-nsf"):
            v = [q[k] for q in qs if k in q]
            cells.append(f"{statistics.mean(v):.2f}x / {min(v):.2f}x" if v else "n/a")
        lines.append(f"| {d} | {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(summarize(sys.argv[1]))
