"""Interrupts, signals and pipes: Ctrl-C keeps the best weights, temporary files are removed, a closed
pipe exits 0, exact factorization stops at once."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _cli_world import A2
from _cli_world import write as _write

from strnn_fast.cli import main
from strnn_fast.flows import StrAF
from strnn_fast.train import fit


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
