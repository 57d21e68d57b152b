"""A failed call leaves the model as it was (names, statistics, device); seeds out of range are named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _cli_world import A2

from strnn_fast.causal import CausalFlow
from strnn_fast.flows import StrAF
from strnn_fast.train import fit


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
