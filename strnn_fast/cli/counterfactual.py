r"""``strnn-fast counterfactual``: counterfactual rows of a data file under an intervention.

Reads observed rows (.csv with an optional header of names, .npy or .npz), answers "what would
each row have been under do(...)" with a fitted CausalFlow and writes the rows as CSV.

Example:
    strnn-fast counterfactual model.pt observed.csv --do x=1.5 -o counterfactual.csv
"""
from __future__ import annotations

import argparse

import numpy as np

from ..data import load_table
from ..variables import parse_assignments
from ._common import (add_do_option, add_output_options, check_output, command_parser, load_causal,
                      order_columns, variable_names, write_csv)

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    out = check_output(args.output, inputs=[args.model, args.data], force=args.force)
    model = load_causal(args.model, trusted=args.trust_legacy_file)
    do = parse_assignments(args.do, model.names)
    x, names = load_table(args.data)
    x = order_columns(x, names, model.names, model.d, args.data)
    # Batches bound memory only: rows are independent given the model.
    cf = np.concatenate([model.counterfactual(x[s:s + args.batch_size], do, output="tensor").cpu().numpy()
                         for s in range(0, len(x), args.batch_size)])
    write_csv(out, cf, variable_names(model, model.d), force=args.force, inputs=[args.model, args.data])
    label = ", ".join(f"{k}={v:g}" for k, v in do.items())
    print(f"wrote {len(cf)} counterfactual rows under do({label}) to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "counterfactual", "counterfactual rows of a data file under do(...)", __doc__, run)
    p.add_argument("model", help="a CausalFlow saved with .save(path)")
    p.add_argument("data", help="observed rows: .csv (optional header of names), .npy or .npz")
    add_do_option(p)
    add_output_options(p, "CSV file for the counterfactual rows", required=True, batch_size=65_536)
