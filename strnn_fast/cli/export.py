r"""``strnn-fast export``: one method of a saved model as a self-contained artifact.

Writes an AOTInductor package (``--format pt2``, loaded with ``torch._inductor.aoti_load_package``
or C++'s ``AOTIModelPackageLoader``) or an ONNX file (``--format onnx``: forward, log_prob and
transform of affine and spline flows and FastStrNN). The artifact runs without strnn_fast; its
batch dimension is dynamic, a conditional model takes its context as a second input, and
sampling takes the base noise as its input (see :mod:`strnn_fast.export`). An existing output is
kept unless ``--force``. ``--do VAR`` (repeatable) names the intervened variables of a causal
model's ``interventional_samples``; their values are an input of the artifact.

Example:
    strnn-fast export model.pt --method log_prob -o model_logprob.pt2
    strnn-fast export model.pt --method transform --format onnx -o model.onnx
    strnn-fast export causal.pt --method interventional_samples --do treatment -o do.pt2
"""
from __future__ import annotations

import argparse
import os

from ._common import add_trust_option, check_output, command_parser

__all__ = ["register", "run"]

METHODS = ("forward", "log_prob", "transform", "inverse", "sample", "interventional_samples")


def run(args: argparse.Namespace) -> int:
    from ..export import export
    from ..serialization import load

    out = check_output(args.output, inputs=[args.model], force=args.force)
    model = load(args.model, trusted=args.trust_legacy_file)
    # Indices when the model has no variable names (as --do of `intervene`).
    named = bool(getattr(model, "names", None))
    do = [v if named or not v.isdigit() else int(v) for v in args.do] or None
    meta = export(model, out, method=args.method, format=args.format, do=do, force=args.force)
    size = os.path.getsize(out)
    ins = ", ".join(f"{i['name']} (batch, {i['shape'][1]})" for i in meta["inputs"])
    print(f"wrote {out} ({size / 2**20:.1f} MiB): {meta['model']}.{args.method}({ins}) -> {', '.join(meta['outputs'])}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = command_parser(sub, "export", "export one method of a saved model to a .pt2 or ONNX file", __doc__, run)
    p.add_argument("model", help="model file written by `strnn-fast fit` or model.save(path)")
    p.add_argument("--method", required=True, choices=METHODS, help="the method the artifact computes")
    p.add_argument("--format", choices=("pt2", "onnx"), default="pt2", help="artifact format (default pt2)")
    p.add_argument("--do", action="append", default=[], metavar="VAR",
                   help="intervened variable of interventional_samples; repeat for several")
    p.add_argument("--output", "-o", required=True, help="the file to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_trust_option(p)
