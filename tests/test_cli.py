"""The fit / sample / logprob / demo commands, run in-process on small files in tmp_path."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import tolerance

from strnn_fast import load
from strnn_fast.cli import main
from strnn_fast.data import make_multimodal
from strnn_fast.data.dataset import split
from strnn_fast.standardize import Standardized
from _trust_world import check_cli_refuses
from strnn_fast.cli import build_parser

NAMES = ["a", "b", "c", "d"]
EDGES = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
SMALL = ["--epochs", "2", "--hidden", "8,8", "--flow-steps", "1", "--quiet"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A 4-variable data set in data units (not standardized) with its edge list."""
    A = np.zeros((4, 4), dtype=bool)
    for parent, child in EDGES:
        A[NAMES.index(child), NAMES.index(parent)] = True
    ds = make_multimodal(n=150, adjacency=A, seed=0)
    x = np.concatenate([ds.train, ds.val, ds.test]) * [1.0, 10.0, 0.1, 3.0] + [5.0, -2.0, 0.0, 100.0]
    data = tmp_path / "data.csv"
    np.savetxt(data, x, delimiter=",", header=",".join(NAMES), comments="")
    graph = tmp_path / "graph.csv"
    graph.write_text("parent,child\n" + "".join(f"{p},{c}\n" for p, c in EDGES))
    return {"data": data, "graph": graph, "x": x}


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_nll(out: str, label: str) -> float:
    return float(re.search(rf"^{label}\s+NLL\s+(\S+)", out, re.M).group(1))


@pytest.mark.parametrize("model", ["straf", "arf", "gnf", "density"])
def test_fit_sample_logprob(tmp_path, files, capsys, model):
    path = tmp_path / f"{model}.pt"
    code, out, err = run(capsys, "fit", files["data"], "--adjacency", files["graph"], "--model", model, *SMALL,
                         "-o", path)
    assert code == 0, err
    assert all(np.isfinite(printed_nll(out, label)) for label in ("train", "val", "test"))
    fitted = load(path)
    assert isinstance(fitted, Standardized) and fitted.names == NAMES

    samples = tmp_path / "samples.csv"
    code, out, err = run(capsys, "sample", path, "-n", "37", "-o", samples)
    assert code == 0, err
    assert samples.read_text().splitlines()[0] == ",".join(f'"{n}"' for n in NAMES)  # quoted header
    drawn = np.loadtxt(samples, delimiter=",", skiprows=1)
    assert drawn.shape == (37, 4) and np.isfinite(drawn).all()

    code, out, err = run(capsys, "logprob", path, files["data"], "-o", tmp_path / "ll.csv")
    assert code == 0, err
    per_row = np.loadtxt(tmp_path / "ll.csv", delimiter=",", skiprows=1)
    assert per_row.shape == (len(files["x"]),)
    mean = float(re.search(r"mean log-likelihood (\S+)", out).group(1))
    assert mean == pytest.approx(per_row.mean(), rel=1e-5)


def test_printed_nll_is_in_data_units_and_matches_logprob(tmp_path, files, capsys):
    path = tmp_path / "m.pt"
    code, out, _ = run(capsys, "fit", files["data"], "-a", files["graph"], *SMALL, "--seed", "3", "-o", path)
    assert code == 0
    # The same shuffle and split as the command: its test rows, scored by `logprob`.
    test = split(files["x"][np.random.default_rng(3).permutation(len(files["x"]))], (0.6, 0.2, 0.2))[2]
    np.savetxt(tmp_path / "test.csv", test, delimiter=",", header=",".join(NAMES), comments="")
    _, out2, _ = run(capsys, "logprob", path, tmp_path / "test.csv")
    mean = float(re.search(r"mean log-likelihood (\S+)", out2).group(1))
    assert -mean == pytest.approx(printed_nll(out, "test"), abs=1e-3)


def test_same_seed_same_model(tmp_path, files, capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for name in ("one.pt", "two.pt"):
            assert run(capsys, "fit", files["data"], "-a", files["graph"], *SMALL, "-o", tmp_path / name)[0] == 0
        assert torch.get_num_threads() == 2  # --threads 1 held only while the command ran
    finally:
        torch.set_num_threads(before)
    one, two = load(tmp_path / "one.pt").state_dict(), load(tmp_path / "two.pt").state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_logprob_matches_columns_by_name(tmp_path, files, capsys):
    path = tmp_path / "m.pt"
    run(capsys, "fit", files["data"], "-a", files["graph"], *SMALL, "-o", path)
    shuffled = tmp_path / "shuffled.csv"
    np.savetxt(shuffled, files["x"][:, [3, 1, 0, 2]], delimiter=",", header="d,b,a,c", comments="")
    means = [float(re.search(r"mean log-likelihood (\S+)", run(capsys, "logprob", path, f)[1]).group(1))
             for f in (files["data"], shuffled)]
    assert means[0] == pytest.approx(means[1], rel=1e-6)


def test_binary_density_is_not_standardized(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.3
    b = np.where(a, rng.random(200) < 0.9, rng.random(200) < 0.1)
    np.savetxt(tmp_path / "bin.csv", np.stack([a, b], 1).astype(int), delimiter=",", header="a,b",
               comments="", fmt="%d")
    (tmp_path / "g.csv").write_text("parent,child\na,b\n")
    code, _, err = run(capsys, "fit", tmp_path / "bin.csv", "-a", tmp_path / "g.csv", "--model", "density",
                       "--epochs", "3", "--hidden", "8", "--quiet", "-o", tmp_path / "m.pt")
    assert code == 0, err
    assert not isinstance(load(tmp_path / "m.pt"), Standardized)
    assert run(capsys, "sample", tmp_path / "m.pt", "-n", "50", "-o", tmp_path / "s.csv")[0] == 0
    assert set(np.unique(np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1))) <= {0.0, 1.0}


def test_demo(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    argv = ["demo", "--epochs", "1", "--n", "200", "--hidden", "32", "--flow-steps", "1", "--quiet",
            "--out", out_dir]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    rows = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(StrAF|ARF)\s+(\S+)\s+\S+\s+1$", out, re.M)}
    assert set(rows) == {"StrAF", "ARF"} and all(np.isfinite(v) for v in rows.values())
    assert (out_dir / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load(out_dir / "straf.pt").log_prob(torch.zeros(3, 15)).shape == (3,)
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--force" in err
    assert run(capsys, *argv, "--force")[0] == 0


def test_standardized_is_an_exact_change_of_variables(tmp_path):
    from strnn_fast.flows import StrAF

    torch.manual_seed(0)
    base = StrAF([("a", "b")], hidden_sizes=(8,), flow_steps=2)
    mean, std = np.array([3.0, -1.0]), np.array([0.5, 4.0])
    model = Standardized(base, mean, std)
    x = torch.randn(6, 2)
    # Standardized in float64, then cast (the statistics are float64 whatever the model's dtype).
    expected = base.log_prob(((x.double() - torch.tensor(mean)) / torch.tensor(std)).float())
    torch.testing.assert_close(model.log_prob(x), expected - float(np.log(std).sum()))
    torch.manual_seed(1)
    z = base.sample(5)
    torch.manual_seed(1)
    torch.testing.assert_close(model.sample(5), z.double() * torch.tensor(std) + torch.tensor(mean))
    model.save(tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    assert again.names == ["a", "b"]
    torch.testing.assert_close(again.log_prob(x), model.log_prob(x), **tolerance("exact"))
    with pytest.raises(ValueError, match="std"):
        Standardized(base, mean, [1.0, 0.0])
    with pytest.raises(ValueError, match="one value per variable"):
        Standardized(base, [0.0], [1.0])


# ---------------------------------------------------------------- bad input: exit 2, one line


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def link(path: Path) -> Path:
    other = path.with_name("hardlink.csv")
    other.hardlink_to(path)
    return other


BAD_FIT = {
    "missing data": (lambda t, f: [t / "nope.csv", "-a", f["graph"]], "does not exist|not found|no such"),
    "missing adjacency": (lambda t, f: [f["data"], "-a", t / "nope.csv"], "does not exist|not found|no such"),
    "NaN": (lambda t, f: [write(t / "nan.csv", "a,b,c,d\n1,2,3,4\n1,nan,3,4\n"), "-a", f["graph"]], "NaN|nan"),
    "non-numeric": (lambda t, f: [write(t / "s.csv", "a,b,c,d\n1,2,3,4\n1,x,3,4\n"), "-a", f["graph"]],
                    "numeric|number"),
    "ragged": (lambda t, f: [write(t / "r.csv", "a,b,c,d\n1,2,3,4\n1,2,3\n"), "-a", f["graph"]],
               "column|field|ragged|row"),
    "adjacency too small": (lambda t, f: [f["data"], "-a", write(t / "g.csv", "0,0,0\n1,0,0\n0,1,0\n")],
                            "columns|variables|entries"),
    "other names": (lambda t, f: [f["data"], "-a", write(t / "g.csv", "parent,child\na,z\n")], "z"),
    "column in no edge": (lambda t, f: [f["data"], "-a", write(t / "g.csv", "parent,child\na,b\nb,c\n")],
                          r"\['d'\] appear in no edge.*--keep-isolated"),
    "cyclic graph": (lambda t, f: [f["data"], "-a", write(t / "g.csv", "parent,child\na,b\nb,a\nb,c\nc,d\n")],
                     "cycle"),
    "output is input": (lambda t, f: [f["data"], "-a", f["graph"], "--force", "-o", f["data"]], "input"),
    "output is a link to input": (lambda t, f: [f["data"], "-a", f["graph"], "--force", "-o", link(f["data"])],
                                  "input"),
    "existing output": (lambda t, f: [f["data"], "-a", f["graph"], "-o", write(t / "old.pt", "x")], "--force"),
    "no output folder": (lambda t, f: [f["data"], "-a", f["graph"], "-o", t / "no" / "m.pt"], "folder"),
    "too few rows": (lambda t, f: [write(t / "two.csv", "a,b,c,d\n1,2,3,4\n5,6,7,8\n"), "-a", f["graph"]],
                     "too few|empty"),
}


def test_fit_keep_isolated_models_an_unlisted_column(tmp_path, files, capsys):
    graph = write(tmp_path / "g3.csv", "parent,child\na,b\nb,c\n")
    code, out, err = run(capsys, "fit", files["data"], "-a", graph, "--keep-isolated", "-o", tmp_path / "m.pt", *SMALL)
    assert code == 0, err
    assert load(tmp_path / "m.pt").names == NAMES and err == ""  # --quiet: no bar, no summary line


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_fit_bad_input_exits_2(tmp_path, files, capsys, case):
    build, pattern = BAD_FIT[case]
    argv = [str(a) for a in build(tmp_path, files)]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "m.pt")]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, out, err = run(capsys, "fit", *argv, *SMALL)
    assert code == 2
    assert err.startswith("strnn-fast fit: error:") and err.count("\n") == 1
    assert re.search(pattern, err, re.I), err
    assert {p: p.read_bytes() for p in before} == before  # no input was touched


def test_sample_and_logprob_bad_input(tmp_path, files, capsys):
    model = tmp_path / "m.pt"
    assert run(capsys, "fit", files["data"], "-a", files["graph"], *SMALL, "-o", model)[0] == 0
    saved = model.read_bytes()
    cases = [
        (["sample", tmp_path / "none.pt", "-n", "5", "-o", tmp_path / "s.csv"], "does not exist"),
        (["sample", files["data"], "-n", "5", "-o", tmp_path / "s.csv"], "not .*model file"),
        (["sample", model, "-n", "5", "-o", model], "input"),
        (["sample", model, "-n", "5", "--force", "-o", model], "input"),
        (["logprob", model, tmp_path / "none.csv"], "does not exist|not found"),
        (["logprob", model, write(tmp_path / "three.csv", "a,b,c\n1,2,3\n")], "3 columns"),
        (["logprob", model, write(tmp_path / "other.csv", "a,b,c,z\n1,2,3,4\n")], "lacks .*'d'"),
        (["logprob", model, write(tmp_path / "nan.csv", "a,b,c,d\n1,2,nan,4\n")], "NaN|nan"),
        (["logprob", model, files["data"], "-o", files["data"]], "input"),
    ]
    for argv, pattern in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and re.search(pattern, err), (argv, err)
    assert model.read_bytes() == saved


@pytest.mark.parametrize("argv", [["--hidden", "8,x"], ["--epochs", "0"], ["--split", "0.5,0.5"],
                                  ["--model", "maf"]])
def test_bad_options_are_usage_errors(files, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(files["data"]), "-a", str(files["graph"]), "-o", "m.pt", *argv])
    assert exc.value.code == 2


def test_every_command_runs_under_the_thread_policy(monkeypatch):
    # One policy (strnn_fast.threads): every command takes --threads (default 1) and main runs it inside.
    from strnn_fast.cli import COMMANDS, build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in COMMANDS:
        threads = [a for a in commands[name]._actions if a.dest == "threads"]
        assert threads and threads[0].default == 1, name
    seen = []
    monkeypatch.setattr("strnn_fast.cli.demo.run", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert main(["demo", "--threads", "3"]) == 0
    assert seen == [3] and torch.get_num_threads() == before


# (id, argv with {w} for the bad-input world's folder, text the message must contain)
CLI_BAD_INPUT = [
    ("demo-out-is-file", ["demo", "--out", "{w}/existing.csv", "--epochs", "1"], "existing.csv"),
    ("demo-n-0", ["demo", "--n", "0", "--out", "{w}/demo"], "--n"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT])
def test_demo_and_unknown_commands_refuse_bad_input(bad_world, capsys, argv, expected) -> None:
    check_cli_refuses(bad_world, capsys, argv, expected)


def test_help_has_no_rest_markup(capsys) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, name
