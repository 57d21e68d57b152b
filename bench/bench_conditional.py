r"""Conditional density estimation p(x | c) on a task with a known answer: StrAF-spline vs zuko NSF.

Data (:func:`make_task`): a random DAG on D variables (1-2 parents each) and C context features
c ~ N(0, I); every variable reads one context feature (the D x C context adjacency ``Ac``) and

``x_i = sum_{j in pa(i)} a_ij tanh(x_j) + b_i sin(2 c_k(i)) + s_i e_i``,

with bimodal noise ``e_i ~ 0.5 N(-1, 0.3²) + 0.5 N(1, 0.3²)``. The conditional density is then
known exactly, ``log p(x | c) = Σ_i log p_e((x_i - m_i) / s_i) - log s_i``, and the table reports
its test NLL as the floor (Bayes NLL) every model tries to reach.

Models (same budget: 5 steps, hidden (64, 64), 8 bins, AdamW lr 1e-3, batch 256, up to
``--epochs`` epochs, patience 10, x standardized with the training statistics, NLL reported in
the data's units):

* ``StrAF-spline, context adjacency``: StrAF on the DAG with ``context_adjacency=Ac``;
* ``StrAF-spline, full context``: the same with every variable reading every context feature;
* ``NSF (zuko), D x (D + C) adjacency``: ``zuko.flows.NSF(D, C, adjacency=[A + I | Ac])``;
* ``NSF (zuko), full``: zuko NSF without adjacency (MADE order), the unstructured baseline.

Run (about 3 minutes on 2 busy cores with the defaults; ``--seeds 1 --epochs 60`` for a smoke test):
    python bench/bench_conditional.py --seeds 3 --epochs 150
It writes bench/results/conditional_nll.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from strnn_fast.data.adjacency import random_dag
from strnn_fast.flows import StrAF
from strnn_fast.train import evaluate_nll, fit

RESULTS = Path(__file__).resolve().parent / "results"
STEPS, HIDDEN, BINS = 5, (64, 64), 8
NOISE_MODES, NOISE_STD = (-1.0, 1.0), 0.3


@dataclass
class Task:
    adjacency: np.ndarray  # (D, D)
    context_adjacency: np.ndarray  # (D, C)
    splits: dict[str, tuple[np.ndarray, np.ndarray, float]]  # name -> (x, c, Bayes NLL per row)


def _noise_log_prob(e: np.ndarray) -> np.ndarray:
    comps = [-0.5 * ((e - m) / NOISE_STD) ** 2 - math.log(NOISE_STD * math.sqrt(2 * math.pi)) for m in NOISE_MODES]
    return np.logaddexp(*comps) - math.log(len(NOISE_MODES))


def make_task(D: int = 10, C: int = 4, n: int = 3500, seed: int = 0) -> Task:
    """The task above, split 2000/500/1000 (train/val/test) for n = 3500."""
    rng = np.random.default_rng(seed)
    A = random_dag(D, parents=(1, 2), seed=seed)
    Ac = np.zeros((D, C), dtype=bool)
    Ac[np.arange(D), rng.integers(0, C, size=D)] = True
    a = rng.uniform(1.0, 2.5, size=(D, D)) * rng.choice([-1, 1], size=(D, D)) * A
    b = rng.uniform(1.0, 2.0, size=D) * rng.choice([-1, 1], size=D)
    s = rng.uniform(0.3, 1.0, size=D)
    c = rng.standard_normal((n, C))
    x = np.zeros((n, D))
    log_p = np.zeros(n)
    for i in range(D):  # random_dag is in topological order
        mean = np.tanh(x) @ a[i] + b[i] * np.sin(2 * c[:, Ac[i]].sum(1))
        e = rng.choice(NOISE_MODES, size=n) + NOISE_STD * rng.standard_normal(n)
        x[:, i] = mean + s[i] * e
        log_p += _noise_log_prob(e) - math.log(s[i])
    cut = [0, int(n * 4 / 7), int(n * 5 / 7), n]
    splits = {name: (x[lo:hi], c[lo:hi], float(-log_p[lo:hi].mean()))
              for name, lo, hi in zip(("train", "val", "test"), cut, cut[1:])}
    return Task(A, Ac, splits)


class ZukoNSF(nn.Module):
    """zuko's NSF with ``log_prob(x, context=c)``; adjacency (D, D + C) with the diagonal set, or None."""

    def __init__(self, D: int, C: int, adjacency: np.ndarray | None):
        super().__init__()
        import zuko

        adj = None if adjacency is None else torch.from_numpy(adjacency)
        self.flow = zuko.flows.NSF(features=D, context=C, bins=BINS, transforms=STEPS, hidden_features=HIDDEN,
                                   adjacency=adj)
        self.d = D

    def log_prob(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.flow(context).log_prob(x)


MODELS: dict[str, Callable[[Task], nn.Module]] = {
    "StrAF-spline, context adjacency": lambda t: StrAF(t.adjacency, HIDDEN, STEPS, normalizer="spline", bins=BINS,
                                                       context_features=t.context_adjacency.shape[1],
                                                       context_adjacency=t.context_adjacency),
    "StrAF-spline, full context": lambda t: StrAF(t.adjacency, HIDDEN, STEPS, normalizer="spline", bins=BINS,
                                                  context_features=t.context_adjacency.shape[1]),
    "NSF (zuko), D x (D + C) adjacency": lambda t: ZukoNSF(
        *t.context_adjacency.shape,
        np.concatenate([t.adjacency.astype(bool) | np.eye(len(t.adjacency), dtype=bool), t.context_adjacency], 1)),
    "NSF (zuko), full": lambda t: ZukoNSF(*t.context_adjacency.shape, None),
}


def run(seeds: list[int], epochs: int, models: list[str]) -> dict:
    rows: dict[str, dict[str, list[float]]] = {m: {"test_nll": [], "seconds": [], "epochs": []} for m in models}
    rows["Bayes (true p(x | c))"] = {"test_nll": [], "seconds": [], "epochs": []}
    for seed in seeds:
        task = make_task(seed=seed)
        (xt, ct, _), (xv, cv, _), (xs, cs, bayes) = (task.splits[k] for k in ("train", "val", "test"))
        mean, std = xt.mean(0), xt.std(0)
        log_std = float(np.log(std).sum())  # NLL in data units = NLL of standardized x + Σ log std
        rows["Bayes (true p(x | c))"]["test_nll"].append(bayes)
        for name in models:
            torch.manual_seed(seed)
            model = MODELS[name](task)
            start = time.perf_counter()
            history = fit(model, (xt - mean) / std, (xv - mean) / std, context=ct, val_context=cv, epochs=epochs,
                          batch_size=256, lr=1e-3, patience=10, seed=seed, verbose=False)
            rows[name]["seconds"].append(time.perf_counter() - start)
            rows[name]["epochs"].append(history.epochs)
            rows[name]["test_nll"].append(evaluate_nll(model, (xs - mean) / std, context=cs) + log_std)
            print(f"seed {seed} {name}: test NLL {rows[name]['test_nll'][-1]:.3f} (Bayes {bayes:.3f}), "
                  f"{rows[name]['seconds'][-1]:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + "; ".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models != ",".join(MODELS) else list(MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}")
    rows = run(list(range(args.seeds)), args.epochs, models)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 1,
        "task": "make_task(D=10, C=4, n=3500, seed=s): 2000/500/1000, bimodal noise, 1 context feature per variable",
        "budget": f"AdamW lr 1e-3, batch 256, up to {args.epochs} epochs, patience 10; {STEPS} steps, hidden {HIDDEN},"
                  f" {BINS} bins",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "conditional_nll.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# Conditional task: test NLL of p(x | c) (nats per sample, data units, lower is better)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| model | test NLL (mean ± std over seeds) | epochs | fit time |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        nll = np.array(r["test_nll"])
        extra = (f"{np.mean(r['epochs']):.0f} | {np.mean(r['seconds']):.1f} s" if r["seconds"] else "- | -")
        lines.append(f"| {name} | {nll.mean():.3f} ± {nll.std():.3f} | {extra} |")
    (RESULTS / "conditional_nll.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
