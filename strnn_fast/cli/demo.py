r"""``strnn-fast demo``: StrAF against ARF on the paper's multimodal data, in about a minute.

Generates the built-in multimodal data set (d=15, standardized, split 0.6/0.2/0.2), briefly
trains a structured autoregressive flow (StrAF, which knows the graph) and a fully autoregressive
flow (ARF, which does not) with the same budget and the spline normalizer (``--normalizer``
changes it; an affine flow draws one blob where the data are bimodal), prints each one's test NLL
and training time, and writes to ``--out``: both models (``straf.pt``, ``arf.pt``, usable with
``sample`` and ``logprob``) and ``samples.png``: model samples against test data for a few
parent-child pairs and, in the last row, a pair the graph says is independent, with each model's
test NLL and fit time in its column title.

Example:
    strnn-fast demo --epochs 30 --out demo/
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_folder, atomic_path
from ..data import make_multimodal
from ..train import evaluate_nll, fit
from ._common import (MODEL_BUILDERS, add_model_options, add_training_options,
                      check_output, command_parser, positive_int, seed_type)

__all__ = ["independent_pair", "pairs", "register", "run"]

MODELS = {"straf": "StrAF", "arf": "ARF"}
FILES = ("straf.pt", "arf.pt", "samples.png")


def pairs(adjacency: np.ndarray, k: int = 3) -> list[tuple[int, int]]:
    r"""Up to ``k`` (parent, child) pairs to plot: the children with most parents first.

    Example:
        >>> pairs(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=bool))
        [(0, 2), (1, 2), (0, 1)]
    """
    children = np.argsort(-adjacency.sum(axis=1), kind="stable")
    found = [(int(j), int(i)) for i in children for j in np.flatnonzero(adjacency[i])]
    return found[:k] or [(0, 1)]


def independent_pair(adjacency: np.ndarray) -> tuple[int, int] | None:
    r"""Two variables the graph makes independent (no common ancestor, neither an ancestor of the
    other), the ones with the most ancestors first; None when every pair is connected.

    Example:
        >>> independent_pair(np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=bool))
        (0, 1)
    """
    d = len(adjacency)
    reach = np.eye(d, dtype=bool) | adjacency.astype(bool)  # reach[i, j]: j is i or an ancestor of i
    for _ in range(d):
        nxt = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
        if (nxt == reach).all():
            break
        reach = nxt
    found = [(int(reach[i].sum() + reach[j].sum()), i, j) for i in range(d) for j in range(i + 1, d)
             if not (reach[i] & reach[j]).any()]
    return (found and max(found)[1:]) or None


def _plot(test: np.ndarray, samples: dict[str, np.ndarray], edges: list[tuple[int, int]], path: Path,
          scores: dict[str, str] | None = None, independent: tuple[int, int] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = scores or {}
    columns = {"data (test)": test,
               **{f"{MODELS[k]} samples" + (f"\n{scores[k]}" if k in scores else ""): v for k, v in samples.items()}}
    edges = [*edges, *([independent] if independent else [])]
    fig, axes = plt.subplots(len(edges), len(columns), figsize=(3.2 * len(columns), 3.0 * len(edges)),
                             squeeze=False)
    # Axes span the data (plus a margin), so a few far-out samples cannot squash the picture.
    low, high = test.min(axis=0), test.max(axis=0)
    low, high = low - 0.15 * (high - low), high + 0.15 * (high - low)
    for r, (parent, child) in enumerate(edges):
        for c, (title, x) in enumerate(columns.items()):
            ax = axes[r, c]
            ax.scatter(x[:, parent], x[:, child], s=4, alpha=0.5, color="gray" if c == 0 else f"C{c - 1}")
            ax.set_xlim(low[parent], high[parent])
            ax.set_ylim(low[child], high[child])
            ax.set_xlabel(f"x{parent}")
            ax.set_ylabel(f"x{child}" + ("  (independent of x%d in the graph)" % parent
                                         if independent and r == len(edges) - 1 and c == 0 else ""))
            if r == 0:
                ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if out.is_dir():
        for name in FILES:  # refuse before training, not after
            check_output(out / name, force=args.force)
    with atomic_folder(out, overwrite=True, what="--out folder") as folder:
        return _demo(args, folder, out)


def _demo(args: argparse.Namespace, folder: Path, out: Path) -> int:
    targets = [folder / name for name in FILES]

    ds = make_multimodal(n=args.n, seed=args.seed)
    print(f"multimodal data: d={ds.d}, {int(ds.adjacency.sum())} edges, train/val/test = {ds.sizes}")
    print(f"{'model':<6} {'test NLL':>9} {'seconds':>8} {'epochs':>7}")
    samples, scores = {}, {}
    for name, target in zip(MODELS, targets):
        torch.manual_seed(args.seed)
        model = MODEL_BUILDERS[name](ds.adjacency, ds.names, args)
        history = fit(model, ds.train, ds.val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      patience=args.patience, seed=args.seed, verbose=not args.quiet,
                      threads=args.threads)
        nll = evaluate_nll(model, ds.test)
        scores[name] = f"test NLL {nll:.2f}, fit {history.seconds:.1f} s"
        print(f"{MODELS[name]:<6} {nll:9.4f} {history.seconds:8.1f} {history.epochs:7d}")
        model.save(target, overwrite=args.force)
        torch.manual_seed(args.seed)
        samples[name] = model.sample(len(ds.test)).double().numpy()
    with atomic_path(targets[-1], overwrite=args.force) as tmp:
        _plot(ds.test, samples, pairs(ds.adjacency), tmp, scores, independent_pair(ds.adjacency))
    print(f"wrote {', '.join(str(out / name) for name in FILES)}")
    print("What to look at: lower test NLL is better (StrAF knows the graph, ARF does not). In\n"
          f"{out / 'samples.png'}, each row is a parent-child pair: the model samples should show the data's\n"
          "separate clusters; the last row is a pair the graph says is independent, which StrAF keeps\n"
          "independent by construction.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "demo", "train StrAF and ARF on built-in multimodal data and compare", __doc__, run)
    add_training_options(p, epochs=150)
    p.add_argument("--n", type=positive_int, default=1000, help="samples in the data set (default 1000)")
    add_model_options(p)
    # The spline normalizer by default: an affine flow draws one blob where these data are bimodal.
    p.set_defaults(normalizer="spline")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the data, initialization and batches (default 0)")
    p.add_argument("--out", default="strnn-fast-demo", help="folder for the models and the plot "
                   "(default ./strnn-fast-demo)")
    p.add_argument("--force", action="store_true", help="overwrite earlier demo files in --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
