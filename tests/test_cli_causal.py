"""The intervene / counterfactual commands, in-process, on a small CausalFlow saved in tmp_path."""
from __future__ import annotations

from pathlib import Path

import csv

import numpy as np
import pytest
import torch

from strnn_fast import load
from strnn_fast.causal import CausalFlow
from strnn_fast.cli import main
from strnn_fast.data.sem import LinearGaussianSEM
from strnn_fast.flows import StrAF
from _trust_world import FIT_TWO_EPOCHS, cf_argv, check_cli_refuses, cli_refuses

NAMES = ["a", "b", "c"]
EDGES = [("a", "b", 1.0), ("b", "c", -0.5)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("causal_cli")
    sem = LinearGaussianSEM(EDGES, 1.0, names=NAMES)
    torch.manual_seed(0)
    model = CausalFlow([(p, c) for p, c, _ in EDGES], hidden_sizes=(8,), flow_steps=1)
    model.fit(sem.sample(400, seed=0), epochs=3, verbose=False)
    model.save(root / "model.pt")
    unnamed = CausalFlow(np.array([[0, 0], [1, 0]]), hidden_sizes=(4,), flow_steps=1)
    unnamed.fit(np.random.default_rng(0).normal(size=(100, 2)), epochs=1, verbose=False)
    unnamed.save(root / "unnamed.pt")
    StrAF([("a", "b")], hidden_sizes=(4,), flow_steps=1).save(root / "straf.pt")
    observed = sem.sample(25, seed=1)
    # Columns in another order than the model's: matched by name.
    np.savetxt(root / "observed.csv", observed[:, [2, 0, 1]], delimiter=",", header="c,a,b", comments="")
    return {"root": root, "model": root / "model.pt", "unnamed": root / "unnamed.pt", "straf": root / "straf.pt",
            "observed": root / "observed.csv", "x": observed}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read(path: Path) -> tuple[list[str], np.ndarray]:
    header = next(csv.reader(path.read_text().splitlines()))
    return header, np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def test_intervene_prints_means_and_writes_samples(capsys, files, tmp_path: Path) -> None:
    out = tmp_path / "samples.csv"
    code, stdout, _ = run(capsys, "intervene", files["model"], "--do", "a=1.5", "--do", "c=0", "-n", "300",
                          "-o", out)
    assert code == 0
    assert "do(a=1.5, c=0)" in stdout
    lines = {line.split()[0]: line.split()[1:] for line in stdout.splitlines()[2:5]}
    assert set(lines) == set(NAMES) and float(lines["a"][0]) == 1.5 and float(lines["a"][1]) == 0.0
    header, samples = read(out)
    assert header == NAMES and samples.shape == (300, 3)
    assert (samples[:, 0] == 1.5).all() and (samples[:, 2] == 0.0).all()
    assert abs(samples[:, 1].mean() - float(lines["b"][0])) < 1e-4


def test_intervene_same_seed_same_draw(capsys, files, tmp_path: Path) -> None:
    for name in ("one.csv", "two.csv"):
        assert run(capsys, "intervene", files["model"], "--do", "b=1", "-n", "50", "--seed", "3",
                   "-o", tmp_path / name)[0] == 0
    assert np.array_equal(read(tmp_path / "one.csv")[1], read(tmp_path / "two.csv")[1])


def test_counterfactual_writes_rows(capsys, files, tmp_path: Path) -> None:
    out = tmp_path / "cf.csv"
    code, stdout, _ = run(capsys, "counterfactual", files["model"], files["observed"], "--do", "b=0.5", "-o", out)
    assert code == 0 and "25 counterfactual rows" in stdout
    header, cf = read(out)
    assert header == NAMES and cf.shape == (25, 3)
    assert (cf[:, 1] == 0.5).all()
    np.testing.assert_allclose(cf[:, 0], files["x"][:, 0], rtol=1e-9)  # a is no descendant of b
    direct = load(files["model"]).counterfactual(files["x"], {"b": 0.5}, output="tensor").numpy()
    # the CLI writes CSV text: the error of printed decimals, not of the computation
    np.testing.assert_allclose(cf, direct, rtol=1e-8, atol=1e-8)


def test_unnamed_model_takes_indices(capsys, files, tmp_path: Path) -> None:
    data = tmp_path / "rows.npy"
    np.save(data, np.zeros((4, 2)))
    out = tmp_path / "cf.csv"
    assert run(capsys, "counterfactual", files["unnamed"], data, "--do", "0=2", "-o", out)[0] == 0
    header, cf = read(out)
    assert header == ["x0", "x1"] and (cf[:, 0] == 2.0).all()
    assert run(capsys, "intervene", files["unnamed"], "--do", "1=-1", "-n", "10")[0] == 0


@pytest.mark.parametrize("argv, message", [
    (["--do", "z=1"], "unknown variable 'z'"),
    (["--do", "a"], "VARIABLE=VALUE"),
    (["--do", "a=high"], "not a number"),
    (["--do", "a=1", "--do", "a=2"], "twice"),
    ([], "at least one intervention"),
])
def test_intervene_bad_input(capsys, files, argv: list[str], message: str) -> None:
    code, _, err = run(capsys, "intervene", files["model"], *argv, "-n", "5")
    assert code == 2 and message in err


def test_bad_files(capsys, files, tmp_path: Path) -> None:
    code, _, err = run(capsys, "intervene", files["straf"], "--do", "a=1", "-n", "5")
    assert code == 2 and "not a CausalFlow" in err
    code, _, err = run(capsys, "intervene", tmp_path / "missing.pt", "--do", "a=1", "-n", "5")
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,q\n1,2,3\n")
    code, _, err = run(capsys, "counterfactual", files["model"], bad, "--do", "a=1", "-o", tmp_path / "o.csv")
    assert code == 2 and "lacks" in err
    code, _, err = run(capsys, "counterfactual", files["model"], files["observed"], "--do", "a=1",
                       "-o", files["observed"])
    assert code == 2 and "also an input" in err


def test_fit_causal_then_intervene(capsys, tmp_path: Path) -> None:
    """The whole command-line path: data + graph files -> fit --model causal -> intervene."""
    sem = LinearGaussianSEM(EDGES, 1.0, names=NAMES)
    data = tmp_path / "obs.csv"
    np.savetxt(data, sem.sample(600, seed=3), delimiter=",", header=",".join(NAMES), comments="")
    graph = tmp_path / "graph.csv"
    graph.write_text("parent,child\n" + "".join(f"{p},{c}\n" for p, c, _ in EDGES))
    model = tmp_path / "causal.pt"
    code, stdout, _ = run(capsys, "fit", data, "-a", graph, "--model", "causal", "--prior", "laplace",
                          "--hidden", "8", "--flow-steps", "2", "--epochs", "150", "--lr", "1e-2", "--batch-size", "64",
                          "-q", "-o", model)
    assert code == 0 and "test  NLL" in stdout
    loaded = load(model)
    assert isinstance(loaded, CausalFlow) and loaded.config["prior"] == "laplace"
    code, stdout, _ = run(capsys, "intervene", model, "--do", "a=2", "-n", "4000")
    assert code == 0
    means = {line.split()[0]: float(line.split()[1]) for line in stdout.splitlines()[2:5]}
    # Linear-Gaussian truth: E[b | do(a=2)] = 2, E[c | do(a=2)] = -1; a short fit is close.
    assert means["a"] == 2.0
    assert abs(means["b"] - 2.0) < 0.5 and abs(means["c"] + 1.0) < 0.5


# (id, argv with {w} for the bad-input world's folder, text the message must contain)
CLI_BAD_INPUT = [
    *cli_refuses("cf-data", lambda data: cf_argv("causal.pt", data), "nope.csv two_cols.csv"),
    *cli_refuses("cf-model", lambda model: cf_argv(model, "data.csv"), "crafted.pt"),
    ("cf-beyond-float32", cf_argv("causal.pt", "huge.csv"), "float32"),
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
    ("cf-not-causal", cf_argv("straf.pt", "data.csv"), "CausalFlow"),
    ("cf-into-data", cf_argv("causal.pt", "data.csv", output="data.csv"), "input"),
    ("cf-unknown", cf_argv("causal.pt", "data.csv", do="q=1"), "'q'"),
    ("cf-no-output", ["counterfactual", "{w}/causal.pt", "{w}/data.csv", "--do", "a=1"], "--output"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT])
def test_intervene_and_counterfactual_refuse_bad_input(bad_world, capsys, argv, expected) -> None:
    check_cli_refuses(bad_world, capsys, argv, expected)


def test_sample_a_causal_model_written_by_fit(tmp_path, abc_files, capsys) -> None:
    data, graph = abc_files
    model = tmp_path / "causal.pt"
    assert main(["fit", str(data), "-a", str(graph), "--model", "causal", *FIT_TWO_EPOCHS, "-o", str(model)]) == 0
    out = tmp_path / "s.csv"
    assert main(["sample", str(model), "-n", "7", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == '"a","b","c"' and len(lines) == 8
    assert np.isfinite(np.loadtxt(out, delimiter=",", skiprows=1)).all()
