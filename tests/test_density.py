"""StrNN density estimators: likelihoods, structure, ancestral sampling, save/load, and the paper's claim."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

import strnn_fast
from strnn_fast.density import StrNNDensityEstimator

from _shake import shake

# Not in topological order: 2 -> 0 -> 1, 2 -> 3 (depth 2).
A = np.zeros((4, 4), dtype=int)
A[0, 2] = A[1, 0] = A[3, 2] = 1


def model(data_type: str, seed: int = 0) -> StrNNDensityEstimator:
    torch.manual_seed(seed)
    return shake(StrNNDensityEstimator(A, (16, 16), data_type).double(), scale=0.5, only=None)


def test_binary_likelihood_is_normalized_and_matches_bernoulli() -> None:
    m = model("binary")
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    log_p = m.log_prob(grid)
    assert float(torch.logsumexp(log_p.detach(), 0)) == pytest.approx(0.0, abs=1e-12)
    expected = torch.distributions.Bernoulli(logits=m.net(grid)).log_prob(grid).sum(-1)
    assert torch.allclose(log_p, expected, atol=1e-12)


def test_gaussian_likelihood_matches_normal() -> None:
    m = model("gaussian")
    x = torch.randn(8, 4, dtype=torch.float64)
    out = m.net(x)
    log_std = m.log_std_bound * torch.tanh(out[:, 4:] / m.log_std_bound)
    expected = torch.distributions.Normal(out[:, :4], log_std.exp()).log_prob(x).sum(-1)
    assert torch.allclose(m.log_prob(x), expected, atol=1e-12)


@pytest.mark.parametrize("data_type", ["binary", "gaussian"])
def test_conditionals_read_parents_only(data_type: str) -> None:
    m = model(data_type)
    J = jacobian(m.net, torch.randn(1, 4, dtype=torch.float64))[0, :, 0].numpy()
    k = J.shape[0] // 4
    pattern = np.tile(A.astype(bool), (k, 1))
    assert np.abs(J[~pattern]).max() == 0.0 and (J[pattern] != 0).all()


def test_binary_samples_follow_the_model() -> None:
    m = model("binary")
    m.reset_passes()
    torch.manual_seed(0)
    x = m.sample(40_000)
    assert m.passes == m.depth + 1 == 3
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    p = m.log_prob(grid).exp().detach()
    counts = (x[:, None, :] == grid[None]).all(-1).sum(0).double() / len(x)
    assert (counts - p).abs().max() < 0.01


def test_gaussian_samples_have_standard_residuals() -> None:
    m = model("gaussian")
    m.reset_passes()
    torch.manual_seed(0)
    x = m.sample(40_000)
    assert m.passes == 3 and x.shape == (40_000, 4)
    # Every variable was drawn from its conditional given its parents' final values, so the
    # residuals under the model's own conditionals are independent standard normals.
    with torch.no_grad():
        out = m.net(x)
        log_std = m.log_std_bound * torch.tanh(out[:, 4:] / m.log_std_bound)
        u = (x - out[:, :4]) * torch.exp(-log_std)
    assert u.mean(0).abs().max() < 0.03 and (u.std(0) - 1).abs().max() < 0.03


@pytest.mark.parametrize("data_type", ["binary", "gaussian"])
def test_save_load_round_trip(data_type: str, tmp_path) -> None:
    m = model(data_type).float()
    m.save(tmp_path / "m.pt")
    loaded = strnn_fast.load(tmp_path / "m.pt")
    x = torch.randint(0, 2, (16, 4)).float()
    assert torch.equal(loaded.log_prob(x), m.log_prob(x)) and loaded.config == m.config


def test_names_and_graph_forms() -> None:
    m = StrNNDensityEstimator([("a", "b"), ("b", "c")], (8,), "gaussian")
    assert m.names == ["a", "b", "c"] and m.depth == 2


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((A, (8,), "poisson"), {}, ValueError, "data_type"),
        (([("a", "b"), ("b", "a")], (8,)), {}, ValueError, "cycle"),
        ((np.zeros((3, 3)), (8,)), {}, ValueError, "no edges"),
        ((A, (8,), "gaussian"), {"log_std_bound": -1}, ValueError, "log_std_bound"),
        ((A, (1,)), {}, ValueError, "hidden_sizes"),
    ],
)
def test_bad_arguments(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        StrNNDensityEstimator(*args, **kwargs)


def test_bad_inputs() -> None:
    m = StrNNDensityEstimator(A, (8,))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\)"):
        m.log_prob(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        m.log_prob(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="n must be"):
        m.sample(-1)


@pytest.mark.slow
def test_strnn_beats_made_on_reference_binary_data() -> None:
    from strnn_fast.data import load_reference_binary
    from strnn_fast.train import evaluate_nll, fit

    data = load_reference_binary()
    full = np.tril(np.ones((data.d, data.d), dtype=bool), k=-1)
    nll = {}
    for name, adjacency, opt_type in [("strnn", data.adjacency, "greedy"), ("made", full, "made")]:
        torch.manual_seed(0)
        est = StrNNDensityEstimator(adjacency, (100, 100), "binary", opt_type=opt_type)
        fit(est, data.train, data.val, epochs=200, batch_size=64, lr=1e-3, patience=10, seed=0, verbose=False)
        nll[name] = evaluate_nll(est, data.test)
    assert nll["strnn"] < nll["made"], nll
