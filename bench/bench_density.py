r"""StrNN density estimator against MADE on the paper's binary data (d=15), and the reference's.

Same budget for every model: hidden (100, 100), Adam(W) lr 1e-3, batch 64, up to 200 epochs,
patience 10 on the validation split; test NLL in nats, mean ± std over seeds. The reference's
``StrNNDensityEstimator`` is trained by the same loop (its forward gives Bernoulli logits).

Run (about a minute on 2 cores, torch pinned to 1 thread):
    python bench/bench_density.py
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _machine import cpu_name

from strnn_fast import StrNNDensityEstimator
from strnn_fast.data import load_reference_binary
from strnn_fast.train import evaluate_nll, fit

SEEDS = (0, 1, 2)
OUT = Path(__file__).parent / "results"


class ReferenceBinary(torch.nn.Module):
    """The reference's StrNN with Bernoulli outputs, behind our ``log_prob`` interface."""

    def __init__(self, adjacency: np.ndarray, hidden: tuple[int, ...]):
        super().__init__()
        from strnn.models.strNN import StrNN

        self.net = StrNN(adjacency.shape[0], hidden, adjacency.shape[0], adjacency=adjacency.astype(float))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def main() -> None:
    torch.set_num_threads(1)
    data = load_reference_binary()
    full = np.tril(np.ones((data.d, data.d), dtype=bool), k=-1)
    builders = {
        "StrNN (ours, greedy)": lambda: StrNNDensityEstimator(data.adjacency, (100, 100), "binary"),
        "MADE (ours)": lambda: StrNNDensityEstimator(full, (100, 100), "binary", opt_type="made"),
        "StrNN (reference 0.2.0)": lambda: ReferenceBinary(np.asarray(data.adjacency), (100, 100)),
    }
    rows = {}
    for name, build in builders.items():
        nll, seconds = [], []
        for seed in SEEDS:
            torch.manual_seed(seed)
            model = build()
            start = time.perf_counter()
            fit(model, data.train, data.val, epochs=200, batch_size=64, lr=1e-3, patience=10, seed=seed,
                verbose=False)
            seconds.append(time.perf_counter() - start)
            nll.append(evaluate_nll(model, data.test))
        rows[name] = {"test_nll": nll, "mean": float(np.mean(nll)), "std": float(np.std(nll)),
                      "fit_seconds": float(np.median(seconds))}
        print(f"{name:<26} {np.mean(nll):.4f} ± {np.std(nll):.4f}", file=sys.stderr)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
            "torch": torch.__version__, "threads": 1, "seeds": SEEDS,
            "data": "reference binary d=15 (train 1600 / val 400 / test 500)"}
    OUT.mkdir(exist_ok=True)
    (OUT / "density_binary.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    lines = ["# Binary density estimation on the paper's data (test NLL, nats; lower is better)", "",
             f"- {meta['date']}, {meta['cpu']}, torch {meta['torch']} ({meta['threads']} thread), seeds {SEEDS}",
             "- hidden (100, 100), lr 1e-3, batch 64, up to 200 epochs, patience 10", "",
             "| model | test NLL (mean ± std) | median fit time |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['mean']:.4f} ± {v['std']:.4f} | {v['fit_seconds']:.1f} s |" for k, v in rows.items()]
    (OUT / "density_binary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
