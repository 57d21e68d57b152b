r"""``strnn-fast logprob``: log-likelihood of a data file under a saved model.

Prints the mean log-likelihood per row (nats); ``-o`` also writes one ``log_prob`` per row. Named
columns are matched to the model's variables by name, in any order. Values the model's dtype
cannot hold (beyond float32's range) are refused; a non-finite log-likelihood is an error naming
the data file's first such row, and nothing is written: NaN from a damaged model, or -inf for a
row so far outside the data the model was fitted on that its density underflows (a mean of -inf
would hide which row). A conditional model (``fit --context``) needs ``--context FILE``:
its context rows (named columns are matched to the model's context features), one row for every
data row or one row per data row, in the units of the data it was fitted on.

Example:
    strnn-fast logprob model.pt data.csv -o loglik.csv
    strnn-fast logprob conditional.pt data.csv --context contexts.csv
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from ._common import (add_output_options, check_output, command_parser, load_model,
                      write_csv)
from ._tables import add_table_arguments, in_batches, input_files, read_context, read_rows

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    inputs = input_files(args)
    out = check_output(args.output, inputs=inputs, force=args.force) if args.output else None
    model = load_model(args.model, trusted=args.trust_legacy_file)
    x = read_rows(args.data, model)
    context = read_context(args, model, len(x), "data row")
    dtype = next(model.parameters()).dtype

    def log_prob(rows: np.ndarray, c: np.ndarray | None) -> np.ndarray:
        kwargs = {} if c is None else {"context": torch.tensor(c, dtype=dtype)}
        return model.log_prob(torch.tensor(rows, dtype=dtype), **kwargs).double().numpy()

    with torch.no_grad():
        values = in_batches(log_prob, args.batch_size, x, context)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        nan = bool(np.isnan(values[row]))
        why = ("the model file may be damaged" if nan else
               "its values lie too far outside the data the model was fitted on for its density to be represented")
        value = "NaN" if nan else f"{values[row]:g}"
        raise ValueError(f"the model {args.model} gives a {value} log-likelihood for row {row} (0-based) of "
                         f"{args.data} ({int(bad.sum())} of {len(values)} rows): {why}; nothing was written")
    print(f"mean log-likelihood {values.mean():.6f} nats over {len(values)} rows")
    if out is not None:
        write_csv(out, values, ["log_prob"], force=args.force, inputs=inputs)
        print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "logprob", "log-likelihood of a data file under a saved model", __doc__, run)
    add_table_arguments(p, "model file written by `strnn-fast fit` or model.save(path)", "data table", "data row")
    add_output_options(p, "CSV file for the per-row log-likelihoods", batch_size=4096)
