"""The numbered cases of issue 11, each reproduced and checked for its new behaviour.

(Case 1, model files that run code, is in tests/test_serialization.py.)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from _trust_world import A3, digest
from strnn_fast import FastStrNN
from strnn_fast.causal import CausalFlow
from strnn_fast.cli import build_parser, main
from strnn_fast.data.dataset import standardize
from strnn_fast.flows import StrAF
from strnn_fast.standardize import Standardized
from strnn_fast.train import fit



@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    x[:, 1] += x[:, 0]
    x[:, 2] -= x[:, 1]
    data = tmp_path / "data.csv"
    data.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    graph = tmp_path / "graph.csv"
    graph.write_text("parent,child\na,b\nb,c\n")
    return data, graph


FIT = ["--epochs", "2", "--hidden", "6", "--flow-steps", "1", "--quiet"]


# 2 ---------------------------------------------------------------------------------------------

def test_sample_a_causal_model_written_by_fit(tmp_path, table, capsys) -> None:
    data, graph = table
    model = tmp_path / "causal.pt"
    assert main(["fit", str(data), "-a", str(graph), "--model", "causal", *FIT, "-o", str(model)]) == 0
    out = tmp_path / "s.csv"
    assert main(["sample", str(model), "-n", "7", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == '"a","b","c"' and len(lines) == 8
    assert np.isfinite(np.loadtxt(out, delimiter=",", skiprows=1)).all()


# 3 ---------------------------------------------------------------------------------------------

def test_fit_matches_dataframe_columns_by_name() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    torch.manual_seed(0)
    a = StrAF(A3, hidden_sizes=(6,), flow_steps=1, names=["u", "v", "w"])
    b = StrAF(A3, hidden_sizes=(6,), flow_steps=1, names=["u", "v", "w"])
    b.load_state_dict(a.state_dict())
    fit(a, x, epochs=2, verbose=False)
    shuffled = pd.DataFrame({"w": x[:, 2], "u": x[:, 0], "v": x[:, 1]})
    fit(b, shuffled, epochs=2, verbose=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="missing \\['w'\\]"):
        fit(b, pd.DataFrame({"u": x[:, 0], "v": x[:, 1], "z": x[:, 2]}), epochs=1, verbose=False)


# 4 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_val", [False, True])
def test_failed_fit_restores_finite_weights(with_val) -> None:
    torch.manual_seed(0)
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(80, 3)) * 1e30
    with pytest.raises(FloatingPointError, match="restored"):
        fit(model, x[:60], x[60:] if with_val else None, epochs=3, verbose=False)
    for k, v in model.state_dict().items():
        assert torch.isfinite(v).all()
        assert torch.equal(v, before[k])  # it failed in the first epoch: the initial weights


def test_failure_after_good_epochs_keeps_the_best() -> None:
    class Blowup(torch.nn.Module):
        """A Gaussian whose loss becomes NaN from the 4th epoch on."""

        def __init__(self):
            super().__init__()
            self.mu = torch.nn.Parameter(torch.zeros(2))
            self.calls = 0

        def log_prob(self, x):
            if self.training:
                self.calls += 1
            lp = torch.distributions.Normal(self.mu, 1.0).log_prob(x).sum(-1)
            return lp * (math_nan() if self.calls > 3 else 1.0)

    def math_nan():
        return float("nan")

    model = Blowup()
    x = torch.randn(40, 2) + 2
    with pytest.raises(FloatingPointError):
        fit(model, x, x, epochs=10, batch_size=40, lr=0.1, verbose=False)
    assert torch.isfinite(model.mu).all() and (model.mu > 0).all()


# 5 ---------------------------------------------------------------------------------------------

def test_values_beyond_float32(tmp_path, table, capsys) -> None:
    data, graph = table
    text = data.read_text().splitlines()
    text[3] = "1e40," + text[3].split(",", 1)[1]
    big = tmp_path / "big.csv"
    big.write_text("\n".join(text) + "\n")
    model = tmp_path / "m.pt"
    assert main(["fit", str(big), "-a", str(graph), *FIT, "-o", str(model)]) == 2
    err = capsys.readouterr().err
    assert "big.csv" in err and "'a'" in err and "float32" in err and "Traceback" not in err
    assert not model.exists()
    assert main(["fit", str(data), "-a", str(graph), *FIT, "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["logprob", str(model), str(big)]) == 2
    assert "float32" in capsys.readouterr().err


def test_damaged_model_never_writes_nan(tmp_path, table, capsys) -> None:
    data, graph = table
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1, names=["a", "b", "c"])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "nan.pt"
    model.save(path)
    out = tmp_path / "s.csv"
    assert main(["sample", str(path), "-n", "5", "-o", str(out)]) == 2
    assert not out.exists() and "non-finite" in capsys.readouterr().err
    assert main(["logprob", str(path), str(data), "-o", str(out)]) == 2
    assert not out.exists() and "NaN" in capsys.readouterr().err


# 6 ---------------------------------------------------------------------------------------------

def test_factorize_refuses_an_existing_folder(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = digest(out)
    assert main(["factorize", "--methods", "greedy", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and digest(out) == before
    assert main(["factorize", "--methods", "greedy", "-o", str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and (out / "masks_greedy.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_sample_never_touches_a_file_named_like_its_temporary(tmp_path, capsys) -> None:
    model = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    precious = tmp_path / "out.csv.tmp"
    model.save(precious)
    before = precious.read_bytes()
    assert main(["sample", str(precious), "-n", "4", "-o", str(tmp_path / "out.csv")]) == 0
    assert precious.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.tmp"]


# 7 ---------------------------------------------------------------------------------------------

def test_factorize_empty_csv_and_block_zero(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["factorize", str(empty), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "empty.csv" in err and "empty" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["factorize", "--block", "0", "-o", str(tmp_path / "o")])
    assert exc.value.code == 2 and "--block" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_faststrnn_forward_checks() -> None:
    net = FastStrNN(3, (8,), 3, adjacency=A3)
    with pytest.raises(ValueError, match="x must have shape \\(..., 3\\)"):
        net(torch.randn(2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net(np.zeros((2, 3)))
    x = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(net(x), net(x.float()))  # cast to the model's dtype


def test_standardized_log_prob_checks() -> None:
    model = Standardized(StrAF(A3, hidden_sizes=(6,), flow_steps=1), mean=[0.0, 1.0, 2.0], std=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model.log_prob(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x must have shape"):
        model.log_prob(torch.zeros(2, 5))
    assert model.log_prob(torch.zeros(2, 3, dtype=torch.float64)).shape == (2,)


# 8 ---------------------------------------------------------------------------------------------

def test_constant_columns_are_refused_everywhere(tmp_path, table, capsys) -> None:
    data, graph = table
    rows = data.read_text().splitlines()
    const = tmp_path / "const.csv"
    const.write_text("\n".join([rows[0]] + [r.rsplit(",", 1)[0] + ",7.0" for r in rows[1:]]) + "\n")
    for model in ("straf", "causal"):
        out = tmp_path / f"{model}.pt"
        assert main(["fit", str(const), "-a", str(graph), "--model", model, *FIT, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "'c'" in err and "constant" in err and "drop" in err and not out.exists()
    x = np.loadtxt(const, delimiter=",", skiprows=1)
    with pytest.raises(ValueError, match="'c' is constant"):
        CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(4,), flow_steps=1).fit(x, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="column 2 is constant"):
        standardize(x)
    with pytest.raises(ValueError, match="constant"):
        Standardized(StrAF(A3, hidden_sizes=(6,), flow_steps=1), mean=[0.0, 0.0, 7.0], std=[1.0, 1.0, 0.0])


# 9 ---------------------------------------------------------------------------------------------

def test_factorize_reads_files_as_fit_does(tmp_path, capsys) -> None:
    files = {"edges.txt": "a b\nb c\na c\n", "edges.csv": "parent,child\na,b\nb,c\na,c\n",
             "headed.csv": "a,b,c\n0,0,0\n1,0,0\n1,1,0\n", "plain.txt": "0 0 0\n1 0 0\n1 1 0\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"o_{name}"
        assert main(["factorize", str(tmp_path / name), "--methods", "greedy", "-o", str(out)]) == 0, name
        saved = np.load(out / "masks_greedy.npz")
        assert np.array_equal(saved["adjacency"], A3), name
    rect = tmp_path / "rect.csv"
    rect.write_text("1,0,1\n0,1,1\n")  # (n_out=2) x (n_in=3): factorize only
    assert main(["factorize", str(rect), "--methods", "greedy", "--hidden", "4", "-o", str(tmp_path / "r")]) == 0


def test_sample_shape_types() -> None:
    flow = StrAF(A3, hidden_sizes=(6,), flow_steps=1)
    with pytest.raises(TypeError, match="sample_shape"):
        flow.sample("12")
    assert flow.sample(np.int64(3)).shape == (3, 3)
    assert flow.sample((2, np.int32(2))).shape == (2, 2, 3)
    with pytest.raises(TypeError, match="sample_shape"):
        flow.sample(2.0)


def test_text_files_report_file_line_numbers(tmp_path) -> None:
    from strnn_fast.data import load_table

    p = tmp_path / "t.csv"
    p.write_text("a,b\n# a comment\n\n1,2\nx,3\n")
    with pytest.raises(ValueError, match="line 5"):
        load_table(p)
    p.write_text("a,b\n# c\n1,2\n1,inf\n")
    with pytest.raises(ValueError, match="line 4"):
        load_table(p)


def test_help_has_no_rest_markup(capsys) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, name
