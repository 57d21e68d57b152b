"""`strnn-fast fit`: the data files, graphs, options and outputs it refuses, each named in a
one-line message (exit code 2, no traceback, no input changed, nothing left behind)."""
from __future__ import annotations

import pytest
from _trust_world import FIT_ONE_EPOCH, check_cli_refuses, cli_refuses, fit_argv


# (id, argv with {w} for the bad-input world's folder, text the message must contain)
CLI_BAD_INPUT = [
    *cli_refuses("fit", fit_argv, "nope.csv table.xlsx empty.csv header_only.csv nan.csv inf.csv dup_names.csv "
                               "binary.csv nul.csv cube.npy strings.npy junk.npy two.npz junk.npz"),
    *cli_refuses("fit-graph", lambda graph: fit_argv("data.csv", graph), "nograph.csv mixed.csv three_fields.txt"),
    ("fit-ragged", fit_argv("ragged.csv"), "line 3"),
    ("fit-words", fit_argv("words.csv"), "'oops'"),
    ("fit-beyond-float32", fit_argv("huge.csv", "graph.csv", *FIT_ONE_EPOCH), "float32"),
    ("fit-constant", fit_argv("const.csv", "graph.csv", *FIT_ONE_EPOCH), "'c'"),
    ("fit-constant-causal", fit_argv("const.csv", "graph.csv", "--model", "causal", *FIT_ONE_EPOCH), "'c'"),
    ("fit-too-few-rows", fit_argv("few.csv", "graph.csv", *FIT_ONE_EPOCH), "few.csv"),
    ("fit-bad-names-npz", fit_argv("badnames.npz"), "names"),
    ("fit-cycle", fit_argv("data.csv", "cycle.csv", *FIT_ONE_EPOCH), "cycle"),
    ("fit-self-loop", fit_argv("data.csv", "selfloop.csv"), "self-loop"),
    ("fit-unknown-node", fit_argv("data.csv", "unknown.csv"), "'q'"),
    ("fit-graph-size", fit_argv("noheader.csv", "two_by_two.csv"), "columns"),
    ("fit-nonbinary-graph", fit_argv("noheader.csv", "nonbinary.csv"), "nonbinary.csv"),
    ("fit-names-vs-graph", fit_argv("other_names.csv"), "zz"),
    ("fit-output-is-input", fit_argv("data.csv", output="data.csv"), "input"),
    ("fit-output-exists", fit_argv("data.csv", output="existing.csv"), "--force"),
    ("fit-output-folder-missing", fit_argv("data.csv", output="no/o.pt"), "no"),
    ("fit-output-is-dir", fit_argv("data.csv", output="existing_dir"), "existing_dir"),
    ("fit-epochs-0", fit_argv("data.csv", "graph.csv", "--epochs", "0"), "--epochs"),
    ("fit-hidden-0", fit_argv("data.csv", "graph.csv", "--hidden", "0"), "--hidden"),
    ("fit-hidden-words", fit_argv("data.csv", "graph.csv", "--hidden", "a,b"), "--hidden"),
    ("fit-split", fit_argv("data.csv", "graph.csv", "--split", "0.5,0.5"), "--split"),
    ("fit-model", fit_argv("data.csv", "graph.csv", "--model", "maf"), "--model"),
    ("fit-lr-nan", fit_argv("data.csv", "graph.csv", "--lr", "nan", *FIT_ONE_EPOCH), "lr"),
    ("fit-lr-negative", fit_argv("data.csv", "graph.csv", "--lr", "-1", *FIT_ONE_EPOCH), "lr"),
    ("fit-batch", fit_argv("data.csv", "graph.csv", "--batch-size", "-3"), "--batch-size"),
    ("fit-no-adjacency", ["fit", "{w}/data.csv", "-o", "{w}/o.pt"], "--adjacency"),
    ("fit-seed-negative", fit_argv("data.csv", "graph.csv", "--seed", "-1"), "--seed"),
    ("fit-lr-huge", fit_argv("data.csv", "graph.csv", "--lr", "1e300"), "--lr"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT])
def test_fit_refuses_bad_input(bad_world, capsys, argv, expected) -> None:
    check_cli_refuses(bad_world, capsys, argv, expected)
