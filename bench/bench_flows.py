r"""StrAF against the reference's StrAF and zuko's MAF/NSF on the same graph, on CPU.

Part 1 (speed, pytest-benchmark): one training step (forward, backward, Adam step; batch 256),
``log_prob`` (no grad, batch 1024) and sampling (1024 draws) for

* ``ours``: :class:`strnn_fast.flows.StrAF` (affine, 5 steps, its default masks: opt_type="zuko");
* ``reference``: strnn 0.2.0's flow built by its own ``AutoregressiveFlowFactory`` from the same
  configuration (StrNN conditioner, affine normalizer, greedy, no permutation);
* ``zuko``: ``zuko.flows.MAF(features=d, transforms=5, hidden_features=hidden, adjacency=A + I)``;
* ``ours-spline`` and ``zuko-nsf``: StrAF with the spline normalizer (8 bins) and
  ``zuko.flows.NSF(..., bins=8, adjacency=A + I)``, the spline pair (up to d=STRNN_FAST_BENCH_SPLINE_MAX_D, 200),

on the paper's multimodal graph (d=15, depth 7, hidden (64, 64)) and random sparse DAGs (1-3
parents; d=50 and d=100, hidden (256, 256); d=200, hidden (512, 512)). Before timing, every model is
trained for a few epochs on multimodal data over its graph, so that sampling sees conditioners
that actually depend on their inputs. torch is pinned to one thread (bench/conftest.py;
STRNN_FAST_BENCH_THREADS overrides). ``STRNN_FAST_BENCH_CASES`` (default ``d15,d50,d200``) and
``STRNN_FAST_BENCH_IMPLS`` (default all five) pick a subset. The reference's sampler runs up
to d + 1 conditioner passes per step and stops once x stops changing in floating point (one
pass after the last change); ours stops at a bitwise fixed point too, after at most depth + 1
passes. Both counts are recorded per step in ``extra_info``.

Part 2 (NLL after the same budget, ``python bench/bench_flows.py``): StrAF (affine, spline and
UMNN), ARF, GNF (ours), the reference's StrAF, zuko's MAF and NSF on the same graph, all trained
by :func:`strnn_fast.train.fit` with the same optimizer, epochs, batch size, learning rate and
early stopping on the multimodal data (n=1000: 600/200/200, standardized), test NLL and fit
time over seeds (the one-time torch._dynamo import of the process's first optimizer is paid
before the clock starts). Writes bench/results/flows_nll.json/.md (``--models`` picks a subset, by
substring; ``--seeds``, ``--epochs`` shrink it; ``--output`` renames the files).

Run (each under 3 minutes on a quiet 2-core machine, except the full NLL table with UMNN):
    pytest bench/bench_flows.py --benchmark-enable --benchmark-max-time=0.5 --benchmark-min-rounds=5 \
        --benchmark-json=bench/results/flows_cpu.json -k "log_prob or sample"
    python bench/summarize.py bench/results/flows_cpu.json > bench/results/flows_cpu.md
    python bench/bench_flows.py --seeds 3 --models "spline,UMNN,StrAF (ours),NSF,reference"
    python bench/bench_flows.py --seeds 3 --models "spline,UMNN,NSF" --output flows_nll_spline  # issue 10's pair
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from strnn_fast.data import make_multimodal
from strnn_fast.data.adjacency import random_dag
from strnn_fast.flows import ARF, GNF, StrAF
from strnn_fast.graph import depth

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = 5
ALL_CASES = {
    "d15": (lambda: make_multimodal(n=10, seed=0).adjacency, (64, 64)),
    "d50": (lambda: random_dag(50, parents=(1, 3), seed=0), (256, 256)),
    "d100": (lambda: random_dag(100, parents=(1, 3), seed=1), (256, 256)),
    "d200": (lambda: random_dag(200, parents=(1, 3), seed=2), (512, 512)),
}
CASES = {k: ALL_CASES[k] for k in os.environ.get("STRNN_FAST_BENCH_CASES", ",".join(ALL_CASES)).split(",")}


class ReferenceStrAF(nn.Module):
    """strnn 0.2.0's StrAF from its own factory, with ``log_prob`` and ``sample`` on top."""

    def __init__(self, A: np.ndarray, hidden: tuple[int, ...], steps: int = STEPS):
        super().__init__()
        from strnn.models.config_constants import (
            ADJ, COND_ACT, COND_HID, COND_TYPE, FLOW_PERMUTE, FLOW_STEPS, INPUT_DIM, N_PARAM_PER_VAR,
            NORM_TYPE, OPT_ARGS, OPT_TYPE,
        )
        from strnn.models.discrete_flows import AutoregressiveFlowFactory

        config = {
            INPUT_DIM: A.shape[0], ADJ: A.astype(np.float64), FLOW_STEPS: steps, FLOW_PERMUTE: False,
            COND_TYPE: "strnn", NORM_TYPE: "affine", COND_HID: hidden, COND_ACT: "relu", N_PARAM_PER_VAR: 2,
            OPT_TYPE: "greedy", OPT_ARGS: {"var_penalty_weight": 0.0},
        }
        self.flow = AutoregressiveFlowFactory(config).build_flow()
        self.d = A.shape[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        from strnn.models.normalizing_flow import standard_normal_logprob

        z, log_det = self.flow(x)
        return standard_normal_logprob(z) + log_det

    def sample(self, n: int) -> torch.Tensor:
        return self.flow.invert(torch.randn(n, self.d))


class ZukoMAF(nn.Module):
    """zuko's MAF on the same graph (zuko wants the diagonal set)."""

    def __init__(self, A: np.ndarray, hidden: tuple[int, ...], steps: int = STEPS):
        super().__init__()
        import zuko

        adjacency = torch.from_numpy(A.astype(bool) | np.eye(A.shape[0], dtype=bool))
        self.flow = zuko.flows.MAF(features=A.shape[0], transforms=steps, hidden_features=hidden, adjacency=adjacency)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob(x)

    def sample(self, n: int) -> torch.Tensor:
        return self.flow().sample((n,))


class ZukoNSF(ZukoMAF):
    """zuko's NSF (rational-quadratic splines, 8 bins) on the same graph."""

    def __init__(self, A: np.ndarray, hidden: tuple[int, ...], steps: int = STEPS):
        nn.Module.__init__(self)
        import zuko

        adjacency = torch.from_numpy(A.astype(bool) | np.eye(A.shape[0], dtype=bool))
        self.flow = zuko.flows.NSF(features=A.shape[0], transforms=steps, hidden_features=hidden, bins=8,
                                   adjacency=adjacency)


ALL_BUILDERS: dict[str, Callable[[np.ndarray, tuple[int, ...]], nn.Module]] = {
    "ours": lambda A, h: StrAF(A, h, STEPS),
    "reference": ReferenceStrAF,
    "zuko": ZukoMAF,
    "ours-spline": lambda A, h: StrAF(A, h, STEPS, normalizer="spline", bins=8),
    "zuko-nsf": ZukoNSF,
}
BUILDERS = {k: ALL_BUILDERS[k] for k in os.environ.get("STRNN_FAST_BENCH_IMPLS", ",".join(ALL_BUILDERS)).split(",")}
_cache: dict[tuple[str, str], nn.Module] = {}


WARMUP_EPOCHS = 10


SPLINE_MAX_D = int(os.environ.get("STRNN_FAST_BENCH_SPLINE_MAX_D", "200"))


def _model(impl: str, case: str) -> nn.Module:
    if impl in ("ours-spline", "zuko-nsf") and CASES[case][0]().shape[0] > SPLINE_MAX_D:
        pytest.skip(f"spline pair timed up to d={SPLINE_MAX_D}")
    if (impl, case) not in _cache:
        from strnn_fast.train import fit

        make_adjacency, hidden = CASES[case]
        A = make_adjacency()
        torch.manual_seed(0)
        model = BUILDERS[impl](A, hidden)
        data = make_multimodal(n=1000, adjacency=A, seed=0)
        fit(model, data.train, epochs=WARMUP_EPOCHS, batch_size=256, lr=1e-3, seed=0, verbose=False)
        _cache[impl, case] = model
    return _cache[impl, case]


def _passes_per_step(model: nn.Module, n: int) -> list[int] | None:
    """Conditioner passes of each step in one ``sample(n)`` (ours and the reference)."""
    if isinstance(model, StrAF):
        model.reset_passes()
        model.sample(n)
        return model.passes
    if isinstance(model, ReferenceStrAF):
        counts = []
        for step in model.flow.steps:
            calls = [0]
            forward = step.conditioner.forward
            step.conditioner.forward = lambda x, f=forward, c=calls: (c.__setitem__(0, c[0] + 1), f(x))[1]
            counts.append(calls)
        model.sample(n)
        for step in model.flow.steps:
            del step.conditioner.forward  # back to the class's method
        return [c[0] for c in counts]
    return None


def _setup(impl: str, case: str, train: bool) -> tuple[nn.Module, np.ndarray]:
    """The case's trained model, in train or eval mode, and the case's graph."""
    return _model(impl, case).train(train), CASES[case][0]()


# Every benchmark below runs for each case and implementation.
pytestmark = [pytest.mark.parametrize("case", list(CASES)), pytest.mark.parametrize("impl", list(BUILDERS))]


def test_train_step(benchmark, impl: str, case: str) -> None:
    model, A = _setup(impl, case, train=True)
    benchmark.group = f"train step {case} batch=256"
    x = torch.randn(256, A.shape[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        (-model.log_prob(x).mean()).backward()
        opt.step()

    benchmark(step)


def test_log_prob(benchmark, impl: str, case: str) -> None:
    model, A = _setup(impl, case, train=False)
    benchmark.group = f"log_prob {case} batch=1024"
    x = torch.randn(1024, A.shape[0])
    with torch.no_grad():
        benchmark(model.log_prob, x)


def test_sample(benchmark, impl: str, case: str) -> None:
    model, A = _setup(impl, case, train=False)
    benchmark.group = f"sample {case} n=1024 (depth {depth(A)})"
    with torch.no_grad():
        passes = _passes_per_step(model, 1024)
        if passes is not None:
            benchmark.extra_info["passes_per_step"] = passes
        benchmark(model.sample, 1024)


NLL_MODELS: dict[str, Callable[[np.ndarray], nn.Module]] = {
    "StrAF (ours)": lambda A: StrAF(A, (64, 64), STEPS),
    "StrAF-spline (ours)": lambda A: StrAF(A, (64, 64), STEPS, normalizer="spline", bins=8),
    "StrAF-UMNN (ours)": lambda A: StrAF(A, (64, 64), STEPS, normalizer="umnn"),
    "ARF (ours, MADE)": lambda A: ARF(A, (64, 64), STEPS),
    "GNF (ours)": lambda A: GNF(A, (64, 64), STEPS),
    "StrAF (reference 0.2.0)": lambda A: ReferenceStrAF(A, (64, 64)),
    "MAF (zuko, same graph)": lambda A: ZukoMAF(A, (64, 64)),
    "NSF (zuko, same graph)": lambda A: ZukoNSF(A, (64, 64)),
}


def nll_table(seeds: list[int], epochs: int, models: list[str]) -> dict:
    from strnn_fast.train import evaluate_nll, fit

    rows: dict[str, dict[str, list[float]]] = {name: {"test_nll": [], "seconds": [], "epochs": []} for name in models}
    # The first optimizer a process builds imports torch._dynamo (~2 s): pay it here, not inside
    # the first model's fit time.
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    for seed in seeds:
        data = make_multimodal(n=1000, seed=seed)
        for name in models:
            build = NLL_MODELS[name]
            torch.manual_seed(seed)
            model = build(data.adjacency)
            start = time.perf_counter()
            history = fit(model, data.train, data.val, epochs=epochs, batch_size=256, lr=1e-3, patience=10,
                          seed=seed, verbose=False)
            rows[name]["seconds"].append(time.perf_counter() - start)
            rows[name]["epochs"].append(history.epochs)
            rows[name]["test_nll"].append(evaluate_nll(model, data.test))
            print(f"seed {seed} {name}: test NLL {rows[name]['test_nll'][-1]:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--models", default="", help="comma-separated substrings of model names (default: all)")
    parser.add_argument("--output", default="flows_nll", help="results file stem in bench/results")
    args = parser.parse_args()
    from conftest import THREADS  # bench/conftest.py pins the threads

    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    models = [m for m in NLL_MODELS if not keys or any(k in m for k in keys)]
    rows = nll_table(list(range(args.seeds)), args.epochs, models)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": THREADS, "data": "make_multimodal(n=1000, seed=s), d=15, 600/200/200",
        "budget": f"fit: Adam(W) lr 1e-3, batch 256, up to {args.epochs} epochs, patience 10 on validation NLL",
        "models": "5 steps, hidden (64, 64); affine unless marked UMNN (default options) or spline/NSF (8 bins)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# Test NLL on the multimodal data (nats per sample, lower is better)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| model | test NLL (mean ± std over seeds) | epochs | fit time |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        nll = np.array(r["test_nll"])
        lines.append(f"| {name} | {nll.mean():.3f} ± {nll.std():.3f} | {np.mean(r['epochs']):.0f} | "
                     f"{np.mean(r['seconds']):.1f} s |")
    (RESULTS / f"{args.output}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
