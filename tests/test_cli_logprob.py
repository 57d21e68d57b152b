"""`strnn-fast logprob`: the data and model files, options and outputs it refuses, each named in a
one-line message (exit code 2, no traceback, no input changed, nothing left behind)."""
from __future__ import annotations

import pytest
from _trust_world import check_cli_refuses, cli_refuses


# (id, argv with {w} for the bad-input world's folder, text the message must contain)
CLI_BAD_INPUT = [
    *cli_refuses("logprob-data", lambda data: ["logprob", "{w}/straf.pt", f"{{w}}/{data}"],
                  "nope.csv two_cols.csv nan.csv"),
    *cli_refuses("logprob-model", lambda model: ["logprob", f"{{w}}/{model}", "{w}/data.csv"], "nope.pt crafted.pt"),
    ("logprob-names", ["logprob", "{w}/straf.pt", "{w}/other_names.csv"], "'c'"),
    ("logprob-float32", ["logprob", "{w}/straf.pt", "{w}/huge.csv"], "float32"),
    ("logprob-exists", ["logprob", "{w}/straf.pt", "{w}/data.csv", "-o", "{w}/existing.csv"], "--force"),
    ("logprob-into-data", ["logprob", "{w}/straf.pt", "{w}/data.csv", "-o", "{w}/data.csv", "--force"], "input"),
    ("logprob-nan-model", ["logprob", "{w}/nanmodel.pt", "{w}/data.csv", "-o", "{w}/o.csv"], "NaN"),
    # a row whose log-likelihood is -inf is named, with or without an output (a mean of -inf hid it)
    ("logprob-far-row", ["logprob", "{w}/straf.pt", "{w}/far.csv", "-o", "{w}/o.csv"], "-inf log-likelihood for row 3"),
    ("logprob-far-row-mean", ["logprob", "{w}/straf.pt", "{w}/far.csv"], "row 3 (0-based) of"),
    ("logprob-batch-0", ["logprob", "{w}/straf.pt", "{w}/data.csv", "--batch-size", "0"], "--batch-size"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT])
def test_logprob_refuses_bad_input(bad_world, capsys, argv, expected) -> None:
    check_cli_refuses(bad_world, capsys, argv, expected)
