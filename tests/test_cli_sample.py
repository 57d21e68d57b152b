"""`strnn-fast sample`: the model files, options and outputs it refuses, each named in a one-line
message (exit code 2, no traceback, no input changed, nothing left behind)."""
from __future__ import annotations

import pytest
from _trust_world import check_cli_refuses, cli_refuses, sample_argv


# (id, argv with {w} for the bad-input world's folder, text the message must contain)
CLI_BAD_INPUT = [
    *cli_refuses("sample", sample_argv, "nope.pt data.csv crafted.pt crafted_raw.pt fast.pt truncated.pt empty.pt "
                                     "foreign.pt existing_dir"),
    ("sample-seed-words", sample_argv("straf.pt", "--seed", "x"), "--seed"),
    ("sample-empty-output", ["sample", "{w}/straf.pt", "-n", "3", "-o", ""], "output"),
    ("sample-legacy", sample_argv("legacy.pt"), "--trust-legacy-file"),
    ("sample-n-0", sample_argv("straf.pt", n="0"), "-n"),
    ("sample-n-words", sample_argv("straf.pt", n="ten"), "-n"),
    ("sample-exists", sample_argv("straf.pt", output="existing.csv"), "--force"),
    ("sample-into-model", sample_argv("straf.pt", "--force", output="straf.pt"), "input"),
    ("sample-folder-missing", sample_argv("straf.pt", output="no/o.csv"), "no"),
    ("sample-nan-model", sample_argv("nanmodel.pt"), "non-finite"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT])
def test_sample_refuses_bad_input(bad_world, capsys, argv, expected) -> None:
    check_cli_refuses(bad_world, capsys, argv, expected)
