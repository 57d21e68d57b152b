"""``--context FILE`` of logprob / sample / intervene / counterfactual: values, matching by name, bad input."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import tolerance

from strnn_fast import load
from strnn_fast.cli import main

SMALL = ["--epochs", "2", "--hidden", "8", "--flow-steps", "1", "--normalizer", "spline", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data a, b with covariates age, dose; a conditional StrAF, density estimator and CausalFlow, an
    unconditional StrAF, and context tables."""
    root = tmp_path_factory.mktemp("cli_context")
    g = np.random.default_rng(0)
    age, dose = g.normal(50, 10, size=(120, 1)), g.uniform(0, 2, size=(120, 1))
    a = 0.1 * age + dose + g.normal(size=(120, 1))
    b = a - dose + g.normal(size=(120, 1))
    data = root / "all.csv"
    np.savetxt(data, np.hstack([a, age, b, dose]), delimiter=",", header="a,age,b,dose", comments="")
    graph = root / "graph.csv"
    graph.write_text("parent,child\na,b\n")
    out = {"root": root, "graph": graph, "all": data}
    for model in ("straf", "density", "causal"):
        out[model] = root / f"{model}.pt"
        assert main(["fit", str(data), "-a", str(graph), "--model", model, "--context", "age,dose", *SMALL,
                     "-o", str(out[model])]) == 0
    out["plain"] = root / "plain.pt"
    x, c = np.hstack([a, b])[:37], np.hstack([age, dose])[:37]
    np.savetxt(root / "x.csv", x, delimiter=",", header="a,b", comments="")
    np.savetxt(root / "x_plain.csv", x, delimiter=",")
    assert main(["fit", str(root / "x.csv"), "-a", str(graph), *SMALL, "-o", str(out["plain"])]) == 0
    # The context columns in another order than the model's (dose, age): matched by name.
    np.savetxt(root / "c.csv", c[:, ::-1], delimiter=",", header="dose,age", comments="")
    np.save(root / "c.npy", c)
    np.savetxt(root / "one.csv", c[:1], delimiter=",", header="age,dose", comments="")
    out.update(x=x, c=c)
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def column(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def expected_log_prob(path: Path, x: np.ndarray, c: np.ndarray) -> torch.Tensor:
    model = load(path)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return model.log_prob(torch.tensor(x, dtype=dtype), context=torch.tensor(c, dtype=dtype)).double()


@pytest.mark.parametrize("model", ["straf", "density", "causal"])
def test_logprob_with_context_equals_the_models_log_prob(capsys, files, tmp_path, model: str) -> None:
    out = tmp_path / "ll.csv"
    # An odd batch size: rows and their context rows are cut into the same batches.
    code, stdout, err = run(capsys, "logprob", files[model], files["root"] / "x.csv", "--context",
                            files["root"] / "c.csv", "--batch-size", "5", "-o", out)
    assert code == 0, err
    values = torch.from_numpy(column(out)[:, 0])
    want = expected_log_prob(files[model], files["x"], files["c"])
    torch.testing.assert_close(values, want, **tolerance("float32"))
    mean = float(re.search(r"mean log-likelihood (\S+)", stdout).group(1))
    assert mean == pytest.approx(float(values.mean()), abs=1e-5)
    # The same context from an unnamed .npy (model order) gives the same values.
    code, _, err = run(capsys, "logprob", files[model], files["root"] / "x.csv", "--context", files["root"] / "c.npy",
                       "-o", out, "--force")
    assert code == 0, err
    torch.testing.assert_close(torch.from_numpy(column(out)[:, 0]), want, **tolerance("float32"))


def test_logprob_one_context_row_is_shared_and_the_context_matters(capsys, files, tmp_path) -> None:
    out = tmp_path / "ll.csv"
    assert run(capsys, "logprob", files["straf"], files["root"] / "x_plain.csv", "--context",
               files["root"] / "one.csv", "-o", out)[0] == 0
    shared = torch.from_numpy(column(out)[:, 0])
    want = expected_log_prob(files["straf"], files["x"], np.repeat(files["c"][:1], len(files["x"]), axis=0))
    torch.testing.assert_close(shared, want, **tolerance("float32"))
    per_row = expected_log_prob(files["straf"], files["x"], files["c"])
    assert (shared - per_row).abs().max() > 1e-3  # the model reads its context


def test_sample_and_intervene_and_counterfactual_with_context(capsys, files, tmp_path) -> None:
    out = tmp_path / "s.csv"
    assert run(capsys, "sample", files["causal"], "--context", files["root"] / "c.csv", "-o", out)[0] == 0
    assert column(out).shape == (37, 2)
    code, stdout, err = run(capsys, "intervene", files["causal"], "--do", "a=1.5", "--context", files["root"] / "one.csv",
                            "-n", "50", "-o", out, "--force")
    assert code == 0, err
    drawn = column(out)
    assert drawn.shape == (50, 2) and (drawn[:, 0] == 1.5).all()
    code, _, err = run(capsys, "counterfactual", files["causal"], files["root"] / "x.csv", "--do", "a=0.5",
                       "--context", files["root"] / "c.csv", "--batch-size", "8", "-o", out, "--force")
    assert code == 0, err
    model = load(files["causal"])
    want = model.counterfactual(files["x"], {"a": 0.5}, context=files["c"], output="tensor").double()
    torch.testing.assert_close(torch.from_numpy(column(out)), want, **tolerance("float32"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD = {
    "context model without --context": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv"],
                                        r"conditional on 2 context features \(age, dose\).*--context FILE"),
    "unconditional model with --context": (lambda f, t: ["logprob", f["plain"], f["root"] / "x.csv", "--context",
                                                         f["root"] / "c.csv"], "--context: .*not a conditional model"),
    "missing column": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context",
                                     write(t / "m.csv", "age,height\n1,2\n")], r"--context: .*missing \['dose'\]"),
    "wrong column count": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context",
                                         write(t / "w.csv", "1\n2\n")], "--context: .*1 columns .*2 context features"),
    "wrong row count": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context",
                                      write(t / "r.csv", "age,dose\n1,2\n3,4\n")],
                        "--context: .*has 2 rows; give one row .* or 37 rows"),
    "NaN": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context",
                          write(t / "n.csv", "age,dose\n1,nan\n")], "--context: .*(NaN|nan)"),
    "beyond float32": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context",
                                     write(t / "b.csv", "age,dose\n1,1e300\n")], "--context: .*beyond the range"),
    "no such file": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context", t / "none.csv"],
                     "--context: .*(does not exist|not found)"),
    "output is the context": (lambda f, t: ["logprob", f["straf"], f["root"] / "x.csv", "--context",
                                            f["root"] / "c.csv", "-o", f["root"] / "c.csv", "--force"], "input"),
    "sample without --context": (lambda f, t: ["sample", f["density"], "-n", "3", "-o", t / "s.csv"], "--context"),
    "intervene wrong rows": (lambda f, t: ["intervene", f["causal"], "--do", "a=1", "-n", "5", "--context",
                                           f["root"] / "c.csv"], "--context: .*37 rows; .* or 5 rows"),
    "counterfactual without --context": (lambda f, t: ["counterfactual", f["causal"], f["root"] / "x.csv", "--do",
                                                       "a=1", "-o", t / "cf.csv"], "--context FILE"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_context_exits_2_with_one_line_naming_the_argument(capsys, files, tmp_path, case: str) -> None:
    build, pattern = BAD[case]
    argv = build(files, tmp_path)
    before = {p: p.read_bytes() for p in files["root"].iterdir()}
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith(f"strnn-fast {argv[0]}: error:") and err.count("\n") == 1, err
    assert re.search(pattern, err), err
    assert {p: p.read_bytes() for p in files["root"].iterdir()} == before  # nothing written or touched
