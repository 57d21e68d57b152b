r"""``strnn-fast intervene``: sample a fitted CausalFlow under interventions and print the means.

A CausalFlow with covariates (``fit --model causal --context``) needs them with ``--context FILE``:
one row (all samples share it) or ``-n`` rows (one per sample).

Example:
    strnn-fast intervene model.pt --do x=1.5 --do y=0 -n 10000 -o samples.csv
"""
from __future__ import annotations

import argparse

from ..variables import parse_assignments
from ._common import (add_do_option, add_output_options, check_output, command_parser,
                      load_causal, positive_int, seed_type, variable_names, write_csv)
from ._tables import add_context_option, input_files, read_context

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    inputs = input_files(args)
    out = check_output(args.output, inputs=inputs, force=args.force) if args.output else None
    model = load_causal(args.model, trusted=args.trust_legacy_file)
    do = parse_assignments(args.do, model.names)
    context = read_context(args, model, args.n, "sample")
    samples = model.interventional_samples(do, args.n, seed=args.seed, output="tensor",
                                           context=context).cpu().double().numpy()
    names = variable_names(model, model.d)
    label = ", ".join(f"{k}={v:g}" for k, v in do.items())
    print(f"E[x | do({label})] from {args.n} samples")
    print(f"{'variable':<16} {'mean':>12} {'std':>12}")
    for name, mean, std in zip(names, samples.mean(0), samples.std(0)):
        print(f"{name:<16} {mean:>12.5g} {std:>12.5g}")
    if out is not None:
        write_csv(out, samples, names, force=args.force, inputs=inputs)
        print(f"wrote {len(samples)} samples to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "intervene", "sample a fitted CausalFlow under do(...) and print the means", __doc__, run)
    p.add_argument("model", help="a CausalFlow saved with .save(path)")
    add_do_option(p)
    p.add_argument("-n", type=positive_int, default=10_000, help="number of samples (default 10000)")
    add_context_option(p, "sample")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the noise draw (default 0)")
    add_output_options(p, "write the samples to this CSV file")
