r"""``strnn-fast sample``: draw samples from a saved model into a CSV file with a header of names.

Samples are drawn and written in blocks of 65,536 rows, so memory stays bounded for any ``-n``
(an interrupt or a failure leaves no file). Works for every model ``strnn-fast fit`` writes (CausalFlow included). Non-finite samples (a
damaged model) are refused and nothing is written. A conditional model (``fit --context``) needs
``--context FILE``: a table of context rows (named columns are matched to the model's context
features), either one row for every sample or one row per sample (then ``-n`` may be left out).

Example:
    strnn-fast sample model.pt -n 1000 -o samples.csv
    strnn-fast sample conditional.pt --context contexts.csv -o samples.csv
"""
from __future__ import annotations

import argparse

import torch

from ._common import (add_output_options, check_output, command_parser, load_model,
                      positive_int, sample_chunks, seed_type, stream_csv, variable_names)
from ._tables import add_context_option, input_files, read_context

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    inputs = input_files(args)
    out = check_output(args.output, inputs=inputs, force=args.force)
    model = load_model(args.model, trusted=args.trust_legacy_file)
    context = read_context(args, model, args.n, "sample")
    if context is None and args.n is None:
        raise ValueError("-n is required")
    n = len(context) if context is not None else args.n
    torch.manual_seed(args.seed)
    d = int(model.d)
    # Streamed: each block of samples is written as it is drawn, so memory does not grow with -n.
    rows = stream_csv(out, sample_chunks(model, n, context), variable_names(model, d), force=args.force,
                      inputs=inputs)
    print(f"wrote {rows} samples of {d} variables to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "sample", "draw samples from a saved model into a CSV file", __doc__, run)
    p.add_argument("model", help="model file written by `strnn-fast fit` or model.save(path)")
    p.add_argument("-n", type=positive_int, help="number of samples (default with --context: one per context row)")
    add_context_option(p, "sample")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the draw (default 0)")
    add_output_options(p, "CSV file to write", required=True)
