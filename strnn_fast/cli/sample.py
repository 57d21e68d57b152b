r"""``strnn-fast sample``: draw samples from a saved model into a CSV file with a header of names.

Works for every model ``strnn-fast fit`` writes (CausalFlow included). Non-finite samples (a
damaged model) are refused and nothing is written.

Example:
    strnn-fast sample model.pt -n 1000 -o samples.csv
"""
from __future__ import annotations

import argparse

import torch

from ._common import (add_trust_option, check_output, draw_samples, load_model, positive_int, seed_type,
                      variable_names, write_csv)

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    out = check_output(args.output, inputs=[args.model], force=args.force)
    model = load_model(args.model, trusted=args.trust_legacy_file)
    torch.manual_seed(args.seed)
    samples = draw_samples(model, args.n)
    write_csv(out, samples, variable_names(model, samples.shape[1]), force=args.force, inputs=[args.model])
    print(f"wrote {len(samples)} samples of {samples.shape[1]} variables to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="draw samples from a saved model into a CSV file")
    p.add_argument("model", help="model file written by `strnn-fast fit` or model.save(path)")
    p.add_argument("-n", type=positive_int, required=True, help="number of samples")
    p.add_argument("--output", "-o", required=True, help="CSV file to write")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the draw (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_trust_option(p)
    p.set_defaults(func=run)
