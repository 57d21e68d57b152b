"""Standardizer and Standardized: float64 statistics, the constant-column policy, the same checks everywhere."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from strnn_fast.causal import CausalFlow
from strnn_fast.data.dataset import standardize
from strnn_fast.standardize import Standardized, Standardizer

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
