"""Standardizer and Standardized: float64 statistics, the constant-column policy, the same checks everywhere."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from strnn_fast.causal import CausalFlow
from strnn_fast.data.dataset import standardize
from strnn_fast.standardize import Standardized, Standardizer
from _trust_world import A3, FIT_TWO_EPOCHS, X, check_api_refuses, small_flow
from strnn_fast.cli import main
from strnn_fast.flows import StrAF
from strnn_fast.serialization import load

A2 = np.array([[0, 0], [1, 0]])


def test_standardizer_matches_a_float64_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.5, size=(37, 5))
    s = Standardizer.fit(x)
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(s.std, np.sqrt(((x - x.mean(0)) ** 2).mean(0)), rtol=1e-13)  # ddof 0
    z = s.transform(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-13)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-13)
    np.testing.assert_allclose(s.inverse(z), x, rtol=1e-13)
    t = torch.from_numpy(x).float()
    torch.testing.assert_close(s.transform(t), torch.from_numpy(z).float())
    assert s.transform(t).dtype == torch.float32
    assert s.log_scale() == pytest.approx(float(np.log(s.std).sum()), rel=1e-14)
    np.testing.assert_allclose(standardize(x)[0], z, rtol=1e-14)


def test_standardizer_constant_column_policy() -> None:
    x = np.column_stack([np.arange(5.0), np.full(5, 7.0)])
    with pytest.raises(ValueError, match="'b' is constant"):
        Standardizer.fit(x, ["a", "b"])
    kept = Standardizer.fit(x, constant="keep")
    assert kept.std[1] == 1.0 and kept.mean[1] == 7.0
    with pytest.raises(ValueError, match="constant"):
        Standardizer.fit(x, constant="scale")
    with pytest.raises(ValueError, match="std must be positive"):
        Standardizer(np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        Standardizer(np.array([0.0, math.nan]), np.ones(2))


def test_causal_flow_standardizes_like_the_cli() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2)) * [1.0, 3.0] + [0.5, -2.0]
    c = rng.normal(size=(50, 1)) * 4.0 + 1.0
    flow = CausalFlow(A2, hidden_sizes=(4,), flow_steps=1, context_features=1)
    flow.fit(x[:40], val=x[40:], context=c[:40], val_context=c[40:], epochs=1, verbose=False)
    want = Standardizer.fit(x[:40])  # training rows only, ddof 0
    np.testing.assert_allclose(flow.loc.double().numpy(), want.mean, rtol=1e-6)
    np.testing.assert_allclose(flow.scale.double().numpy(), want.std, rtol=1e-6)
    want_c = Standardizer.fit(c[:40], constant="keep")
    np.testing.assert_allclose(flow.context_scale.double().numpy(), want_c.std, rtol=1e-6)
    with pytest.raises(ValueError, match="val_context"):
        flow.fit(x[:40], val=x[40:], context=c[:40], epochs=1, verbose=False)
    with pytest.raises(ValueError, match="val_context needs val"):
        flow.fit(x, context=c, val_context=c[:3], epochs=1, verbose=False)


def test_standardized_wrapper_uses_the_same_checks() -> None:
    from strnn_fast.flows import StrAF

    base = StrAF(A2, hidden_sizes=(4,), flow_steps=1)
    with pytest.raises(ValueError, match="std must be positive"):
        Standardized(base, mean=[0.0, 0.0], std=[1.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        Standardized(base, mean=[0.0, math.inf], std=[1.0, 1.0])


# (id, callable(world), exception type, text the message must contain)
API_BAD_INPUT = [
    ("std-mean-length", lambda w: Standardized(small_flow(), mean=[0.0, 0.0], std=[1.0, 1.0]), ValueError, "mean"),
    ("std-zero", lambda w: Standardized(small_flow(), mean=[0.0] * 3, std=[1.0, 0.0, 1.0]), ValueError, "std"),
    ("std-nan", lambda w: Standardized(small_flow(), mean=[0.0, math.nan, 0.0], std=[1.0] * 3), ValueError, "mean"),
    ("std-base", lambda w: Standardized(torch.nn.Linear(3, 3), mean=[0.0] * 3, std=[1.0] * 3), TypeError, "base"),
    ("std-logprob-numpy", lambda w: load(w / "straf.pt").log_prob(np.zeros((2, 3))), TypeError, "x"),
    ("std-logprob-width", lambda w: load(w / "straf.pt").log_prob(torch.zeros(2, 2)), ValueError, "x"),
    ("standardize-constant", lambda w: standardize(np.c_[X[:, :2], np.ones(30)]), ValueError, "column 2"),
]


@pytest.mark.parametrize("call,error,expected", [c[1:] for c in API_BAD_INPUT], ids=[c[0] for c in API_BAD_INPUT])
def test_standardize_bad_input_names_the_argument(bad_world, call, error, expected) -> None:
    check_api_refuses(bad_world, call, error, expected)


def test_standardized_log_prob_checks() -> None:
    model = Standardized(StrAF(A3, hidden_sizes=(6,), flow_steps=1), mean=[0.0, 1.0, 2.0], std=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model.log_prob(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x must have shape"):
        model.log_prob(torch.zeros(2, 5))
    assert model.log_prob(torch.zeros(2, 3, dtype=torch.float64)).shape == (2,)


def test_constant_columns_are_refused_everywhere(tmp_path, abc_files, capsys) -> None:
    data, graph = abc_files
    rows = data.read_text().splitlines()
    const = tmp_path / "const.csv"
    const.write_text("\n".join([rows[0]] + [r.rsplit(",", 1)[0] + ",7.0" for r in rows[1:]]) + "\n")
    for model in ("straf", "causal"):
        out = tmp_path / f"{model}.pt"
        assert main(["fit", str(const), "-a", str(graph), "--model", model, *FIT_TWO_EPOCHS, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "'c'" in err and "constant" in err and "drop" in err and not out.exists()
    x = np.loadtxt(const, delimiter=",", skiprows=1)
    with pytest.raises(ValueError, match="'c' is constant"):
        CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(4,), flow_steps=1).fit(x, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="column 2 is constant"):
        standardize(x)
    with pytest.raises(ValueError, match="constant"):
        Standardized(StrAF(A3, hidden_sizes=(6,), flow_steps=1), mean=[0.0, 0.0, 7.0], std=[1.0, 1.0, 0.0])
