"""strnn_fast.train: the fit loop on tiny stand-in models, so it is tested apart from the flows."""
from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from strnn_fast.train import History, evaluate_nll, fit
from _trust_world import A3, X, check_api_refuses, NoLogProb, small_flow
from strnn_fast.flows import StrAF
import pandas as pd


class Gauss(nn.Module):
    """Diagonal Gaussian with learnable mean and log-scale."""

    def __init__(self, d: int, mu: float = 0.0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.mu = nn.Parameter(torch.full((d,), mu, dtype=dtype))
        self.log_sigma = nn.Parameter(torch.zeros(d, dtype=dtype))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return Normal(self.mu, self.log_sigma.exp()).log_prob(x).sum(-1)


class Pulled(Gauss):
    """A Gaussian whose extra_loss pulls the mean toward a target the data does not support."""

    def __init__(self, target: float):
        super().__init__(1)
        self.target = target

    def extra_loss(self) -> torch.Tensor:
        return 100.0 * ((self.mu - self.target) ** 2).sum()


class Breaks(Gauss):
    """A Gaussian whose training log_prob turns NaN after a number of calls."""

    def __init__(self, after: int):
        super().__init__(1)
        self.after, self.calls = after, 0

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        out = super().log_prob(x)
        return out * math.nan if self.calls > self.after else out


def data(n: int, d: int, loc: float = 0.0, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    return loc + scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_fit_decreases_nll():
    model, x, v = Gauss(3, mu=2.0), data(300, 3, loc=-1.0, scale=0.5), data(100, 3, loc=-1.0, scale=0.5, seed=1)
    before = evaluate_nll(model, v)
    history = fit(model, x, v, epochs=40, batch_size=64, lr=0.05, verbose=False)
    assert history.epochs == 40 and len(history.val_nll) == 40 and len(history.lr) == 40
    assert history.train_nll[-1] < history.train_nll[0]
    assert evaluate_nll(model, v) < before - 1.0
    # how close 40 epochs of training get to the optimum (not a dtype tolerance)
    torch.testing.assert_close(model.mu.detach(), torch.full((3,), -1.0), atol=0.2, rtol=0)


def test_early_stopping_restores_best_weights():
    # The mean walks from 5 toward the training data at 0 and passes the validation data at 2.5:
    # validation NLL falls, then rises, so the best epoch lies in the middle.
    model = Gauss(1, mu=5.0)
    x, v = data(256, 1), data(64, 1, loc=2.5, scale=0.2, seed=1)
    history = fit(model, x, v, epochs=200, batch_size=256, lr=0.1, patience=5, scheduler=None, verbose=False)
    assert history.stopped_early and history.epochs < 200
    assert history.best_epoch == int(np.argmin(history.val_nll)) == history.epochs - 1 - 5
    assert history.val_nll[-1] > history.best_val_nll + 0.1
    assert evaluate_nll(model, v) == pytest.approx(history.best_val_nll, rel=1e-6)


def test_same_seed_same_run_other_seed_other_batches():
    x, v = data(200, 2, loc=1.0), data(50, 2, seed=1)

    def run(seed: int) -> tuple[History, dict]:
        torch.manual_seed(0)
        model = Gauss(2)
        return fit(model, x, v, epochs=5, batch_size=32, lr=0.05, seed=seed, verbose=False), model.state_dict()

    (h1, w1), (h2, w2), (h3, _) = run(7), run(7), run(8)
    assert h1.train_nll == h2.train_nll and h1.val_nll == h2.val_nll
    for k in w1:
        assert torch.equal(w1[k], w2[k])
    assert h1.train_nll != h3.train_nll


def test_callers_rng_is_left_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    fit(Gauss(1), data(32, 1), epochs=2, batch_size=8, verbose=False)
    assert torch.equal(torch.rand(3), expected)


def test_extra_loss_is_added():
    model = Pulled(target=4.0)
    fit(model, data(128, 1), epochs=80, batch_size=128, lr=0.1, scheduler=None, verbose=False)
    assert abs(model.mu.item() - 4.0) < 0.2


def test_without_validation_keeps_final_weights():
    model = Gauss(2)
    history = fit(model, data(64, 2, loc=3.0), epochs=7, batch_size=16, lr=0.05, verbose=False)
    assert history.epochs == 7 and history.val_nll == [] and history.best_epoch == 6
    assert math.isnan(history.best_val_nll) and not history.stopped_early
    assert history.train_nll[-1] < history.train_nll[0]


def test_plateau_halves_the_learning_rate_when_validation_stalls():
    # Validation data the model moves away from: the schedule must react before early stopping.
    x, v = data(128, 1), data(64, 1, loc=-4.0, seed=1)
    history = fit(Gauss(1, mu=-3.0), x, v, epochs=30, batch_size=128, lr=0.1, patience=8, verbose=False)
    assert history.lr[0] == 0.1 and min(history.lr) < 0.1
    fixed = fit(Gauss(1, mu=-3.0), x, v, epochs=30, batch_size=128, lr=0.1, patience=8, scheduler=None,
                verbose=False)
    assert set(fixed.lr) == {0.1}


def test_float64_model_trains_on_float32_data():
    model = Gauss(2, dtype=torch.float64)
    fit(model, data(64, 2).numpy(), epochs=2, batch_size=16, verbose=False)
    assert model.mu.dtype == torch.float64


def test_divergence_raises_and_keeps_best_weights():
    model = Breaks(after=3)  # one step per epoch: epochs 0-2 are finite, epoch 3 is not
    x, v = data(32, 1, loc=2.0), data(16, 1, loc=2.0, seed=1)
    with pytest.raises(FloatingPointError, match="epoch 3"):
        fit(model, x, v, epochs=10, batch_size=32, lr=0.1, verbose=False)
    clean = Gauss(1)  # the same run, stopped before the failure
    fit(clean, x, v, epochs=3, batch_size=32, lr=0.1, verbose=False)
    assert clean.mu.item() > 0.2 and torch.equal(model.mu, clean.mu)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("verbose", [True, False])
def test_progress_bar_and_summary_only_when_asked(monkeypatch, capsys, verbose):
    err = FakeTTY()
    monkeypatch.setattr("sys.stderr", err)
    fit(Gauss(1), data(32, 1), data(8, 1), epochs=3, batch_size=8, verbose=verbose)
    assert capsys.readouterr().out == ""
    assert ("epoch" in err.getvalue()) is verbose
    # The lasting record: one summary line (epochs, kept epoch and its validation NLL, time).
    summary = re.findall(r"fit: \d+ epochs in [^\r\n]*", err.getvalue())
    assert len(summary) == int(verbose)
    if verbose:
        assert "3 epochs in" in summary[0] and "validation NLL" in summary[0]


def test_summary_line_without_a_terminal(capsys):
    # In a log (stderr not a terminal) the bar stays off, the summary line is still written.
    fit(Gauss(1), data(32, 1), epochs=2, batch_size=8)
    err = capsys.readouterr().err
    assert "\r" not in err and err.strip().startswith("fit: 2 epochs in") and "training NLL" in err


def test_progress_is_the_old_name_of_verbose(capsys):
    with pytest.warns(FutureWarning, match="verbose"):
        fit(Gauss(1), data(32, 1), epochs=1, batch_size=8, progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="verbose must be True or False"):
        fit(Gauss(1), data(32, 1), epochs=1, verbose="no")


def test_threads_are_set_for_the_fit_and_restored(monkeypatch):
    seen = []
    model = Gauss(1)
    real = model.log_prob
    monkeypatch.setattr(model, "log_prob", lambda x: seen.append(torch.get_num_threads()) or real(x))
    before = torch.get_num_threads()
    fit(model, data(16, 1), epochs=1, batch_size=8, verbose=False, threads=2)
    assert set(seen) == {2} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be positive"):
        fit(model, data(16, 1), epochs=1, verbose=False, threads=0)


def test_evaluate_nll_matches_closed_form_in_batches():
    model, x = Gauss(2, mu=0.5), data(103, 2)
    expected = -Normal(0.5, 1.0).log_prob(x).sum(-1).mean()
    assert evaluate_nll(model, x, batch_size=10) == pytest.approx(float(expected), rel=1e-6)
    model.train()
    evaluate_nll(model, x)
    assert model.training


class Sized(Gauss):
    d = 3


class NoParams(nn.Module):
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1)


GOOD = data(16, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 2.5}, TypeError, "epochs"),
        ({"batch_size": -1}, ValueError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": math.nan}, ValueError, "lr"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay"),
        ({"patience": 0}, ValueError, "patience"),
        ({"seed": "1"}, TypeError, "seed"),
        ({"scheduler": "cosine"}, ValueError, "scheduler"),
        ({"max_grad_norm": 0}, ValueError, "max_grad_norm"),
        ({"train": GOOD.clone().index_put_((torch.tensor([3]), torch.tensor([1])), torch.tensor(math.nan))},
         ValueError, "row 3"),
        ({"train": GOOD[:, 0]}, ValueError, "2-D"),
        ({"train": GOOD[:0]}, ValueError, "no rows"),
        ({"train": np.array([["a", "b"]])}, TypeError, "numeric"),
        ({"val": data(4, 3)}, ValueError, "3 columns"),
        ({"model": nn.Linear(2, 2)}, TypeError, "log_prob"),
        ({"model": NoParams()}, TypeError, "no parameters"),
        ({"model": Sized(2)}, ValueError, "d=3"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    args = {"model": Gauss(2), "train": GOOD, "val": None, **kwargs}
    model, train, val = args.pop("model"), args.pop("train"), args.pop("val")
    with pytest.raises(error, match=match):
        fit(model, train, val, verbose=False, **args)


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    ("fit-no-logprob", lambda w: fit(NoLogProb(), X, verbose=False), TypeError, "log_prob"),
    ("fit-epochs-0", lambda w: fit(small_flow(), X, epochs=0, verbose=False), ValueError, "epochs"),
    ("fit-lr-negative", lambda w: fit(small_flow(), X, lr=-1.0, verbose=False), ValueError, "lr"),
    ("fit-lr-nan", lambda w: fit(small_flow(), X, lr=math.nan, verbose=False), ValueError, "lr"),
    ("fit-lr-huge", lambda w: fit(small_flow(), X, lr=1e300, verbose=False), ValueError, "lr"),
    ("fit-batch-0", lambda w: fit(small_flow(), X, batch_size=0, verbose=False), ValueError, "batch_size"),
    ("fit-1d", lambda w: fit(small_flow(), X[:, 0], verbose=False), ValueError, "train"),
    ("fit-empty", lambda w: fit(small_flow(), X[:0], verbose=False), ValueError, "train"),
    ("fit-nan", lambda w: fit(small_flow(), np.where(X > 1, np.nan, X), verbose=False), ValueError, "train"),
    ("fit-strings", lambda w: fit(small_flow(), np.array([["a", "b", "c"]]), verbose=False), TypeError, "train"),
    ("fit-float32-range", lambda w: fit(small_flow(), X * 1e39, epochs=1, verbose=False), ValueError, "float32"),
    ("fit-val-width", lambda w: fit(small_flow(), X, X[:, :2], verbose=False), ValueError, "val"),
    ("fit-d-mismatch", lambda w: fit(small_flow(), X[:, :2], verbose=False), ValueError, "train"),
    ("fit-frame-names", lambda w: fit(small_flow(), pd.DataFrame(X, columns=["a", "b", "z"]), verbose=False),
     ValueError, "'z'"),
    ("fit-scheduler", lambda w: fit(small_flow(), X, scheduler="cosine", verbose=False), ValueError, "scheduler"),
    ("fit-seed", lambda w: fit(small_flow(), X, seed=1.5, verbose=False), TypeError, "seed"),
    ("fit-grad-norm", lambda w: fit(small_flow(), X, max_grad_norm=-1, verbose=False), ValueError, "max_grad_norm"),
    ("nll-batch-0", lambda w: evaluate_nll(small_flow(), X, batch_size=0), ValueError, "batch_size"),
    ("nll-nan", lambda w: evaluate_nll(small_flow(), np.full((2, 3), np.nan)), ValueError, "data"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_fit_bad_input_names_the_argument(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)


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


def test_failed_fit_after_good_epochs_keeps_the_best() -> None:
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
