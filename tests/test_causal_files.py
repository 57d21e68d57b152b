"""CausalFlow model files written before the flow moved into a Standardized load and answer as they did.

tests/data/causal_old*.pt were written by tests/data/make_causal_old_files.py with the code of
that time (state-dict keys ``loc``, ``scale``, ``context_loc``, ``context_scale``, ``flow.*``),
together with the answers they gave then (``*_answers.npz``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import strnn_fast
from strnn_fast.causal import CausalFlow

DATA = Path(__file__).parent / "data"
ANSWERS = ("log_prob", "transform", "inverse", "sample", "do_b", "ate", "cf")


def _script() -> ModuleType:
    # The script that wrote the files: its answers() asked the old code what the test asks today's.
    spec = importlib.util.spec_from_file_location("make_causal_old_files", DATA / "make_causal_old_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _answers(model: CausalFlow, x: torch.Tensor, c: torch.Tensor | None) -> dict[str, np.ndarray]:
    return _script().answers(model, x, c)


def _old_context(name: str) -> torch.Tensor | None:
    # The covariates the answers were computed with (rebuilt as the script drew them).
    if name != "causal_old_context":
        return None
    rng = np.random.default_rng(0)
    rng.normal(size=(60, 3))
    c = (rng.normal(size=(60, 1)) * 3 + 1).astype(np.float32).astype(np.float64)
    return torch.as_tensor(c[:6])


@pytest.mark.parametrize("name", ["causal_old", "causal_old_context"])
def test_old_causal_file_loads_and_answers_the_same(name: str, tmp_path) -> None:
    model = strnn_fast.load(DATA / f"{name}.pt")
    assert isinstance(model, CausalFlow) and bool(model.fitted) and model.names == ["a", "b", "c"]
    want = dict(np.load(DATA / f"{name}_answers.npz"))
    x = torch.as_tensor(want["x"])
    got = _answers(model, x, _old_context(name))
    # The answers recorded when the file was written, to float32 rounding: the same model, computed
    # by today's kernels (which may sum in another order: 1 ulp moved, e.g., with the fused chain).
    for key in ANSWERS:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-6, atol=1e-6, err_msg=key)
    # Saved again, it is a file of today's keys that answers exactly as the loaded model.
    model.save(tmp_path / "again.pt")
    again = strnn_fast.load(tmp_path / "again.pt")
    assert "standardized.mean" in again.state_dict() and "loc" not in again.state_dict()
    np.testing.assert_array_equal(_answers(again, x, _old_context(name))["log_prob"], got["log_prob"])


def test_load_state_dict_takes_the_old_keys() -> None:
    torch.manual_seed(0)
    fitted = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1, context_features=1)
    x, c = torch.randn(40, 2) * 3 + 5, torch.randn(40, 1)
    fitted.fit(x, context=c, epochs=1, verbose=False)
    new = {"standardized.mean": "loc", "standardized.std": "scale", "standardized.context_mean": "context_loc",
           "standardized.context_std": "context_scale"}
    old = {(new.get(k) or k.replace("standardized.base.", "flow.")): v for k, v in fitted.state_dict().items()}
    assert {"loc", "scale", "context_loc", "context_scale", "fitted"} <= set(old)
    fresh = CausalFlow([("a", "b")], hidden_sizes=(4,), flow_steps=1, context_features=1)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.log_prob(x, c), fitted.log_prob(x, c))
    assert torch.equal(fresh.scale, fitted.scale) and fresh.scale.dtype == torch.float64
