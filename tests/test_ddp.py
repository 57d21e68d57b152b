"""fit under torchrun: two CPU processes (gloo) end with the same weights as one process would."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from strnn_fast.train import fit

BATCH = 16  # per rank; one process uses 2 * BATCH to see the same batches


class LinearGauss(nn.Module):
    """x_i ~ N(mu_i + sum_{j<i} W_ij x_j, sigma_i): a tiny autoregressive stand-in for a flow."""

    def __init__(self, d: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mu = nn.Parameter(torch.randn(d, generator=g))
        self.w = nn.Parameter(0.1 * torch.randn(d, d, generator=g))
        self.log_sigma = nn.Parameter(torch.zeros(d))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        loc = self.mu + x @ torch.tril(self.w, -1).T
        return Normal(loc, self.log_sigma.exp()).log_prob(x).sum(-1)


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200 + 45, 3, generator=g)
    x = torch.stack([z[:, 0], 2 * z[:, 0] + 0.5 * z[:, 1], z[:, 2] - z[:, 1]], dim=1) + 1.0
    return x[:200], x[200:]  # an odd validation size: the ranks' shares differ by one row


def train(seed: int, batch_size: int) -> tuple[LinearGauss, dict]:
    model = LinearGauss(3, seed)
    x, v = make_data()
    history = fit(model, x, v, epochs=12, batch_size=batch_size, lr=0.05, patience=3, seed=5, verbose=False)
    return model, vars(history)


SCRIPT = """
import os, sys, torch
sys.path.insert(0, {tests!r})
from test_ddp import BATCH, train
rank = int(os.environ["RANK"])
model, history = train(seed=rank, batch_size=BATCH)  # different inits: DDP must broadcast rank 0's
torch.save({{"state": model.state_dict(), "history": history}}, os.path.join(sys.argv[1], f"rank{{rank}}.pt"))
"""


def test_two_cpu_ranks_match_one_process(tmp_path: Path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parent))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for h in (r0["history"], r1["history"]):
        h.pop("seconds")
    assert r0["history"] == r1["history"]
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k

    single, history = train(seed=0, batch_size=2 * BATCH)
    assert history["best_epoch"] == r0["history"]["best_epoch"]
    assert history["val_nll"] == pytest.approx(r0["history"]["val_nll"], rel=1e-5)
    for k, v in single.state_dict().items():
        # two processes average gradients in a different order than one: float32 training drift
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5)
    assert not torch.equal(single.mu.detach(), LinearGauss(3, 0).mu.detach())
