"""Bad-input corpus: careless and hostile inputs through the CLI and the Python API.

Every case asserts the exception type (CLI: exit code 2 and a one-line message on stderr, no
traceback), that the message names the argument or file, that no input file changed (checksums
of the whole input folder) and that no partial output (nor temporary file) was left behind.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from _trust_world import A3, digest, make_world
from strnn_fast import FastStrNN, factorize
from strnn_fast.causal import CausalFlow
from strnn_fast.cli import main
from strnn_fast.data import load_adjacency, load_table
from strnn_fast.data.dataset import split, standardize
from strnn_fast.flows import StrAF
from strnn_fast.serialization import load
from strnn_fast.standardize import Standardized
from strnn_fast.train import evaluate_nll, fit


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "w"
    folder.mkdir()
    return make_world(folder)


FIT = ["--epochs", "1", "--hidden", "4", "--flow-steps", "1", "-q"]
W = "{w}"


def _fit(data: str, graph: str = "graph.csv", *extra: str, output: str = "o.pt") -> list[str]:
    """argv of ``strnn-fast fit`` on two files of the world, writing {w}/<output>."""
    return ["fit", f"{{w}}/{data}", "-a", f"{{w}}/{graph}", "-o", f"{{w}}/{output}", *extra]


def _sample(model: str = "straf.pt", *extra: str, n: str = "3", output: str = "o.csv") -> list[str]:
    """argv of ``strnn-fast sample``: n draws from a model file of the world into {w}/<output>."""
    return ["sample", f"{{w}}/{model}", "-n", n, "-o", f"{{w}}/{output}", *extra]


def _cf(model: str = "causal.pt", data: str = "data.csv", *extra: str, do: str = "a=1",
        output: str = "o.csv") -> list[str]:
    """argv of ``strnn-fast counterfactual`` of a model and a data file of the world into {w}/<output>."""
    return ["counterfactual", f"{{w}}/{model}", f"{{w}}/{data}", "--do", do, "-o", f"{{w}}/{output}", *extra]


def _cli_refuses(command: str, argv: Callable[[str], list[str]], files: str) -> list[tuple[str, list[str], str]]:
    """Cases of a command that must refuse each of the (space-separated) files, naming the file."""
    return [(f"{command}-{name}", argv(name), name) for name in files.split()]


# (id, argv with {w} for the input folder, text the message must contain)
CLI_CASES = [
    # bad files, each named in the message
    *_cli_refuses("fit", _fit, "nope.csv table.xlsx empty.csv header_only.csv nan.csv inf.csv dup_names.csv "
                               "binary.csv nul.csv cube.npy strings.npy junk.npy two.npz junk.npz"),
    *_cli_refuses("fit-graph", lambda graph: _fit("data.csv", graph), "nograph.csv mixed.csv three_fields.txt"),
    *_cli_refuses("sample", _sample, "nope.pt data.csv crafted.pt crafted_raw.pt fast.pt truncated.pt empty.pt "
                                     "foreign.pt existing_dir"),
    *_cli_refuses("logprob-data", lambda data: ["logprob", "{w}/straf.pt", f"{{w}}/{data}"],
                  "nope.csv two_cols.csv nan.csv"),
    *_cli_refuses("logprob-model", lambda model: ["logprob", f"{{w}}/{model}", "{w}/data.csv"], "nope.pt crafted.pt"),
    *_cli_refuses("cf-data", lambda data: _cf("causal.pt", data), "nope.csv two_cols.csv"),
    *_cli_refuses("cf-model", lambda model: _cf(model, "data.csv"), "crafted.pt"),
    *_cli_refuses("factorize", lambda file: ["factorize", f"{{w}}/{file}", "-o", "{w}/fo"],
                  "empty.csv nonbinary.csv nope.npy junk.npy table.xlsx cube.npy"),
    # fit: data files
    ("fit-ragged", _fit("ragged.csv"), "line 3"),
    ("fit-words", _fit("words.csv"), "'oops'"),
    ("fit-beyond-float32", _fit("huge.csv", "graph.csv", *FIT), "float32"),
    ("fit-constant", _fit("const.csv", "graph.csv", *FIT), "'c'"),
    ("fit-constant-causal", _fit("const.csv", "graph.csv", "--model", "causal", *FIT), "'c'"),
    ("fit-too-few-rows", _fit("few.csv", "graph.csv", *FIT), "few.csv"),
    ("fit-bad-names-npz", _fit("badnames.npz"), "names"),
    # fit: graphs
    ("fit-cycle", _fit("data.csv", "cycle.csv", *FIT), "cycle"),
    ("fit-self-loop", _fit("data.csv", "selfloop.csv"), "self-loop"),
    ("fit-unknown-node", _fit("data.csv", "unknown.csv"), "'q'"),
    ("fit-graph-size", _fit("noheader.csv", "two_by_two.csv"), "columns"),
    ("fit-nonbinary-graph", _fit("noheader.csv", "nonbinary.csv"), "nonbinary.csv"),
    ("fit-names-vs-graph", _fit("other_names.csv"), "zz"),
    # fit: outputs and options
    ("fit-output-is-input", _fit("data.csv", output="data.csv"), "input"),
    ("fit-output-exists", _fit("data.csv", output="existing.csv"), "--force"),
    ("fit-output-folder-missing", _fit("data.csv", output="no/o.pt"), "no"),
    ("fit-output-is-dir", _fit("data.csv", output="existing_dir"), "existing_dir"),
    ("fit-epochs-0", _fit("data.csv", "graph.csv", "--epochs", "0"), "--epochs"),
    ("fit-hidden-0", _fit("data.csv", "graph.csv", "--hidden", "0"), "--hidden"),
    ("fit-hidden-words", _fit("data.csv", "graph.csv", "--hidden", "a,b"), "--hidden"),
    ("fit-split", _fit("data.csv", "graph.csv", "--split", "0.5,0.5"), "--split"),
    ("fit-model", _fit("data.csv", "graph.csv", "--model", "maf"), "--model"),
    ("fit-lr-nan", _fit("data.csv", "graph.csv", "--lr", "nan", *FIT), "lr"),
    ("fit-lr-negative", _fit("data.csv", "graph.csv", "--lr", "-1", *FIT), "lr"),
    ("fit-batch", _fit("data.csv", "graph.csv", "--batch-size", "-3"), "--batch-size"),
    ("fit-no-adjacency", ["fit", "{w}/data.csv", "-o", "{w}/o.pt"], "--adjacency"),
    ("fit-seed-negative", _fit("data.csv", "graph.csv", "--seed", "-1"), "--seed"),
    ("fit-lr-huge", _fit("data.csv", "graph.csv", "--lr", "1e300"), "--lr"),
    ("cf-beyond-float32", _cf("causal.pt", "huge.csv"), "float32"),
    ("sample-seed-words", _sample("straf.pt", "--seed", "x"), "--seed"),
    ("sample-empty-output", ["sample", "{w}/straf.pt", "-n", "3", "-o", ""], "output"),
    # sample
    ("sample-legacy", _sample("legacy.pt"), "--trust-legacy-file"),
    ("sample-n-0", _sample("straf.pt", n="0"), "-n"),
    ("sample-n-words", _sample("straf.pt", n="ten"), "-n"),
    ("sample-exists", _sample("straf.pt", output="existing.csv"), "--force"),
    ("sample-into-model", _sample("straf.pt", "--force", output="straf.pt"), "input"),
    ("sample-folder-missing", _sample("straf.pt", output="no/o.csv"), "no"),
    ("sample-nan-model", _sample("nanmodel.pt"), "non-finite"),
    # logprob
    ("logprob-names", ["logprob", "{w}/straf.pt", "{w}/other_names.csv"], "'c'"),
    ("logprob-float32", ["logprob", "{w}/straf.pt", "{w}/huge.csv"], "float32"),
    ("logprob-exists", ["logprob", "{w}/straf.pt", "{w}/data.csv", "-o", "{w}/existing.csv"], "--force"),
    ("logprob-into-data", ["logprob", "{w}/straf.pt", "{w}/data.csv", "-o", "{w}/data.csv", "--force"], "input"),
    ("logprob-nan-model", ["logprob", "{w}/nanmodel.pt", "{w}/data.csv", "-o", "{w}/o.csv"], "NaN"),
    ("logprob-batch-0", ["logprob", "{w}/straf.pt", "{w}/data.csv", "--batch-size", "0"], "--batch-size"),
    # intervene
    ("intervene-not-causal", ["intervene", "{w}/straf.pt", "--do", "a=1"], "CausalFlow"),
    ("intervene-no-do", ["intervene", "{w}/causal.pt"], "--do"),
    ("intervene-no-equals", ["intervene", "{w}/causal.pt", "--do", "a"], "--do"),
    ("intervene-unknown", ["intervene", "{w}/causal.pt", "--do", "zz=1"], "'zz'"),
    ("intervene-not-number", ["intervene", "{w}/causal.pt", "--do", "a=abc"], "'abc'"),
    ("intervene-twice", ["intervene", "{w}/causal.pt", "--do", "a=1", "--do", "a=2"], "'a'"),
    ("intervene-nan", ["intervene", "{w}/causal.pt", "--do", "a=nan"], "do['a']"),
    ("intervene-float32", ["intervene", "{w}/causal.pt", "--do", "a=1e40"], "float32"),
    ("intervene-n-0", ["intervene", "{w}/causal.pt", "--do", "a=1", "-n", "0"], "-n"),
    ("intervene-exists", ["intervene", "{w}/causal.pt", "--do", "a=1", "-o", "{w}/existing.csv"], "--force"),
    ("intervene-legacy", ["intervene", "{w}/legacy.pt", "--do", "a=1"], "--trust-legacy-file"),
    # counterfactual
    ("cf-not-causal", _cf("straf.pt", "data.csv"), "CausalFlow"),
    ("cf-into-data", _cf("causal.pt", "data.csv", output="data.csv"), "input"),
    ("cf-unknown", _cf("causal.pt", "data.csv", do="q=1"), "'q'"),
    ("cf-no-output", ["counterfactual", "{w}/causal.pt", "{w}/data.csv", "--do", "a=1"], "--output"),
    # factorize
    ("factorize-block-0", ["factorize", "--block", "0", "-o", "{w}/fo"], "--block"),
    ("factorize-hidden-0", ["factorize", "{w}/rect.npy", "--hidden", "0", "-o", "{w}/fo"], "--hidden"),
    ("factorize-methods", ["factorize", "{w}/rect.npy", "--methods", "bogus", "-o", "{w}/fo"], "--methods"),
    ("factorize-existing-folder", ["factorize", "{w}/rect.npy", "-o", "{w}/existing_dir"], "--force"),
    ("factorize-output-is-file", ["factorize", "{w}/rect.npy", "-o", "{w}/existing.csv"], "existing.csv"),
    ("factorize-all-zero", ["factorize", "{w}/zeros.csv", "-o", "{w}/fo"], "zero"),
    # demo
    ("demo-out-is-file", ["demo", "--out", "{w}/existing.csv", "--epochs", "1"], "existing.csv"),
    ("demo-n-0", ["demo", "--n", "0", "--out", "{w}/demo"], "--n"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(world, capsys, argv, expected) -> None:
    before = digest(world)
    code, err = _run([a.replace(W, str(world)) for a in argv], capsys)
    assert code == 2
    assert "Traceback" not in err and err.strip()
    assert expected in err, err
    assert digest(world) == before  # no input changed, no output or temporary left
    assert not (world.parent / "PWNED").exists()


def test_cli_corpus_is_large_enough() -> None:
    assert len(CLI_CASES) >= 69  # issue cases + at least 60 more


# ---------------------------------------------------------------------------------------------- API

def _flow() -> StrAF:
    return StrAF(A3, hidden_sizes=(4,), flow_steps=1, names=["a", "b", "c"])


def _causal(world) -> CausalFlow:
    return load(world / "causal.pt")


class _NoLogProb(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


X = np.random.default_rng(0).normal(size=(30, 3))


def _api_refuses(prefix: str, reader: Callable[[Any], Any], error: type[Exception], files: str) -> list[tuple]:
    """API cases: ``reader(world / file)`` raises ``error`` naming the file, for each (space-separated) file."""
    return [(f"{prefix}-{name}", lambda w, name=name: reader(w / name), error, name) for name in files.split()]


# (id, callable(world), exception type, text the message must contain)
API_CASES = [
    # bad files, each named in the message
    *_api_refuses("load", load, FileNotFoundError, "nope.pt"),
    *_api_refuses("load", load, ValueError, "existing_dir"),  # "is a folder", not "does not exist"
    *_api_refuses("load", load, ValueError, "data.csv crafted.pt crafted_raw.pt truncated.pt empty.pt foreign.pt"),
    *_api_refuses("table", load_table, FileNotFoundError, "nope.csv"),
    *_api_refuses("table", load_table, ValueError, "table.xlsx empty.csv header_only.csv inf.csv binary.csv "
                                                   "nul.csv dup_names.csv cube.npy strings.npy junk.npy two.npz "
                                                   "badnames.npz junk.npz"),
    *_api_refuses("adj", load_adjacency, ValueError, "empty.csv nonbinary.csv mixed.csv rect.npy junk.npy"),
    # load
    ("load-legacy", lambda w: load(w / "legacy.pt"), ValueError, "trusted=True"),
    ("load-int-path", lambda w: load(3), TypeError, "path"),
    ("load-trusted-str", lambda w: load(w / "straf.pt", trusted="yes"), TypeError, "trusted"),
    # load_table
    ("table-ragged", lambda w: load_table(w / "ragged.csv"), ValueError, "line 3"),
    ("table-words", lambda w: load_table(w / "words.csv"), ValueError, "'b'"),
    ("table-nan", lambda w: load_table(w / "nan.csv"), ValueError, "line 7"),
    ("table-int-path", lambda w: load_table(5), TypeError, "path"),
    # load_adjacency
    ("adj-selfloop", lambda w: load_adjacency(w / "selfloop.csv"), ValueError, "self-loop"),
    ("adj-three-fields", lambda w: load_adjacency(w / "three_fields.txt"), ValueError, "line 1"),
    ("adj-unknown-name", lambda w: load_adjacency(w / "unknown.csv", names=["a", "b", "c"]), ValueError, "'q'"),
    # FastStrNN
    ("fast-nin-0", lambda w: FastStrNN(0, (4,), 3, adjacency=A3), ValueError, "nin"),
    ("fast-hidden-words", lambda w: FastStrNN(3, ("a",), 3, adjacency=A3), TypeError, "hidden_sizes"),
    ("fast-nonbinary", lambda w: FastStrNN(3, (4,), 3, adjacency=A3 * 2), ValueError, "adjacency"),
    ("fast-columns", lambda w: FastStrNN(4, (4,), 3, adjacency=A3), ValueError, "adjacency"),
    ("fast-opt-type", lambda w: FastStrNN(3, (4,), 3, adjacency=A3, opt_type="magic"), ValueError, "opt_type"),
    ("fast-activation", lambda w: FastStrNN(3, (4,), 3, adjacency=A3, activation="swish2"), ValueError, "activation"),
    ("fast-nout", lambda w: FastStrNN(3, (4,), 5, adjacency=A3), ValueError, "nout"),
    ("fast-forward-width", lambda w: FastStrNN(3, (4,), 3, adjacency=A3)(torch.zeros(2, 4)), ValueError, "x"),
    ("fast-forward-numpy", lambda w: FastStrNN(3, (4,), 3, adjacency=A3)(np.zeros((2, 3))), TypeError, "x"),
    ("fast-forward-complex", lambda w: FastStrNN(3, (4,), 3, adjacency=A3)(torch.zeros(2, 3, dtype=torch.cfloat)),
     TypeError, "x"),
    # flows
    ("flow-cycle", lambda w: StrAF([[0, 1], [1, 0]], hidden_sizes=(4,)), ValueError, "cycle"),
    ("flow-hidden", lambda w: StrAF(A3, hidden_sizes=(-1,)), ValueError, "hidden_sizes"),
    ("flow-steps", lambda w: StrAF(A3, hidden_sizes=(4,), flow_steps=0), ValueError, "flow_steps"),
    ("flow-logprob-numpy", lambda w: _flow().log_prob(np.zeros((2, 3))), TypeError, "x"),
    ("flow-logprob-width", lambda w: _flow().log_prob(torch.zeros(2, 4)), ValueError, "x"),
    ("flow-sample-str", lambda w: _flow().sample("12"), TypeError, "sample_shape"),
    ("flow-sample-negative", lambda w: _flow().sample(-1), ValueError, "sample_shape"),
    ("flow-sample-float", lambda w: _flow().sample(2.5), TypeError, "sample_shape"),
    # fit / evaluate_nll
    ("fit-no-logprob", lambda w: fit(_NoLogProb(), X, verbose=False), TypeError, "log_prob"),
    ("fit-epochs-0", lambda w: fit(_flow(), X, epochs=0, verbose=False), ValueError, "epochs"),
    ("fit-lr-negative", lambda w: fit(_flow(), X, lr=-1.0, verbose=False), ValueError, "lr"),
    ("fit-lr-nan", lambda w: fit(_flow(), X, lr=math.nan, verbose=False), ValueError, "lr"),
    ("fit-lr-huge", lambda w: fit(_flow(), X, lr=1e300, verbose=False), ValueError, "lr"),
    ("causal-cf-float32", lambda w: _causal(w).counterfactual(np.full((2, 3), 1e40), {"a": 1.0}), ValueError,
     "x_obs"),
    ("fit-batch-0", lambda w: fit(_flow(), X, batch_size=0, verbose=False), ValueError, "batch_size"),
    ("fit-1d", lambda w: fit(_flow(), X[:, 0], verbose=False), ValueError, "train"),
    ("fit-empty", lambda w: fit(_flow(), X[:0], verbose=False), ValueError, "train"),
    ("fit-nan", lambda w: fit(_flow(), np.where(X > 1, np.nan, X), verbose=False), ValueError, "train"),
    ("fit-strings", lambda w: fit(_flow(), np.array([["a", "b", "c"]]), verbose=False), TypeError, "train"),
    ("fit-float32-range", lambda w: fit(_flow(), X * 1e39, epochs=1, verbose=False), ValueError, "float32"),
    ("fit-val-width", lambda w: fit(_flow(), X, X[:, :2], verbose=False), ValueError, "val"),
    ("fit-d-mismatch", lambda w: fit(_flow(), X[:, :2], verbose=False), ValueError, "train"),
    ("fit-frame-names", lambda w: fit(_flow(), pd.DataFrame(X, columns=["a", "b", "z"]), verbose=False),
     ValueError, "'z'"),
    ("fit-scheduler", lambda w: fit(_flow(), X, scheduler="cosine", verbose=False), ValueError, "scheduler"),
    ("fit-seed", lambda w: fit(_flow(), X, seed=1.5, verbose=False), TypeError, "seed"),
    ("fit-grad-norm", lambda w: fit(_flow(), X, max_grad_norm=-1, verbose=False), ValueError, "max_grad_norm"),
    ("nll-batch-0", lambda w: evaluate_nll(_flow(), X, batch_size=0), ValueError, "batch_size"),
    ("nll-nan", lambda w: evaluate_nll(_flow(), np.full((2, 3), np.nan)), ValueError, "data"),
    # CausalFlow
    ("causal-cycle", lambda w: CausalFlow([("a", "b"), ("b", "a")]), ValueError, "cycle"),
    ("causal-structure", lambda w: CausalFlow(A3, structure="dense"), ValueError, "structure"),
    ("causal-constant", lambda w: CausalFlow(A3, hidden_sizes=(4,), flow_steps=1).fit(
        np.c_[X[:, :2], np.full(30, 7.0)], epochs=1, verbose=False), ValueError, "column 2"),
    ("causal-val-fraction", lambda w: CausalFlow(A3).fit(X, val_fraction=1.5), ValueError, "val_fraction"),
    ("causal-float32", lambda w: CausalFlow(A3).fit(X * 1e39, epochs=1, verbose=False), ValueError, "float32"),
    ("causal-do-unknown", lambda w: _causal(w).interventional_samples({"zz": 1.0}, 5), ValueError, "'zz'"),
    ("causal-do-nan", lambda w: _causal(w).interventional_samples({"a": math.nan}, 5), ValueError, "do['a']"),
    ("causal-do-length", lambda w: _causal(w).interventional_samples({"a": np.zeros(3)}, 5), ValueError, "do['a']"),
    ("causal-do-not-mapping", lambda w: _causal(w).interventional_samples([("a", 1.0)], 5), TypeError, "do"),
    ("causal-n-0", lambda w: _causal(w).sample(0), ValueError, "n"),
    ("causal-n-str", lambda w: _causal(w).sample("3"), TypeError, "n"),
    ("causal-seed", lambda w: _causal(w).sample(3, seed="x"), TypeError, "seed"),
    ("causal-cf-width", lambda w: _causal(w).counterfactual(np.zeros((2, 4)), {"a": 1.0}), ValueError, "x_obs"),
    ("causal-output", lambda w: _causal(w).sample(3, output="json"), ValueError, "output"),
    # Standardized, standardize, split
    ("std-mean-length", lambda w: Standardized(_flow(), mean=[0.0, 0.0], std=[1.0, 1.0]), ValueError, "mean"),
    ("std-zero", lambda w: Standardized(_flow(), mean=[0.0] * 3, std=[1.0, 0.0, 1.0]), ValueError, "std"),
    ("std-nan", lambda w: Standardized(_flow(), mean=[0.0, math.nan, 0.0], std=[1.0] * 3), ValueError, "mean"),
    ("std-base", lambda w: Standardized(torch.nn.Linear(3, 3), mean=[0.0] * 3, std=[1.0] * 3), TypeError, "base"),
    ("std-logprob-numpy", lambda w: load(w / "straf.pt").log_prob(np.zeros((2, 3))), TypeError, "x"),
    ("std-logprob-width", lambda w: load(w / "straf.pt").log_prob(torch.zeros(2, 2)), ValueError, "x"),
    ("standardize-constant", lambda w: standardize(np.c_[X[:, :2], np.ones(30)]), ValueError, "column 2"),
    ("split-fractions", lambda w: split(X, (0.5, 0.6)), ValueError, "fractions"),
    # save
    ("save-no-clobber", lambda w: _flow().save(w / "existing.csv", overwrite=False), FileExistsError, "existing.csv"),
    ("save-folder-missing", lambda w: _flow().save(w / "no" / "m.pt"), FileNotFoundError, "no"),
    ("save-into-dir", lambda w: _flow().save(w / "existing_dir"), ValueError, "existing_dir"),
    # factorize API
    ("factorize-method", lambda w: factorize(A3, (4,), "magic"), ValueError, "method"),
    ("factorize-hidden", lambda w: factorize(A3, (0,)), ValueError, "hidden"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input(world, call, error, expected) -> None:
    before = digest(world)
    with pytest.raises(error) as exc:
        call(world)
    assert type(exc.value) is error, repr(exc.value)
    assert expected in str(exc.value), str(exc.value)
    assert digest(world) == before
    assert not (world.parent / "PWNED").exists()


def test_api_corpus_is_large_enough() -> None:
    assert len(API_CASES) >= 60
