r"""``strnn-fast logprob``: log-likelihood of a data file under a saved model.

Prints the mean log-likelihood per row (nats); ``-o`` also writes one ``log_prob`` per row. Named
columns are matched to the model's variables by name, in any order. Values the model's dtype
cannot hold (beyond float32's range) are refused; a NaN log-likelihood (a damaged model) is an
error and nothing is written.

Example:
    strnn-fast logprob model.pt data.csv -o loglik.csv
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from .._validate import check_fits_dtype
from ..data import load_table
from ._common import add_output_options, check_output, command_parser, load_model, order_columns, write_csv

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    out = check_output(args.output, inputs=[args.model, args.data], force=args.force) if args.output else None
    model = load_model(args.model, trusted=args.trust_legacy_file)
    x, names = load_table(args.data)
    d = getattr(model, "d", x.shape[1])
    x = order_columns(x, names, getattr(model, "names", None), d, args.data)
    dtype = next(model.parameters()).dtype
    check_fits_dtype(x, dtype, args.data, names)
    with torch.no_grad():
        values = np.concatenate([model.log_prob(torch.from_numpy(x[s:s + args.batch_size]).to(dtype)).double().numpy()
                                 for s in range(0, len(x), args.batch_size)])
    if np.isnan(values).any():
        raise ValueError(f"the model {args.model} gives NaN log-likelihoods (first at row "
                         f"{int(np.flatnonzero(np.isnan(values))[0])}); the model file may be damaged")
    print(f"mean log-likelihood {values.mean():.6f} nats over {len(values)} rows")
    if out is not None:
        write_csv(out, values, ["log_prob"], force=args.force, inputs=[args.model, args.data])
        print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "logprob", "log-likelihood of a data file under a saved model", __doc__, run)
    p.add_argument("model", help="model file written by `strnn-fast fit` or model.save(path)")
    p.add_argument("data", help="data table: .csv (optional header of names), .npy or .npz")
    add_output_options(p, "CSV file for the per-row log-likelihoods", batch_size=4096)
