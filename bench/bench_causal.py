r"""Causal StrAF against CAREFL (the StrNN paper's causal comparison), and batched counterfactual timing.

Part 1 (accuracy): for d in {5, 10} and several seeds, a random sparse nonlinear additive SEM with
Laplace noise (:func:`strnn_fast.data.random_sparse_sem`) gives training data; an affine flow
with 5 steps and a Laplace prior is fitted with the graph's structure (causal StrAF) and with the
full ordering of a topological sort (CAREFL). Queries, for every variable k that has descendants
and every value v in ``mean_k + std_k * {-2, -1, 0, 1, 2}`` (observational moments):

* intervention: ``E[x | do(x_k = v)]`` of the other variables against the SEM's Monte Carlo mean
  (100 000 draws);
* counterfactual: the counterfactual of 500 held-out rows under ``do(x_k = v)`` against the SEM's
  exact counterfactual.

Errors are squared differences in units of each variable's observational standard deviation,
averaged over variables and queries (and rows), then mean ± std over seeds.

Part 2 (speed): 10 000 counterfactuals (d = 10, one intervened root) answered in one batch by
``CausalFlow.counterfactual`` against the reference's ``predict_counterfactual``, which takes
one row per call. The reference module ``strnn/models/causal_arflow.py`` does not import from the
package (it imports ``sklearn`` and a ``data.causal_sem`` module that strnn 0.2.0 does not ship),
so it is loaded by file path with stand-ins for those two names, which only its trainer uses.
Its flow has the same size (StrNN conditioner, hidden sizes, 5 affine steps, Laplace prior).

Run (about 6 minutes on 2 cores, torch pinned to 1 thread):
    python bench/bench_causal.py
writes bench/results/causal_repro.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from _machine import cpu_name

from strnn_fast.causal import CausalFlow
from strnn_fast.data import random_sparse_sem
from strnn_fast.graph import descendants

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN = (32, 32)
STEPS = 5
GRID = (-2.0, -1.0, 0.0, 1.0, 2.0)
TRUTH_DRAWS = 100_000


def fit_model(structure: str, sem, data: np.ndarray, seed: int, epochs: int) -> tuple[CausalFlow, float]:
    torch.manual_seed(seed)
    model = CausalFlow(sem.adjacency, names=sem.names, structure=structure, normalizer="affine",
                       prior="laplace", hidden_sizes=HIDDEN, flow_steps=STEPS)
    start = time.perf_counter()
    model.fit(data, epochs=epochs, batch_size=128, lr=3e-3, patience=15, seed=seed, verbose=False)
    return model, time.perf_counter() - start


def queries(sem, scale: np.ndarray, loc: np.ndarray) -> list[tuple[int, float]]:
    A = sem.adjacency
    targets = [k for k in range(sem.d) if descendants(A, k).any()]
    return [(k, float(loc[k] + scale[k] * g)) for k in targets for g in GRID]


def truths(sem, test: np.ndarray, qs, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: the SEM's interventional mean (Monte Carlo) and its exact counterfactuals."""
    return [(sem.interventional_mean({k: v}, n=TRUTH_DRAWS, seed=seed + q), sem.counterfactual(test, {k: v}))
            for q, (k, v) in enumerate(qs)]


def errors(model: CausalFlow, sem, test: np.ndarray, qs, truth, scale: np.ndarray, n_mc: int) -> dict:
    names = sem.names
    int_err, cf_err = [], []
    for q, ((k, v), (mean_true, cf_true)) in enumerate(zip(qs, truth)):
        others = np.arange(sem.d) != k
        pred = model.interventional_mean({names[k]: v}, n_mc, seed=q, output="tensor").double().numpy()
        int_err.append(np.mean(((pred - mean_true) / scale)[others] ** 2))
        cf_pred = model.counterfactual(test, {names[k]: v}, output="tensor").double().numpy()
        cf_err.append(np.mean((((cf_pred - cf_true) / scale)[:, others]) ** 2))
    return {"intervention_mse": float(np.mean(int_err)), "counterfactual_mse": float(np.mean(cf_err))}


def accuracy(dims: list[int], seeds: int, n_train: int, epochs: int, n_mc: int) -> list[dict]:
    rows = []
    for d in dims:
        for seed in range(seeds):
            sem = random_sparse_sem(d, kind="nonlinear", noise="laplace", seed=1000 * d + seed)
            data = sem.sample(n_train, seed=seed)
            test = sem.sample(500, seed=10_000 + seed)
            loc, scale = data.mean(0), data.std(0)
            qs = queries(sem, scale, loc)
            truth = truths(sem, test, qs, seed)
            for structure in ("graph", "full"):
                model, seconds = fit_model(structure, sem, data, seed, epochs)
                res = errors(model, sem, test, qs, truth, scale, n_mc)
                rows.append({"d": d, "seed": seed, "model": "causal StrAF" if structure == "graph" else "CAREFL",
                             "edges": int(sem.adjacency.sum()), "queries": len(qs), "fit_seconds": seconds, **res})
                print(f"d={d} seed={seed} {rows[-1]['model']:<13} int {res['intervention_mse']:.4f} "
                      f"cf {res['counterfactual_mse']:.4f} ({seconds:.1f} s)", flush=True)
    return rows


def load_reference_causal():
    """The reference's causal module, loaded by path with stand-ins for its two broken imports."""
    import strnn

    path = Path(strnn.__path__[0]) / "models" / "causal_arflow.py"
    stand_ins = {"sklearn": types.ModuleType("sklearn"), "sklearn.model_selection": types.ModuleType("sklearn.model_selection"),
                 "data": types.ModuleType("data"), "data.causal_sem": types.ModuleType("data.causal_sem")}
    stand_ins["sklearn.model_selection"].train_test_split = None
    stand_ins["data.causal_sem"].CustomSyntheticDatasetDensity = None
    added = [name for name in stand_ins if name not in sys.modules]
    sys.modules.update({name: stand_ins[name] for name in added})
    try:
        spec = importlib.util.spec_from_file_location("strnn_reference_causal_arflow", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name in added:
            del sys.modules[name]
    return module


def reference_flow(A: np.ndarray):
    from strnn.models import config_constants as C
    from strnn.models.discrete_flows import AutoregressiveFlowFactory

    d = A.shape[0]
    config = {C.INPUT_DIM: d, C.ADJ: A.astype(float), C.FLOW_STEPS: STEPS, C.FLOW_PERMUTE: False,
              C.COND_TYPE: "strnn", C.NORM_TYPE: "affine", C.COND_HID: list(HIDDEN), C.COND_ACT: "relu",
              C.N_PARAM_PER_VAR: 2, C.OPT_TYPE: "greedy", C.OPT_ARGS: {}}
    module = load_reference_causal()
    prior = torch.distributions.Laplace(torch.zeros(d), torch.ones(d))
    return module.CausalAutoregressiveFlowWithPrior(prior, AutoregressiveFlowFactory(config).build_flow())


def speed(n_rows: int, n_reference: int, epochs: int) -> dict:
    sem = random_sparse_sem(10, kind="nonlinear", noise="laplace", seed=10_000)
    data = sem.sample(2000, seed=0)
    rows = sem.sample(n_rows, seed=1).astype(np.float32)
    root = next(k for k in sem.order if descendants(sem.adjacency, k).any())
    model, _ = fit_model("graph", sem, data, 0, epochs)
    x = torch.from_numpy(rows)
    model.counterfactual(x[:10], {int(root): 1.0})  # warm-up (allocator, caches)
    start = time.perf_counter()
    cf = model.counterfactual(x, {int(root): 1.0}, output="tensor")
    ours = time.perf_counter() - start
    err = float(np.abs(cf.double().numpy() - sem.counterfactual(rows.astype(np.float64), {int(root): 1.0})).mean())

    start = time.perf_counter()
    for r in range(n_reference):
        model.counterfactual(x[r:r + 1], {int(root): 1.0}, output="tensor")
    ours_rowwise = (time.perf_counter() - start) / n_reference * n_rows

    ref = reference_flow(sem.adjacency).eval()
    start = time.perf_counter()
    for r in range(n_reference):
        ref.predict_counterfactual(x[r:r + 1].clone(), 1.0, int(root))
    per_row = (time.perf_counter() - start) / n_reference
    return {"rows": n_rows, "intervened": sem.names[int(root)], "ours_batched_s": ours,
            "ours_one_row_at_a_time_s_extrapolated": ours_rowwise, "reference_rows_timed": n_reference,
            "reference_one_row_at_a_time_s_extrapolated": per_row * n_rows,
            "speedup_vs_reference": per_row * n_rows / ours, "ours_mean_abs_error_vs_truth": err}


def machine() -> dict:
    cpu = cpu_name()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def markdown(report: dict) -> str:
    m, cfg = report["machine"], report["config"]
    lines = [
        "# Causal StrAF vs CAREFL (StrNN paper, causal experiments)", "",
        f"Command: `{cfg['command']}`  ",
        f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), torch {m['torch']} pinned to "
        f"{m['torch_threads']} thread(s), Python {m['python']}, {m['date']}; total {report['seconds']:.0f} s.", "",
        f"Nonlinear additive SEMs with Laplace noise (`random_sparse_sem(d, kind='nonlinear')`), "
        f"{cfg['n_train']} training rows (80/20 train/val split), affine flow with {STEPS} steps (StrAF's "
        f"default log-scale bound of 3 per step), hidden "
        f"{list(HIDDEN)}, Laplace prior, up to {cfg['epochs']} epochs (patience 15). MSE in units of each "
        f"variable's observational std, over non-intervened variables; intervention truth: SEM Monte "
        f"Carlo ({TRUTH_DRAWS} draws), model: {cfg['n_mc']} draws; counterfactual truth exact, 500 held-out rows. "
        f"Mean ± std over {cfg['seeds']} seeds.", "",
        "| d | model | intervention MSE | counterfactual MSE | fit time (s) |",
        "|---|---|---|---|---|",
    ]
    for row in report["summary"]:
        lines.append(f"| {row['d']} | {row['model']} | {row['intervention_mse_mean']:.4f} ± {row['intervention_mse_std']:.4f} "
                     f"| {row['counterfactual_mse_mean']:.4f} ± {row['counterfactual_mse_std']:.4f} | {row['fit_seconds_mean']:.1f} |")
    s = report["speed"]
    lines += [
        "", f"## {s['rows']} counterfactuals (d = 10, do({s['intervened']} = 1))", "",
        "| procedure | seconds |", "|---|---|",
        f"| ours, one batch | {s['ours_batched_s']:.3f} |",
        f"| ours, one row per call (extrapolated from {s['reference_rows_timed']} rows) | {s['ours_one_row_at_a_time_s_extrapolated']:.1f} |",
        f"| reference `predict_counterfactual`, one row per call (extrapolated from {s['reference_rows_timed']} rows) "
        f"| {s['reference_one_row_at_a_time_s_extrapolated']:.1f} |",
        "", f"Speed-up of the batched call over the reference: {s['speedup_vs_reference']:.0f}x. Mean absolute "
        f"error of our counterfactuals against the exact ones: {s['ours_mean_abs_error_vs_truth']:.3f}.",
        "", "The reference module was loaded by file path with stand-in `sklearn.model_selection` and "
        "`data.causal_sem` modules (its package import fails on them; only its trainer uses them). Its "
        "flow has our model's sizes but is untrained: the cost of a call depends on the sizes and the "
        "graph, not on the weights.",
    ]
    lines += ["", "## Conclusion", "", *conclusion(report["runs"])]
    return "\n".join(lines) + "\n"


def conclusion(rows: list[dict]) -> list[str]:
    """One line per d and metric, read off the runs: seeds won by causal StrAF and the mean ratio."""
    out = []
    for d in sorted({r["d"] for r in rows}):
        for key, label in (("intervention_mse", "intervention"), ("counterfactual_mse", "counterfactual")):
            ours = {r["seed"]: r[key] for r in rows if r["d"] == d and r["model"] == "causal StrAF"}
            carefl = {r["seed"]: r[key] for r in rows if r["d"] == d and r["model"] == "CAREFL"}
            wins = sum(ours[s] < carefl[s] for s in ours)
            ratio = np.mean(list(carefl.values())) / np.mean(list(ours.values()))
            verdict = "lower" if ratio > 1 else "higher"
            out.append(f"- d = {d}, {label}: causal StrAF has the lower MSE on {wins} of {len(ours)} seeds; "
                       f"its mean MSE is {verdict} than CAREFL's (CAREFL / StrAF = {ratio:.2f}).")
    return out


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for d in sorted({r["d"] for r in rows}):
        for model in ("causal StrAF", "CAREFL"):
            sel = [r for r in rows if r["d"] == d and r["model"] == model]
            entry = {"d": d, "model": model, "seeds": len(sel)}
            for key in ("intervention_mse", "counterfactual_mse", "fit_seconds"):
                vals = np.array([r[key] for r in sel])
                entry[f"{key}_mean"], entry[f"{key}_std"] = float(vals.mean()), float(vals.std(ddof=1) if len(vals) > 1 else 0.0)
            out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default="5,10")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--n-mc", type=int, default=10_000, help="model draws per interventional mean")
    p.add_argument("--rows", type=int, default=10_000, help="counterfactual rows timed")
    p.add_argument("--reference-rows", type=int, default=1000, help="rows the one-row-at-a-time procedures run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "causal_repro"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = accuracy([int(v) for v in args.dims.split(",")], args.seeds, args.n_train, args.epochs, args.n_mc)
    speed_result = speed(args.rows, args.reference_rows, args.epochs)
    report = {
        "config": {"command": " ".join(["python bench/bench_causal.py", *(argv if argv is not None else sys.argv[1:])]),
                   "seeds": args.seeds, "n_train": args.n_train, "epochs": args.epochs, "n_mc": args.n_mc,
                   "hidden_sizes": list(HIDDEN), "flow_steps": STEPS, "grid_in_std": list(GRID)},
        "machine": machine(), "runs": rows, "summary": summarize(rows), "speed": speed_result,
    }
    report["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
