"""Flows take pandas DataFrames matched by column name, return them on request, and show their variable order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import strnn_fast
from strnn_fast.flows import ARF, StrAF

pd = pytest.importorskip("pandas")

EDGES = [("rain", "wet"), ("sprinkler", "wet"), ("wet", "slip")]


def _flow(cls=StrAF, **kw):
    torch.manual_seed(0)
    flow = cls(EDGES, hidden_sizes=(7,), flow_steps=2, **kw).double()
    with torch.no_grad():  # away from the identity at init, so each variable has its own density
        for name, p in flow.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p))
    return flow


@pytest.mark.parametrize("cls", [StrAF, ARF])
def test_frame_in_any_column_order_equals_tensor_in_model_order(cls):
    flow = _flow(cls)
    assert flow.names == ["rain", "wet", "sprinkler", "slip"]
    x = torch.randn(5, 4, dtype=torch.float64)
    frame = pd.DataFrame(x.numpy(), columns=flow.names)[["slip", "sprinkler", "rain", "wet"]]
    torch.testing.assert_close(flow.log_prob(frame), flow.log_prob(x), rtol=0, atol=0)
    z_frame, ld_frame = flow.transform(frame)
    z, ld = flow.transform(x)
    torch.testing.assert_close(z_frame, z, rtol=0, atol=0)
    torch.testing.assert_close(ld_frame, ld, rtol=0, atol=0)
    # The trap this closes: the same numbers in the frame's column order, as a tensor, differ.
    assert not torch.allclose(flow.log_prob(torch.tensor(frame.to_numpy())), flow.log_prob(x))


@pytest.mark.parametrize("columns, words", [
    (["rain", "wet", "sprinkler"], "missing ['slip']"),
    (["rain", "wet", "sprinkler", "slip", "id"], "unknown ['id']"),
])
def test_frame_with_missing_or_unknown_columns_is_refused_naming_them(columns, words):
    flow = _flow()
    frame = pd.DataFrame(np.zeros((2, len(columns))), columns=columns)
    with pytest.raises(ValueError, match=r"^x .*" + words.replace("[", r"\[").replace("]", r"\]")):
        flow.log_prob(frame)


def test_frame_of_text_is_a_type_error():
    flow = _flow()
    frame = pd.DataFrame({n: ["a", "b"] for n in flow.names})
    with pytest.raises(TypeError, match="x must hold numbers"):
        flow.log_prob(frame)


def test_sample_as_frame_has_the_model_order_and_the_samples():
    flow = _flow()
    torch.manual_seed(3)
    frame = flow.sample(6, as_frame=True)
    torch.manual_seed(3)
    x = flow.sample(6)
    assert list(frame.columns) == flow.names
    np.testing.assert_array_equal(frame.to_numpy(), x.numpy())
    with pytest.raises(ValueError, match="as_frame=True needs a sample_shape of one dimension"):
        flow.sample((2, 3), as_frame=True)
    with pytest.raises(TypeError, match="as_frame must be True or False"):
        flow.sample(2, as_frame="yes")


def test_context_frame_is_matched_by_context_names():
    flow = _flow(context_features=2, context_names=["age", "dose"])
    x = torch.randn(4, 4, dtype=torch.float64)
    c = torch.randn(4, 2, dtype=torch.float64)
    frame = pd.DataFrame(c.numpy(), columns=["age", "dose"])[["dose", "age"]]
    torch.testing.assert_close(flow.log_prob(x, context=frame), flow.log_prob(x, context=c), rtol=0, atol=0)
    with pytest.raises(ValueError, match="context lacks the columns"):
        flow.log_prob(x, context=frame[["dose"]])


def test_repr_shows_the_variable_order():
    assert "variables=['rain', 'wet', 'sprinkler', 'slip']" in repr(_flow())
    big = StrAF(np.tril(np.ones((30, 30)), -1), hidden_sizes=(40,), flow_steps=1)
    assert "d=30, variables=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, '...', 29]" in repr(big)
    assert "context=['age', 'dose']" in repr(_flow(context_features=2, context_names=["age", "dose"]))


def test_standardized_model_takes_and_returns_frames():
    flow = _flow()
    model = strnn_fast.standardize.Standardized(flow, [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 0.5, 3.0])
    x = torch.randn(6, 4, dtype=torch.float64) + 2
    frame = pd.DataFrame(x.numpy(), columns=flow.names)[["wet", "slip", "rain", "sprinkler"]]
    torch.testing.assert_close(model.log_prob(frame), model.log_prob(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"unknown \['id'\]"):
        model.log_prob(frame.assign(id=1.0))
    out = model.sample(5, as_frame=True)
    assert list(out.columns) == flow.names and out.shape == (5, 4)


def test_causal_flow_queries_take_frames_by_name():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.normal(size=(300, 3)) * [1.0, 10.0, 100.0] + [0.0, 50.0, -7.0], columns=["a", "b", "c"])
    model = strnn_fast.CausalFlow([("a", "b"), ("b", "c")], hidden_sizes=(8,), flow_steps=1)
    model.fit(data, epochs=2, verbose=False)
    shuffled = data[["c", "a", "b"]].iloc[:7]
    in_order = torch.tensor(data.iloc[:7].to_numpy())
    torch.testing.assert_close(model.log_prob(shuffled), model.log_prob(in_order))
    torch.testing.assert_close(model.transform(shuffled), model.transform(in_order))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        model.log_prob(shuffled[["c", "a"]])
    # the trap this closes: a frame in another column order was read by position before
    assert not torch.allclose(model.log_prob(torch.tensor(shuffled.to_numpy())), model.log_prob(in_order))


def test_causal_flow_context_frame_is_matched_by_context_names():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) * [1.0, 5.0]
    model = strnn_fast.CausalFlow([("a", "b")], hidden_sizes=(8,), flow_steps=1, context_features=2,
                                  context_names=["u", "v"])
    model.fit(pd.DataFrame(x, columns=["a", "b"]), context=pd.DataFrame(c, columns=["u", "v"])[["v", "u"]],
              epochs=2, verbose=False)
    frame = pd.DataFrame(c[:5], columns=["u", "v"])[["v", "u"]]
    rows = torch.tensor(x[:5])
    torch.testing.assert_close(model.log_prob(rows, context=frame), model.log_prob(rows, context=torch.tensor(c[:5])))
