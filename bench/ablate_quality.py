r"""Ablations of the spline StrAF on bench_quality's tasks (issue 19, round 3).

Each variant changes one thing against the library's defaults, here in the driver (no library
option exists only for it): the initialization of the conditioners' last layer, the spline's bins,
minimum bin size and bound, and fit's learning-rate schedule. Everything else is bench_quality's
protocol (3 steps, hidden (64, 64), AdamW lr 1e-3, batch 128, 150 epochs, patience 20, the same
data, the seed picking the init and the batches).

Rows go to a JSON-lines file, one per (variant, cell, seed), with the training curves; rows
already there are skipped, so a cut run resumes. Run:

    python bench/ablate_quality.py --cells joint:random50,conditional:ecoli70 --seeds 0-4 \
        --variants default,identity-off,bins16 --out bench/results/quality_ablation_round3.jsonl
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import BINS, HIDDEN, STEPS, Task, fit_row, make_task, parse_seeds  # noqa: E402

from strnn_fast.flows import StrAF  # noqa: E402


def straf(task: Task, **options) -> nn.Module:
    C = 0 if task.context_adjacency is None else task.context_adjacency.shape[1]
    return StrAF(task.adjacency, HIDDEN, STEPS, **{"normalizer": "spline", "bins": BINS, **options},
                 context_features=C, context_adjacency=task.context_adjacency)


def _last_layers(flow: nn.Module) -> list:
    return [step.conditioner.net.layers[-1] for step in flow.steps]


def last_layer_init(scale: float, packed_only: bool = False) -> Callable[[Task], nn.Module]:
    """The conditioners' last layer drawn as nn.Linear's (zuko's) instead of zero, times ``scale``:
    each step then starts as a random spline near the identity instead of the identity.
    ``packed_only``: only the weights of packed layers, bias zero: what StrAF did before the fix of
    conditioners._zero (it zeroed a dense view of a packed layer's weights, not the weights)."""
    def build(task: Task) -> nn.Module:
        flow = straf(task)
        for last in _last_layers(flow):
            if packed_only and not last.packed:
                continue
            last.reset_parameters()
            with torch.no_grad():
                for name, p in last.named_parameters():
                    p.mul_(0.0 if packed_only and name == "bias" else scale)
        return flow
    return build


def identity_init(task: Task) -> nn.Module:
    """Every step starts as the identity: the last layers' weights and biases zero, packed or not."""
    flow = straf(task)
    for last in _last_layers(flow):
        last.zero_()
    return flow


# name -> (model factory, fit options)
VARIANTS: dict[str, tuple[Callable[[Task], nn.Module], dict]] = {
    "default": (straf, {}),
    "init: identity": (identity_init, {}),
    "init: random where packed (before the fix)": (last_layer_init(1.0, packed_only=True), {}),
    "init: random last layer (zuko's)": (last_layer_init(1.0), {}),
    "init: random last layer x0.1": (last_layer_init(0.1), {}),
    "bins 16": (lambda t: straf(t, bins=16), {}),
    "bins 4": (lambda t: straf(t, bins=4), {}),
    "min_bin 1e-2": (lambda t: straf(t, min_bin=1e-2), {}),
    "min_bin 1e-4": (lambda t: straf(t, min_bin=1e-4), {}),
    "bound 5 (zuko's)": (lambda t: straf(t, bound=5.0), {}),
    "bound 8": (lambda t: straf(t, bound=8.0), {}),
    "max_slope 10": (lambda t: straf(t, max_slope=10.0), {}),
    "bound 8 + bins 16": (lambda t: straf(t, bound=8.0, bins=16), {}),
    "prior laplace": (lambda t: straf(t, prior="laplace"), {}),
    "no lr schedule": (straf, {"scheduler": None}),
    "patience 40 (plateau 20)": (straf, {"patience": 40}),
}


def table(rows: list[dict], baseline: str = "init: identity") -> list[str]:
    """Markdown: one row per (cell, variant), mean (worst) over seeds, seeds, and the paired mean
    difference to ``baseline`` over the seeds both ran (negative: the variant is better)."""
    cells = list(dict.fromkeys((r["variant"], r["graph"]) for r in rows))
    lines = [f"| cell | variant | seeds | test NLL/dim: mean (worst) | minus {baseline}, paired | median fit s |",
             "|---|---|---:|---:|---:|---:|"]
    for variant, graph in cells:
        mine = [r for r in rows if (r["variant"], r["graph"]) == (variant, graph)]
        base = {r["seed"]: r["test_nll_per_dim"] for r in mine if r["cfg"] == baseline}
        for cfg in dict.fromkeys(r["cfg"] for r in mine):
            sel = sorted((r for r in mine if r["cfg"] == cfg), key=lambda r: r["seed"])
            nll = np.array([r["test_nll_per_dim"] for r in sel])
            paired = [r["test_nll_per_dim"] - base[r["seed"]] for r in sel if r["seed"] in base]
            diff = f"{np.mean(paired):+.4f}" if paired and cfg != baseline else ""
            seeds = ",".join(str(r["seed"]) for r in sel)
            lines.append(f"| {variant} {graph} | {cfg} | {seeds} | {nll.mean():.4f} ({nll.max():.4f}) | {diff} | "
                         f"{np.median([r['seconds'] for r in sel]):.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="joint:random50,conditional:ecoli70", help="variant:graph,...")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--variants", default="default")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--out", default="bench/results/quality_ablation_round3.jsonl")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    parser.add_argument("--baseline-rows", default="", metavar="RESULTS.json",
                        help="with --table: add the 'StrAF spline' rows of a bench_quality results file as the "
                             "baseline variant 'init: identity' (cells and seeds --out lacks)")
    parser.add_argument("--as-quality", nargs=2, metavar=("VARIANT", "RESULTS.json"),
                        help="write VARIANT's rows of --out as bench_quality rows of 'StrAF spline' (for a variant "
                             "that became the default: its --reuse and --wall-time-of read them) and exit")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.out).read_text().splitlines()] if Path(args.out).exists() else []
    if args.table:
        if args.baseline_rows:
            have = {(r["cfg"], r["variant"], r["graph"], r["seed"]) for r in rows}
            extra = [{**r, "cfg": "init: identity"} for r in json.loads(Path(args.baseline_rows).read_text())["rows"]
                     if r["model"] == "StrAF spline"
                     and ("init: identity", r["variant"], r["graph"], r["seed"]) not in have]
            rows = extra + rows
        print("\n".join(table(rows)))
        return
    if args.as_quality:
        name, target = args.as_quality
        mine = [{**{k: v for k, v in r.items() if k not in ("cfg", "load")}, "model": "StrAF spline",
                 "ablation_variant": name} for r in rows if r["cfg"] == name]
        loads = [r["load"] for r in rows if r["cfg"] == name]
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "command": f"python bench/ablate_quality.py --out {args.out} --as-quality {name!r} {target}",
                "machine": f"{platform.machine()}, shared 2-core box, load average {min(loads):.2f}-{max(loads):.2f} "
                           "at the start of the fits",
                "torch": torch.__version__, "threads": 1,
                "note": f"rows of the ablation variant {name!r}, fitted by bench/ablate_quality.py with the "
                        "protocol of bench_quality.py (same fit_row)"}
        Path(target).write_text(json.dumps({"meta": meta, "rows": mine, "reused": []}))
        print(f"{len(mine)} rows -> {target}")
        return
    torch.set_num_threads(1)
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; known: {', '.join(VARIANTS)}")
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(r["cfg"], r["variant"], r["graph"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())}
    load = os.getloadavg()[0]
    for cell in args.cells.split(","):
        variant, graph = cell.split(":")
        for seed in parse_seeds(args.seeds):
            task = make_task(graph, variant, seed)
            for name in variants:
                if (name, variant, graph, seed) in done:
                    continue
                factory, options = VARIANTS[name]
                row = {"cfg": name, "variant": variant, "graph": graph, "load": round(load, 2),
                       **fit_row(task, factory, seed, args.epochs, **options)}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                load = os.getloadavg()[0]
                print(f"{name} | {variant} {graph} seed {seed}: {row['test_nll_per_dim']:.4f}, {row['epochs']} epochs "
                      f"(best {row['best_epoch'] + 1}, lr halved at {row['lr_halved_at']}), {row['seconds']:.0f} s",
                      flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
