r"""``strnn-fast counterfactual``: counterfactual rows of a data file under an intervention.

Reads observed rows (.csv with an optional header of names, .npy or .npz), answers "what would
each row have been under do(...)" with a fitted CausalFlow and writes the rows as CSV. A
CausalFlow with covariates (``fit --model causal --context``) needs the observed covariates with
``--context FILE`` (one row per observed row, or one row for all).

Example:
    strnn-fast counterfactual model.pt observed.csv --do x=1.5 -o counterfactual.csv
"""
from __future__ import annotations

import argparse

import numpy as np

from ..variables import parse_assignments
from ._common import (add_do_option, add_output_options, check_output, command_parser, load_causal,
                      variable_names, write_csv)
from ._tables import add_table_arguments, in_batches, input_files, read_context, read_rows

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    inputs = input_files(args)
    out = check_output(args.output, inputs=inputs, force=args.force)
    model = load_causal(args.model, trusted=args.trust_legacy_file)
    do = parse_assignments(args.do, model.names)
    x = read_rows(args.data, model)
    context = read_context(args, model, len(x), "observed row")

    def counterfactual(rows: np.ndarray, c: np.ndarray | None) -> np.ndarray:
        return model.counterfactual(rows, do, output="tensor", context=c).cpu().numpy()

    cf = in_batches(counterfactual, args.batch_size, x, context)
    write_csv(out, cf, variable_names(model, model.d), force=args.force, inputs=inputs)
    label = ", ".join(f"{k}={v:g}" for k, v in do.items())
    print(f"wrote {len(cf)} counterfactual rows under do({label}) to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "counterfactual", "counterfactual rows of a data file under do(...)", __doc__, run)
    add_table_arguments(p, "a CausalFlow saved with .save(path)", "observed rows", "observed row")
    add_do_option(p)
    add_output_options(p, "CSV file for the counterfactual rows", required=True, batch_size=65_536)
