"""Trust, round two (issue 24): special files, precision, named columns, signals, failures, memory.

Each test is one case of the issue, through the CLI (exit 2 and one line, no traceback) or the
API (a ValueError/TypeError naming the argument), plus what must hold afterwards (files, model).
"""
from __future__ import annotations

import csv
import io
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from strnn_fast.causal import CausalFlow
from strnn_fast.cli import main
from strnn_fast.cli._common import stream_csv
from strnn_fast.data import load_adjacency, load_table
from strnn_fast.density import StrNNDensityEstimator
from strnn_fast.flows import StrAF
from strnn_fast.standardize import Standardized
from strnn_fast.train import fit

A2 = [[0, 0], [1, 0]]
FIT = ["--epochs", "2", "--hidden", "4", "--flow-steps", "1", "-q"]


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("round2")
    torch.manual_seed(0)
    flow = StrAF(A2, hidden_sizes=(4,), flow_steps=1, names=["a", "b"])
    path = folder / "m.pt"
    Standardized(flow, mean=[1.0, 2.0], std=[1.0, 3.0]).save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- special files, --force


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_sample_into_dev_null_keeps_the_device(model_file, capsys, force):
    before = os.stat("/dev/null")
    code, _ = _cli(["sample", model_file, "-n", "5", "-o", "/dev/null", *force], capsys)
    assert code == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_sample_into_dev_full_is_one_line_and_keeps_the_device(model_file, capsys):
    code, err = _cli(["sample", model_file, "-n", "5", "-o", "/dev/full", "--force"], capsys)
    assert code == 2 and "No space left" in err and len(err.strip().splitlines()) == 1
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_sample_into_a_fifo_writes_in_place(model_file, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    code, _ = _cli(["sample", model_file, "-n", "4", "-o", fifo, "--force"], capsys)
    reader.join(10)
    assert code == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got[0].splitlines()[0] == '"a","b"' and len(got[0].splitlines()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_output_with_trailing_separator_is_refused(model_file, tmp_path, capsys):
    code, err = _cli(["sample", model_file, "-n", "3", "-o", f"{tmp_path}/newdir/"], capsys)
    assert code == 2 and "separator" in err and not (tmp_path / "newdir").exists()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_data_path_that_is_a_folder_or_fifo_says_so(model_file, tmp_path, capsys, kind):
    path = tmp_path / "data.csv"
    path.mkdir() if kind == "folder" else os.mkfifo(path)
    code, err = _cli(["logprob", model_file, path], capsys)
    assert code == 2 and "not found" not in err
    assert ("is a folder" if kind == "folder" else "not a regular file") in err


def test_read_only_output_folder_is_refused_before_training(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    data = _write(tmp_path / "d.csv", "a,b\n" + "\n".join(f"{i},{i * i % 7}" for i in range(30)) + "\n")
    graph = _write(tmp_path / "g.csv", "parent,child\na,b\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = _cli(["fit", data, "-a", graph, "-o", locked / "m.pt", *FIT], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot write" in err


# ---------------------------------------------------------------- CSV output


def test_csv_output_is_repr_exact_with_quoted_headers(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=(50, 3)) * 10.0 ** rng.integers(-30, 30, size=(50, 3)),
                             [[1e6 + 0.01, 1 / 3, 1700000000.123456]]])
    out = tmp_path / "t.csv"
    stream_csv(out, [values[:20], values[20:]], ["a,b", "1", 'q"uote'])
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["a,b", "1", 'q"uote']
    back = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.array_equal(back, values)  # every float reads back bit for bit


def test_csv_rows_are_exactly_pythons_repr():
    # Random bit patterns cover subnormals, huge and tiny exponents; the edges of repr's layout
    # (positional for exponents -4..15, else d.ddde+XX) are listed.
    from strnn_fast._C import format_csv_rows

    rng = np.random.default_rng(0)
    bits = rng.integers(-2**63, 2**63 - 1, size=60_000, dtype=np.int64).view(np.float64)
    edges = [0.0, -0.0, 1.0, 1e-4, 9.999e-5, 1e-5, 1e15, 1e16, 9999999999999998.0, 123456789012345678.0,
             5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e22, 1e-300, 0.1, 1 / 3, 1e6 + 0.01]
    finite = bits[np.isfinite(bits)]
    values = np.concatenate([finite[:len(finite) // 3 * 3 - 18], edges, rng.normal(size=3000)]).reshape(-1, 3)
    text = format_csv_rows(values).decode()
    assert text == "".join(",".join(map(repr, r)) + "\n" for r in values.tolist())
    assert np.array_equal(np.array([[float(v) for v in line.split(",")] for line in text.splitlines()]), values)
    with pytest.raises(ValueError, match="finite"):
        format_csv_rows(np.array([[1.0, np.nan]]))


def test_numeric_quoted_header_reads_back_as_names(tmp_path):
    out = tmp_path / "t.csv"
    stream_csv(out, [np.array([[1.5, 2.5]])], ["0", "1"])
    x, names = load_table(out)
    assert names == ["0", "1"] and x.tolist() == [[1.5, 2.5]]


def test_counterfactual_keeps_every_digit(tmp_path, capsys):
    torch.manual_seed(0)
    x = np.random.default_rng(1).normal(size=(60, 2)) + [123456.789012345, 0.0]
    model = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1)
    model.fit(pd.DataFrame(x, columns=["a", "b"]), epochs=1, verbose=False)
    model.save(tmp_path / "c.pt")
    obs = tmp_path / "obs.csv"
    pd.DataFrame(x[:5], columns=["a", "b"]).to_csv(obs, index=False, float_format="%.17g")
    code, _ = _cli(["counterfactual", tmp_path / "c.pt", obs, "--do", "b=1", "-o", tmp_path / "cf.csv"], capsys)
    assert code == 0
    cf = pd.read_csv(tmp_path / "cf.csv", float_precision="round_trip")
    assert np.array_equal(cf["a"].to_numpy(), x[:5, 0])  # a is not a descendant of b: kept exactly


# ---------------------------------------------------------------- precision


def test_large_offset_keeps_its_spread_through_standardized():
    rng = np.random.default_rng(0)
    x = 1e6 + 0.01 * rng.normal(size=(400, 2))
    base = StrAF(A2, hidden_sizes=(4,), flow_steps=1)
    model = Standardized(base, mean=x.mean(0), std=x.std(0))
    samples = model.sample(500)
    assert samples.dtype == torch.float64 and len(torch.unique(samples[:, 0])) > 450
    # log-density against a float64 reference of the same change of variables
    xt = torch.from_numpy(x[:50])
    z = ((xt - torch.from_numpy(x.mean(0))) / torch.from_numpy(x.std(0))).float()
    expected = base.log_prob(z).double() - np.log(x.std(0)).sum()
    assert torch.allclose(model.log_prob(xt).double(), expected, atol=1e-4, rtol=0)


def test_unix_timestamps_are_not_sampled_on_a_grid(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = 1.7e9 + rng.normal(size=200) * 30.0
    data = _write(tmp_path / "t.csv", "t,v\n" + "\n".join(f"{a!r},{b!r}" for a, b in zip(t.tolist(), rng.normal(size=200).tolist())))
    graph = _write(tmp_path / "g.csv", "parent,child\nt,v\n")
    assert _cli(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", *FIT], capsys)[0] == 0
    assert _cli(["sample", tmp_path / "m.pt", "-n", "300", "-o", tmp_path / "s.csv"], capsys)[0] == 0
    s = pd.read_csv(tmp_path / "s.csv", float_precision="round_trip")["t"].to_numpy()
    assert len(np.unique(s)) > 290 and np.abs(np.diff(np.sort(s))).min() < 1.0  # not a 128 s grid


@pytest.mark.parametrize("values", [1e-46 * np.arange(1, 41), 5.0 + 1e-15 * np.arange(40)])
def test_spread_no_model_can_represent_is_refused_naming_the_column(tmp_path, capsys, values):
    rows = "\n".join(f"{v!r},{i % 5}" for i, v in enumerate(values.tolist()))
    data = _write(tmp_path / "d.csv", "tiny,ok\n" + rows + "\n")
    graph = _write(tmp_path / "g.csv", "parent,child\nok,tiny\n")
    code, err = _cli(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", *FIT], capsys)
    assert code == 2 and "'tiny'" in err and not (tmp_path / "m.pt").exists()


def test_do_value_beyond_the_model_dtype_is_refused():
    model = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1)
    model.fit(np.random.default_rng(0).normal(size=(40, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="do"):
        model.counterfactual(np.zeros((2, 2)), {"a": 1e39})


# ---------------------------------------------------------------- named columns, binary data


def test_unnamed_model_takes_its_x_names_and_refuses_other_headers(tmp_path, capsys):
    torch.manual_seed(0)
    model = CausalFlow(A2, hidden_sizes=(4,), flow_steps=1)
    model.fit(np.random.default_rng(0).normal(size=(40, 2)), epochs=1, verbose=False)
    model.save(tmp_path / "c.pt")
    code, _ = _cli(["intervene", tmp_path / "c.pt", "--do", "x0=1", "-n", "20"], capsys)
    assert code == 0
    rows = [[0.5, -1.0], [1.0, 2.0]]
    straight = _write(tmp_path / "s.csv", "x0,x1\n" + "\n".join(",".join(map(repr, r)) for r in rows))
    swapped = _write(tmp_path / "w.csv", "x1,x0\n" + "\n".join(",".join(map(repr, r[::-1])) for r in rows))
    renamed = _write(tmp_path / "r.csv", "p,q\n" + "\n".join(",".join(map(repr, r)) for r in rows))
    assert _cli(["logprob", tmp_path / "c.pt", straight, "-o", tmp_path / "a.csv"], capsys)[0] == 0
    assert _cli(["logprob", tmp_path / "c.pt", swapped, "-o", tmp_path / "b.csv"], capsys)[0] == 0
    a, b = (pd.read_csv(tmp_path / n)["log_prob"].to_numpy() for n in ("a.csv", "b.csv"))
    assert np.array_equal(a, b)  # matched by name, not by position
    code, err = _cli(["logprob", tmp_path / "c.pt", renamed], capsys)
    assert code == 2 and "x0" in err


def test_binary_model_refuses_non_binary_data():
    model = StrNNDensityEstimator(np.tril(np.ones((3, 3)), -1), hidden_sizes=(4,), data_type="binary")
    with pytest.raises(ValueError, match="0 and 1"):
        model.log_prob(torch.tensor([[0.0, 1.0, 0.5]]))


@pytest.mark.parametrize("header", ["source,target", "from,to", "Source,Target"])
def test_edge_list_headers_are_accepted(tmp_path, header):
    A, names = load_adjacency(_write(tmp_path / "g.csv", f"{header}\na,b\nb,c\n"))
    assert names == ["a", "b", "c"] and A.astype(int).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("bad", [torch.tensor([[0.0, float("nan")]]), torch.tensor([[float("inf"), 0.0]]),
                                 torch.zeros(1, 2, dtype=torch.complex64)])
def test_log_prob_refuses_nan_inf_and_complex(model_file, bad):
    from strnn_fast.serialization import load

    with pytest.raises((ValueError, TypeError), match="x"):
        load(model_file).log_prob(bad)


# ---------------------------------------------------------------- failed calls leave the model as it was


def test_refused_causal_fit_keeps_names_and_statistics():
    model = CausalFlow(A2, hidden_sizes=(4,), flow_steps=1)
    frame = pd.DataFrame({"p": np.arange(10.0), "q": np.full(10, 3.0)})  # q is constant: refused
    with pytest.raises(ValueError, match="'q'"):
        model.fit(frame, epochs=1, verbose=False)
    assert model.names is None and torch.equal(model.scale, torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("where", ["meta", "cuda"])
def test_fit_on_an_unusable_device_leaves_the_model_in_place(where):
    if where == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    model = StrAF(A2, hidden_sizes=(4,), flow_steps=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="device"):
        fit(model, torch.randn(20, 2), epochs=1, device=where, verbose=False)
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("seed", [2**70, -1])
def test_seed_out_of_range_names_seed(seed):
    model = CausalFlow(A2, hidden_sizes=(4,), flow_steps=1)
    model.fit(np.random.default_rng(0).normal(size=(30, 2)), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="seed"):
        model.sample(3, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        fit(StrAF(A2, hidden_sizes=(4,), flow_steps=1), torch.randn(10, 2), epochs=1, seed=seed, verbose=False)


# ---------------------------------------------------------------- interrupts, signals, pipes


class _InterruptAt(torch.nn.Module):
    """A Gaussian whose log_prob raises KeyboardInterrupt once ``calls`` training batches ran."""

    def __init__(self, calls: int):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(1))
        self.calls, self.seen = calls, 0

    def log_prob(self, x):
        if self.training:
            self.seen += 1
            if self.seen > self.calls:
                raise KeyboardInterrupt
        return torch.distributions.Normal(self.mu, 1.0).log_prob(x).sum(-1)


def test_ctrl_c_during_fit_keeps_the_best_weights_so_far():
    x = torch.full((32, 1), 2.0)
    model = _InterruptAt(calls=3)  # 3 epochs of one batch each, then Ctrl-C in the fourth
    h = fit(model, x, x, epochs=50, batch_size=64, lr=0.1, verbose=False)
    assert h.interrupted and h.epochs == 3 and h.best_epoch == 2
    assert 0 < float(model.mu) < 2.0


def test_ctrl_c_before_the_first_epoch_propagates_with_the_weights_unchanged():
    model = _InterruptAt(calls=0)
    with pytest.raises(KeyboardInterrupt):
        fit(model, torch.ones(8, 1), epochs=5, lr=0.1, verbose=False)
    assert float(model.mu) == 0.0


def test_broken_pipe_on_stdout_exits_zero(model_file, tmp_path, monkeypatch, capsys):
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["sample", str(model_file), "-n", "2", "-o", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").exists()


def _cli_process(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-P", "-m", "strnn_fast.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_sample_removes_the_temporary_file(model_file, tmp_path, sig):
    proc = _cli_process(["sample", model_file, "-n", "100000000", "-o", tmp_path / "big.csv"], tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "no output" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigint_during_cli_fit_saves_the_best_weights(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2))
    data = _write(tmp_path / "d.csv", "a,b\n" + "\n".join(f"{a!r},{b!r}" for a, b in x.tolist()) + "\n")
    graph = _write(tmp_path / "g.csv", "parent,child\na,b\n")
    proc = _cli_process(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", "--epochs", "100000", "--patience",
                         "100000", "--hidden", "8", "--flow-steps", "1", "-q"], tmp_path)
    time.sleep(12)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    if proc.returncode == 0:
        assert "interrupted after" in err and (tmp_path / "m.pt").exists()
    else:  # interrupted before one epoch ended: says so, writes nothing
        assert proc.returncode == 130 and "no output was written" in err and not (tmp_path / "m.pt").exists()


@pytest.mark.slow
def test_sigint_during_exact_factorization_stops_within_a_second(tmp_path):
    rng = np.random.default_rng(0)
    A = np.tril(rng.random((12, 12)) < 0.5, -1).astype(np.uint8)  # HiGHS runs to the CLI's 20 s limit
    np.save(tmp_path / "A.npy", A)
    proc = subprocess.Popen([sys.executable, "-P", "-u", "-m", "strnn_fast.cli", "factorize", tmp_path / "A.npy",
                             "--hidden", "24,24", "--methods", "exact", "-o", tmp_path / "out"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not proc.stdout.readline().startswith("method"):  # the table header: the solve starts next
        assert proc.poll() is None
    time.sleep(1.0)
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.perf_counter() - start < 5  # was the whole 20 s; what remains is the interpreter's exit
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines() == ["strnn-fast factorize: interrupted; no output was written"]
    assert not (tmp_path / "out").exists()


def test_python_fit_on_raw_units_warns_and_points_to_standardized():
    x = torch.randn(64, 2) * torch.tensor([1.0, 50.0]) + torch.tensor([1e4, 0.0])
    with pytest.warns(UserWarning, match="Standardized"):
        fit(StrAF(A2, hidden_sizes=(4,), flow_steps=1), x, epochs=1, verbose=False)


# ---------------------------------------------------------------- memory: estimated before allocating


def test_edge_list_beyond_the_memory_limit_is_refused_before_the_dense_matrix(tmp_path, capsys, monkeypatch):
    graph = _write(tmp_path / "g.csv", "parent,child\n0,1\n1,29999\n")  # 30,000 variables: 9e8 bytes dense
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e8")
    with pytest.raises(ValueError, match=r"g\.csv.*30000 x 30000.*STRNN_FAST_MEMORY_LIMIT"):
        load_adjacency(graph)
    code, err = _cli(["factorize", graph, "-o", tmp_path / "out"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "g.csv" in err
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e10")  # within the limit: the same file reads
    A, _ = load_adjacency(_write(tmp_path / "small.csv", "parent,child\n0,1\n1,2999\n"))
    assert A.shape == (3000, 3000) and A[1, 0] and A[2999, 1] and A.sum() == 2


def test_csv_beyond_the_memory_limit_is_refused_from_its_size(tmp_path, capsys, monkeypatch):
    rows = np.random.default_rng(0).normal(size=(2000, 3))
    data = _write(tmp_path / "d.csv", "a,b,c\n" + "".join(",".join(map(repr, r)) + "\n" for r in rows.tolist()))
    graph = _write(tmp_path / "g.csv", "parent,child\na,b\nb,c\n")
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "5e4")  # the table is 48 kB of float64
    with pytest.raises(ValueError, match=r"table .*d\.csv.*STRNN_FAST_MEMORY_LIMIT"):
        load_table(data)
    code, err = _cli(["fit", data, "-a", graph, "-o", tmp_path / "m.pt", *FIT], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "d.csv" in err
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e6")
    x, names = load_table(data)
    assert names == ["a", "b", "c"] and np.array_equal(x, rows)


def test_csv_with_comments_blank_lines_and_quotes_reads_as_before(tmp_path):
    # numpy's fast reader refuses these; the line-by-line reader takes them, as it always did.
    text = '# made by hand\n"a","b"\n1.5,"2"\n   \n# note\n3,4e-3\n'
    x, names = load_table(_write(tmp_path / "t.csv", text))
    assert names == ["a", "b"] and x.tolist() == [[1.5, 2.0], [3.0, 0.004]]
    with pytest.raises(ValueError, match=r"line 4 has 1 fields, expected 2"):
        load_table(_write(tmp_path / "r.csv", "a,b\n1,2\n3,4\n5\n"))


def _with_header(src: Path, dst: Path, edit) -> Path:
    """Copies the model file ``src`` to ``dst`` with ``edit(header)`` applied to its JSON header."""
    import json

    payload = torch.load(src, weights_only=True)
    header = json.loads(payload["header"])
    edit(header)
    payload["header"] = json.dumps(header)
    torch.save(payload, dst)
    return dst


def test_model_header_asking_for_200000_flow_steps_is_refused_before_building(model_file, tmp_path, capsys,
                                                                              monkeypatch):
    def steps(n):
        return lambda h: h["config"]["base"]["config"].update(flow_steps=n)

    crafted = _with_header(model_file, tmp_path / "steps.pt", steps(200_000))
    start = time.perf_counter()
    from strnn_fast.serialization import load

    with pytest.raises(ValueError, match=r"steps\.pt.*200000 flow steps"):
        load(crafted)
    code, err = _cli(["sample", crafted, "-n", "2", "-o", tmp_path / "s.csv"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "200000 flow steps" in err
    assert time.perf_counter() - start < 5  # it built 200,000 steps for minutes before
    # Within what the weights allow, the memory budget still applies (STEP_BYTES a step).
    monkeypatch.setenv("STRNN_FAST_MEMORY_LIMIT", "1e4")
    with pytest.raises(ValueError, match=r"m\.pt.*STRNN_FAST_MEMORY_LIMIT"):
        load(model_file)
    monkeypatch.delenv("STRNN_FAST_MEMORY_LIMIT")
    assert load(model_file).base.config["flow_steps"] == 1  # the real file loads
