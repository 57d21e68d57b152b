r"""Density quality on data nobody tuned for: spline StrAF vs zuko NSF and MAF with the same adjacency.

Graphs (d >= 40): three Gaussian Bayesian networks' structures vendored from the pgmpy 1.0.0 wheel
(``bench/data/quality_graphs.json``: ecoli70 with 46 genes, magic-niab 44, magic-irri 64 nodes) and
a random DAG on 50 variables with 1-4 parents (:func:`strnn_fast.data.adjacency.random_dag`).

Data: one structural equation model per graph, from three families written here (none of them
seen by any other test or benchmark), 2000 train / 500 validation / 1000 test rows, standardized
with the training statistics:

* ``tanh-bimodal``: ``x_i = Σ a_ij tanh(x_j) + s_i e``, e a two-mode Gaussian mixture;
* ``sin-skewed``: ``x_i = Σ a_ij sin(1.5 x_j) + b_i (mean of parents)² / 4 + s_i e``, e a centred
  Gamma(1.5) (right-skewed);
* ``gated-heavy``: ``x_i = tanh(Σ a_ij x_j) + (0.5 + |x_{first parent}| / 2) s_i e``, e Student-t with
  3 degrees of freedom (heavy tails, heteroscedastic).

Variants: ``joint`` (p(x) on the whole graph) and ``conditional`` (the non-root variables given the
root variables, through the context adjacency ``A[non-roots, roots]``).

Models, same budget (3 steps, hidden (64, 64), 8 bins, AdamW lr 1e-3, batch 128, up to
``--epochs`` epochs, patience 20, the library's ``fit`` for every model):
``StrAF spline`` (:class:`strnn_fast.flows.StrAF`, normalizer "spline"), ``zuko NSF`` and ``zuko MAF``
(``zuko.flows.NSF / MAF`` with ``adjacency=`` the same DAG; conditional: the (D, D + C) adjacency
``[A | A_context]``).

Reported: test NLL per dimension (nats, standardized units; lower is better), mean and worst
over seeds, epochs run and fit time (one torch thread).

Reported per row as well: the best epoch (whose weights fit keeps), the validation NLL per epoch
and the epochs at which the plateau schedule halved the learning rate.

Run (full protocol, hours on a shared 2-core box):
    python bench/bench_quality.py --seeds 5 --epochs 150
Reduced protocol (state it as such): ``--graphs ecoli70 --seeds 2 --epochs 40``. It writes
bench/results/quality<suffix>.json and .md (``--suffix``). ``--models "StrAF spline" --reuse
bench/results/quality_3seeds.json`` reruns one model and shows the others from an earlier run;
``--seeds 3-4 --models "zuko NSF"`` adds seeds to earlier ones (then ``--reuse`` both files).

Equal wall time: ``--models "StrAF spline" --wall-time-of "zuko NSF" --reuse RESULTS.json`` refits
StrAF with as many epochs as fit in NSF's fit time of the same seed (at StrAF's own speed per
epoch in its equal-epoch row), at most ``--wall-cap``, patience 20 as before.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
STEPS, HIDDEN, BINS = 3, (64, 64), 8
N_TRAIN, N_VAL, N_TEST = 2000, 500, 1000
GRAPHS = ("ecoli70", "magic-niab", "magic-irri", "random50")


def load_graph(name: str) -> np.ndarray:
    """(d, d) bool adjacency, ``A[i, j]`` iff j -> i (the library's convention)."""
    if name == "random50":
        return random_dag(50, parents=(1, 4), seed=50).astype(bool)
    g = json.loads((HERE / "data" / "quality_graphs.json").read_text())["graphs"][name]
    index = {n: i for i, n in enumerate(g["nodes"])}
    A = np.zeros((len(index), len(index)), dtype=bool)
    for parent, child in g["arcs"]:
        A[index[child], index[parent]] = True
    return A


def topological_order(A: np.ndarray) -> list[int]:
    order, done = [], np.zeros(len(A), dtype=bool)
    while len(order) < len(A):
        ready = [i for i in np.flatnonzero(~done) if done[A[i]].all()]
        order += ready
        done[ready] = True
    return order


def simulate(A: np.ndarray, family: str, n: int, seed: int) -> np.ndarray:
    """n rows of the SEM ``family`` on the DAG A (see the module docstring)."""
    rng = np.random.default_rng(seed)
    d = len(A)
    a = rng.uniform(0.5, 1.5, size=(d, d)) * rng.choice([-1, 1], size=(d, d)) * A
    a /= np.maximum(1, np.sqrt(A.sum(1, keepdims=True)))  # many parents: keep the scale of x bounded
    b = rng.uniform(0.5, 1.5, size=d) * rng.choice([-1, 1], size=d)
    s = rng.uniform(0.3, 1.0, size=d)
    x = np.zeros((n, d))
    for i in topological_order(A):
        pa = np.flatnonzero(A[i])
        if family == "tanh-bimodal":
            mean = np.tanh(x) @ a[i]
            e = rng.choice([-1.0, 1.0], size=n) + 0.35 * rng.standard_normal(n)
            x[:, i] = mean + s[i] * e
        elif family == "sin-skewed":
            mean = np.sin(1.5 * x) @ a[i] + (b[i] * x[:, pa].mean(1) ** 2 / 4 if len(pa) else 0.0)
            x[:, i] = mean + s[i] * (rng.gamma(1.5, size=n) - 1.5)
        elif family == "gated-heavy":
            gate = 0.5 + np.abs(x[:, pa[0]]) / 2 if len(pa) else 1.0
            x[:, i] = np.tanh(x @ a[i]) + gate * s[i] * rng.standard_t(3, size=n)
        else:
            raise ValueError(f"unknown SEM family {family!r}")
    return x


# The SEM family of each graph: the three families over the graphs (random50 with the heavy tails,
# so that any three of the four graphs but the two magic ones cover every family).
FAMILY = {"ecoli70": "tanh-bimodal", "magic-niab": "sin-skewed", "magic-irri": "gated-heavy",
          "random50": "gated-heavy"}


@dataclass
class Task:
    adjacency: np.ndarray  # (D, D) among the modelled variables
    context_adjacency: np.ndarray | None  # (D, C) or None for the joint variant
    splits: dict[str, tuple[np.ndarray, np.ndarray | None]]  # standardized (x, context)


def make_task(graph: str, variant: str, seed: int) -> Task:
    A = load_graph(graph)
    # The data depend on the graph only (one SEM per graph); the seed picks the model's init and batches.
    data = simulate(A, FAMILY[graph], N_TRAIN + N_VAL + N_TEST, seed=1000 + GRAPHS.index(graph))
    data = (data - data[:N_TRAIN].mean(0)) / data[:N_TRAIN].std(0)
    cuts = {"train": slice(0, N_TRAIN), "val": slice(N_TRAIN, N_TRAIN + N_VAL), "test": slice(N_TRAIN + N_VAL, None)}
    if variant == "joint":
        return Task(A, None, {k: (data[c], None) for k, c in cuts.items()})
    roots = ~A.any(1)
    Ac = A[~roots][:, roots]
    return Task(A[~roots][:, ~roots], Ac, {k: (data[c][:, ~roots], data[c][:, roots]) for k, c in cuts.items()})


class Zuko(nn.Module):
    """zuko's NSF or MAF with ``log_prob(x, context=c)`` and the adjacency (diagonal set, context columns)."""

    def __init__(self, kind: str, task: Task):
        super().__init__()
        import zuko

        D = len(task.adjacency)
        C = 0 if task.context_adjacency is None else task.context_adjacency.shape[1]
        adj = task.adjacency | np.eye(D, dtype=bool)
        if C:
            adj = np.concatenate([adj, task.context_adjacency], 1)
        options = {"bins": BINS} if kind == "NSF" else {}
        self.flow = getattr(zuko.flows, kind)(features=D, context=C, transforms=STEPS, hidden_features=HIDDEN,
                                              adjacency=torch.from_numpy(adj), **options)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow(context).log_prob(x)


def _straf(task: Task) -> nn.Module:
    C = 0 if task.context_adjacency is None else task.context_adjacency.shape[1]
    return StrAF(task.adjacency, HIDDEN, STEPS, normalizer="spline", bins=BINS, context_features=C,
                 context_adjacency=task.context_adjacency)


MODELS: dict[str, Callable[[Task], nn.Module]] = {
    "StrAF spline": _straf,
    "zuko NSF": lambda t: Zuko("NSF", t),
    "zuko MAF": lambda t: Zuko("MAF", t),
}


def fit_row(task: Task, factory: Callable[[Task], nn.Module], seed: int, epochs: int, **fit_options) -> dict:
    """Builds ``factory(task)`` under ``torch.manual_seed(seed)``, fits it (the budget above; ``fit_options``
    override fit's arguments) and returns its row: test NLL per dim, epochs, seconds and the curves."""
    (xt, ct), (xv, cv), (xs, cs) = (task.splits[k] for k in ("train", "val", "test"))
    torch.manual_seed(seed)
    model = factory(task)
    options = {"epochs": epochs, "batch_size": 128, "lr": 1e-3, "patience": 20, "seed": seed, "verbose": False,
               **fit_options}
    start = time.perf_counter()
    history = fit(model, xt, xv, context=ct, val_context=cv, **options)
    seconds = time.perf_counter() - start
    d = xs.shape[1]
    nll = evaluate_nll(model, xs, context=cs) / d
    # The curves (per dim), for the seed-sensitivity analysis: validation NLL per epoch and the epochs
    # at which the plateau schedule halved the learning rate.
    halvings = [e for e in range(1, len(history.lr)) if history.lr[e] < history.lr[e - 1]]
    return {"d": d, "seed": seed, "test_nll_per_dim": nll, "epochs": history.epochs, "seconds": seconds,
            "best_epoch": history.best_epoch, "val_nll_per_dim": [round(v / d, 5) for v in history.val_nll],
            "lr_halved_at": halvings}


def run(graphs: list[str], variants: list[str], seeds: list[int], epochs: int, models: list[str], log,
        save: Callable[[list[dict]], None]) -> list[dict]:
    """Fits every (variant, graph, seed, model); ``save(rows)`` after each, so a cut run keeps its rows."""
    rows: list[dict] = []
    for variant in variants:
        for graph in graphs:
            for seed in seeds:
                task = make_task(graph, variant, seed)
                for name in models:
                    row = {"variant": variant, "graph": graph, "model": name,
                           **fit_row(task, MODELS[name], seed, epochs)}
                    rows.append(row)
                    log(f"{variant} {graph} seed {seed} {name}: {row['test_nll_per_dim']:.4f} nats/dim, "
                        f"{row['epochs']} epochs (best {row['best_epoch'] + 1}), {row['seconds']:.1f} s")
                    save(rows)
    return rows


def run_at_wall_time(graphs: list[str], variants: list[str], seeds: list[int], epochs: int, models: list[str],
                     reference: str, cap: int, earlier: list[dict], log, save) -> list[dict]:
    """Equal wall time: each model of ``models`` is fitted again with as many epochs as fit in the
    ``reference`` model's fit time for the same (variant, graph, seed), at the speed per epoch of
    its own equal-epoch row (both rows from ``earlier``), at most ``cap``; patience 20 as before."""
    rows: list[dict] = []
    find = {(r["variant"], r["graph"], r["seed"], r["model"]): r for r in earlier}
    for variant in variants:
        for graph in graphs:
            for seed in seeds:
                task = make_task(graph, variant, seed)
                ref = find.get((variant, graph, seed, reference))
                for name in models:
                    own = find.get((variant, graph, seed, name))
                    if ref is None or own is None:
                        log(f"{variant} {graph} seed {seed}: no equal-epoch rows of {name} and {reference}; skipped")
                        continue
                    budget = min(cap, int(ref["seconds"] / (own["seconds"] / own["epochs"])))
                    row = {"variant": variant, "graph": graph, "model": f"{name}, {reference}'s wall time",
                           "epoch_budget": budget, "reference_seconds": ref["seconds"],
                           **fit_row(task, MODELS[name], seed, budget)}
                    rows.append(row)
                    log(f"{variant} {graph} seed {seed} {row['model']}: {row['test_nll_per_dim']:.4f} nats/dim, "
                        f"{row['epochs']} of {budget} epochs (best {row['best_epoch'] + 1}), {row['seconds']:.1f} s "
                        f"(reference {ref['seconds']:.1f} s)")
                    save(rows)
    return rows


def parse_seeds(text: str) -> list[int]:
    """``"5"``: seeds 0-4 (a bare number counts); ``"3,4"``, ``"3-4"`` or ``"3-3"``: those seeds."""
    if text.isdigit():
        return list(range(int(text)))
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def table(rows: list[dict], variant: str, models: list[str]) -> list[str]:
    lines = [f"### {variant}", "", "| graph (d) | " + " | ".join(f"{m}: mean (worst), seeds | {m}: fit s (epochs), medians"
                                                         for m in models) + " |",
             "|---|" + "---:|---:|" * len(models)]
    for graph in sorted(dict.fromkeys(r["graph"] for r in rows if r["variant"] == variant), key=GRAPHS.index):
        cells = []
        for m in models:
            sel = [r for r in rows if (r["variant"], r["graph"], r["model"]) == (variant, graph, m)]
            if not sel:
                cells += ["-", "-"]
                continue
            nll = np.array([r["test_nll_per_dim"] for r in sel])
            cells += [f"{nll.mean():.4f} ({nll.max():.4f}), n={len(nll)}",
                      f"{np.median([r['seconds'] for r in sel]):.0f} ({np.median([r['epochs'] for r in sel]):.0f})"]
        d = next(r["d"] for r in rows if (r["variant"], r["graph"]) == (variant, graph))
        lines.append(f"| {graph} ({d}) | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", default=",".join(GRAPHS))
    parser.add_argument("--variants", default="joint,conditional")
    parser.add_argument("--seeds", default="5", help='a count ("5": seeds 0-4) or a list ("3,4" or "3-4")')
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--suffix", default="", help="results file name: quality<suffix>.md/json")
    parser.add_argument("--reuse", default="", metavar="RESULTS.json[,...]",
                        help="show the rows of (model, seed) pairs not run here from earlier results files (same "
                             "data and seeds: the data depend on the graph only, the seed on the model's init and "
                             "batches); they are copied into this run's JSON under 'reused'")
    parser.add_argument("--wall-time-of", default="", metavar="MODEL",
                        help="equal wall time: refit --models with as many epochs as fit in MODEL's fit time of the "
                             "same (variant, graph, seed), from the rows given by --reuse (which must hold both "
                             "models' equal-epoch rows), at most --wall-cap epochs")
    parser.add_argument("--wall-cap", type=int, default=1000, help="most epochs in --wall-time-of mode")
    parser.add_argument("--no-fit", action="store_true",
                        help="fit nothing: the tables of the --reuse rows (of --graphs, --variants and --seeds)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    graphs, variants, models = (s.split(",") for s in (args.graphs, args.variants, args.models))
    seeds = parse_seeds(args.seeds)
    for given, known, what in ((graphs, GRAPHS, "graphs"), (models, tuple(MODELS), "models"),
                               (variants, ("joint", "conditional"), "variants")):
        if set(given) - set(known):
            parser.error(f"unknown {what} {sorted(set(given) - set(known))}; known: {', '.join(known)}")
    out = RESULTS / f"quality{args.suffix}"

    def log(line: str) -> None:
        print(line, flush=True)

    load = os.getloadavg()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "command": "python bench/bench_quality.py "
            + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v!r}" if " " in str(v) else f" {v}")
                       for k, v in vars(args).items() if v not in ("", False, None)
                       and not (k == "wall_cap" and not args.wall_time_of)),
            "machine": f"{platform.machine()}, shared 2-core box, load average at start {load[0]:.2f}",
            "torch": torch.__version__, "threads": 1,
            "budget": f"{STEPS} steps, hidden {HIDDEN}, {BINS} bins; AdamW lr 1e-3, batch 128, up to {args.epochs} epochs, "
                      f"patience 20; {N_TRAIN}/{N_VAL}/{N_TEST} rows",
            "families": {g: FAMILY[g] for g in graphs}}

    reused: list[dict] = []
    run_here = set() if args.wall_time_of or args.no_fit else {(v, g, s, m) for v in variants for g in graphs for s in seeds
                                                for m in models}
    for path in filter(None, args.reuse.split(",")):
        earlier = json.loads(Path(path).read_text())
        for r in earlier["rows"] + earlier.get("reused", []):
            key = (r["variant"], r["graph"], r["seed"], r["model"])
            if (key not in run_here and r["graph"] in graphs and r["variant"] in variants and r["seed"] in seeds
                    and key not in {(q["variant"], q["graph"], q["seed"], q["model"]) for q in reused}):
                reused.append({**r, "source": r.get("source", f"{path} ({earlier['meta']['date']})")})
    if reused:
        meta["reused"] = "; ".join(sorted({f"{r['model']} seeds {sorted({q['seed'] for q in reused if q['model'] == r['model']})}"
                                           for r in reused})) + f" from {args.reuse}"
    order = [*MODELS, *(f"{m}, {args.wall_time_of}'s wall time" for m in MODELS)]
    shown = list(dict.fromkeys(([f"{m}, {args.wall_time_of}'s wall time" for m in models] if args.wall_time_of
                                else [] if args.no_fit else models)
                               + sorted({r["model"] for r in reused}, key=order.index)))
    if args.wall_time_of:
        meta["budget"] += (f"; equal wall time: {', '.join(models)} refitted with as many epochs as fit in "
                           f"{args.wall_time_of}'s fit time of the same seed (at its own equal-epoch speed), at most "
                           f"{args.wall_cap}")

    def save(rows: list[dict]) -> None:
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "reused": reused}))
        lines = ["# Test NLL per dimension (nats, standardized data; lower is better), mean and worst seed", ""]
        lines += [f"- {k}: {v}" for k, v in meta.items()] + [f"- rows: {len(rows)}", ""]
        for variant in dict.fromkeys(r["variant"] for r in rows + reused):
            lines += table(rows + reused, variant, shown)
        out.with_suffix(".md").write_text("\n".join(lines))

    if args.no_fit:
        meta["machine"] = "nothing fitted here: each row's machine and load are in the meta of its source file"
        save([])
    elif args.wall_time_of:
        if args.wall_time_of not in MODELS:
            parser.error(f"unknown --wall-time-of {args.wall_time_of!r}; known: {', '.join(MODELS)}")
        run_at_wall_time(graphs, variants, seeds, args.epochs, models, args.wall_time_of, args.wall_cap, reused, log,
                         save)
    else:
        run(graphs, variants, seeds, args.epochs, models, log, save)
    print(out.with_suffix(".md").read_text())

if __name__ == "__main__":
    main()
