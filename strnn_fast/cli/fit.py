r"""``strnn-fast fit``: fit a structured density model to a data file and save it.

The rows are shuffled with ``--seed`` and split 0.6/0.2/0.2 into train/validation/test. Real
valued data are standardized with the training split's mean and standard deviation (a constant
column is refused: drop it, since a density of a constant cannot be fitted); the saved
model holds these statistics (:class:`strnn_fast.standardize.Standardized`), so ``sample`` and
``logprob`` work in the data's own units, and the printed NLLs are in those units too. Binary
data (every value 0 or 1) for ``--model density`` are used as they are.

Every model is fitted the same way, as a model in data units
(:meth:`strnn_fast.standardize.Standardized.fit`: the statistics of the training rows, the
training losses in data units). ``--model causal`` fits a :class:`strnn_fast.causal.CausalFlow`,
which holds its flow in such a Standardized (the file then answers ``strnn-fast intervene`` and
``counterfactual``).

``--context c1,c2`` fits a conditional model p(x | c): the named columns (or 0-based column
indices) are context features, standardized like the data, and the adjacency describes the
remaining columns; every variable reads every context feature. ``strnn-fast sample --context``
then draws given context rows.

Ctrl-C during training stops it and saves the best weights so far (a Ctrl-C before the first
epoch ends writes nothing, and says so). The output folder is checked for writing before training.

Under ``torchrun`` the training runs data-parallel; only rank 0 prints and writes the model.

Example:
    strnn-fast fit data.csv --adjacency graph.csv --model straf --epochs 100 -o model.pt
    strnn-fast fit data.csv --adjacency graph.csv --normalizer spline --context age,dose -o model.pt
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from .._validate import check_fits_dtype
from ..data import check_adjacency_matches, load_adjacency, load_table
from ..data.dataset import split
from ..standardize import Standardized
from ..distributed import is_main_process
from ..train import evaluate_nll
from ..variables import Variables
from ._common import (MODEL_BUILDERS, add_model_options, add_training_options,
                      check_output, command_parser, seed_type)

__all__ = ["register", "run"]


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1.0) > 1e-9:
        raise argparse.ArgumentTypeError(f"expected three positive fractions summing to 1, got {text!r}")
    return parts  # type: ignore[return-value]


def _context_columns(spec: str, names: list[str] | None, n_columns: int) -> list[int]:
    # --context: column names of the table's header, or 0-based indices.
    columns = Variables(names, n_columns)
    keys = [k.strip() for k in spec.split(",") if k.strip()]
    out = [columns.index(int(k) if k.isdigit() and (names is None or k not in names) else k, "--context")
           for k in keys]
    if not out or len(set(out)) != len(out) or len(out) >= n_columns:
        raise ValueError(f"--context must name distinct columns and leave at least one variable, got {spec!r}")
    return out


def run(args: argparse.Namespace) -> int:
    x, names = load_table(args.data)
    context = None
    if args.context:
        cols = _context_columns(args.context, names, x.shape[1])
        rest = [i for i in range(x.shape[1]) if i not in cols]
        context, x = x[:, cols], x[:, rest]
        args.context_names = [names[i] for i in cols] if names is not None else [f"c{i}" for i in cols]
        names = [names[i] for i in rest] if names is not None else None
    adjacency, graph_names = load_adjacency(args.adjacency, names=names, keep_isolated=args.keep_isolated)
    try:
        check_adjacency_matches(adjacency, x.shape[1], names, graph_names)
    except ValueError as err:
        raise ValueError(f"{args.data} and {args.adjacency}: {err}") from None
    names = names or graph_names
    out = check_output(args.output, inputs=[args.data, args.adjacency], force=args.force)
    if not os.access(out.parent, os.W_OK | os.X_OK):  # found now, not after the training
        raise PermissionError(f"cannot write to the folder {out.parent} of the output {out}")
    # The saved model reads raw rows in its dtype: values it cannot hold are refused before training.
    check_fits_dtype(x, torch.get_default_dtype(), args.data, names)

    binary = bool(np.isin(x, (0.0, 1.0)).all())
    if args.model == "density":
        args.data_type = "binary" if binary else "gaussian"
    rows = np.random.default_rng(args.seed).permutation(len(x))
    try:
        parts = split(x[rows], args.split)
    except ValueError as err:
        raise ValueError(f"{args.data}: {err}") from None
    c_parts = split(context[rows], args.split) if context is not None else [None, None, None]

    torch.manual_seed(args.seed)
    # A model in data units (a Standardized around the model, or the CausalFlow's own): its fit
    # takes the statistics of the training rows (binary density data stay 0/1).
    model = Standardized.around(MODEL_BUILDERS[args.model](adjacency, names, args))
    options = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                   seed=args.seed, verbose=not args.quiet, threads=args.threads)
    try:
        history = model.fit(parts[0], val=parts[1], context=c_parts[0], val_context=c_parts[1], **options)
    except FloatingPointError as err:
        raise ValueError(f"training diverged: {err}") from err
    if args.model == "density" and binary and context is None:
        model = model.base  # 0/1 data, no covariates: identity statistics, the model is saved as it is
    if not is_main_process():
        return 0
    if history.interrupted:
        print(f"interrupted after {history.epochs} epochs; saving the best weights so far "
              f"(epoch {history.best_epoch + 1}) to {out}", file=sys.stderr)
    model.save(out, overwrite=args.force)
    for label, part, c_part in zip(("train", "val", "test"), parts, c_parts):
        print(f"{label:<5} NLL {evaluate_nll(model, part, context=c_part):10.4f}  ({len(part)} rows)")
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "fit", "fit a structured density model to a data file and save it", __doc__, run)
    p.add_argument("data", help="data table: .csv (optional header of names), .npy or .npz")
    p.add_argument("--adjacency", "-a", required=True,
                   help="graph over the data's columns: 0/1 matrix (.npy, .npz, .csv) or parent,child edge list")
    p.add_argument("--model", choices=tuple(MODEL_BUILDERS), default="straf", help="model family (default straf)")
    add_model_options(p)
    p.add_argument("--keep-isolated", action="store_true",
                   help="with an edge-list --adjacency: model data columns that no edge mentions as independent "
                   "variables (by default they are refused: an id column is not a variable)")
    p.add_argument("--context", metavar="C1,C2",
                   help="columns (names or 0-based indices) to condition on: fits p(x | c) on the other columns")
    add_training_options(p, epochs=100)
    p.add_argument("--split", type=_fractions, default=(0.6, 0.2, 0.2), metavar="TRAIN,VAL,TEST",
                   help="split fractions (default 0.6,0.2,0.2)")
    p.add_argument("--prior", choices=("normal", "laplace"), default="normal",
                   help="base distribution of --model causal (default normal; the paper uses laplace)")
    p.add_argument("--structure", choices=("graph", "full"), default="graph",
                   help="--model causal: the causal graph (StrAF) or its full ordering (CAREFL)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the split, the initialization and the batches")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary line (verbose=False in Python)")
    p.add_argument("--output", "-o", required=True, help="model file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
