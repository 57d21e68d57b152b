"""The fused CPU chain of a FastStrNN (strnn_fast/chain.py) against the per-layer path, float64 first.

Forward and every gradient (input, dense-stored and packed weights, biases) at odd shapes and
batches 0, 1, 3, 65, 300, 1024 (padded activations); second order; the weights read as an optimizer
leaves them (fused AdamW writes in place without bumping versions), through cached views that follow
in-place updates, new storages and .to(); the same bits for any thread
count; where the chain applies; the measured choice is per architecture, so alike networks agree
bitwise.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_close

from strnn_fast import FastStrNN, chain
from strnn_fast.data.adjacency import random_dag

CASES = [(3, (5,), 1), (15, (64, 64), 2), (23, (40, 31), 3), (60, (250, 250), 2)]


def _net(d: int, hidden: tuple[int, ...], k: int, dtype=torch.float64, seed: int = 0) -> FastStrNN:
    torch.manual_seed(seed)
    net = FastStrNN(d, hidden, k * d, adjacency=random_dag(d, parents=(1, 3), seed=seed)).to(dtype)
    with torch.no_grad():  # random weights everywhere on the masks (the last layer starts at zero otherwise)
        for layer in net.layers:
            if layer.packed:
                layer.values.normal_()
            else:
                layer.weight.copy_(torch.randn_like(layer.weight) * layer.mask)
            layer.bias.normal_()
    return net


@pytest.mark.parametrize("d,hidden,k", CASES)
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_forward_and_gradients_match_the_layers_float64(d, hidden, k, layout):
    net = _net(d, hidden, k)
    assert any(layer.packed for layer in net.layers) == (d == 60)  # both storages are covered
    params = list(net.parameters())
    for batch in (0, 1, 3, 65, 300, 1024):
        x = torch.randn(batch, d, dtype=torch.float64)
        if layout == "column-major":
            x = x.T.contiguous().T
        x.requires_grad_()
        y, y_ref = chain.run(net, x), net.layered(x)
        assert_close(y, y_ref, "float64_kernels", reduce_dim=max(hidden))
        g = torch.randn_like(y_ref)
        got = torch.autograd.grad(y, [x, *params], g)
        want = torch.autograd.grad(y_ref, [x, *params], g)
        for a, b in zip(got, want):
            assert_close(a, b, "float64_kernels", reduce_dim=max(batch, *hidden))
        for layer, grad in zip(net.layers, got[1::2]):
            if not layer.packed:  # a dense-stored weight's gradient is zero off its mask
                assert not grad[layer.mask == 0].any()
        with torch.no_grad():
            assert_close(chain.run(net, x), y_ref.detach(), "float64_kernels", reduce_dim=max(hidden))


def test_second_order_is_exact():
    net = _net(5, (9, 7), 2)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    params = list(net.parameters())

    def f(x, *ps):
        return chain.run(net, x)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    # A gradient penalty differentiated in the weights, against the per-layer path.
    def penalty(fn):
        (gx,) = torch.autograd.grad(fn(x).square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), params)
    for a, b in zip(penalty(lambda x: chain.run(net, x)), penalty(net.layered)):
        assert_close(a, b, "float64_kernels", reduce_dim=9)


def test_weights_are_read_as_the_optimizer_leaves_them():
    """Fused AdamW updates parameters in place without bumping their version: nothing may be cached."""
    net = _net(15, (64, 64), 2, dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, fused=True)
    x = torch.randn(50, 15)
    for _ in range(3):
        opt.zero_grad()
        chain.run(net, x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            assert_close(chain.run(net, x), net.layered(x), torch.float32, reduce_dim=64)


def _dense_reference(net: FastStrNN, x: torch.Tensor) -> torch.Tensor:
    """The network in float64 from its parameters as they are now (no cache of ours involved)."""
    h = x.double()
    for i, layer in enumerate(net.layers):
        h = torch.nn.functional.linear(h, layer.dense_weight().detach().double(), layer.bias.detach().double())
        h = h.relu() if i < len(net.layers) - 1 else h
    return h


def test_cached_weight_views_follow_every_update():
    """The kernels read parameters through numpy views made once per tensor: in-place updates, a new
    storage under the same Parameter (``p.data = ...``) and ``.to(dtype)`` must all be seen, and a
    view must not keep a converted parameter's old storage alive."""
    for d, hidden in ((15, (64, 64)), (60, (250, 250))):  # dense-stored layers, then packed ones
        _follow_updates(_net(d, hidden, 2, dtype=torch.float32), torch.randn(33, d))


def _follow_updates(net: FastStrNN, x: torch.Tensor) -> None:
    from strnn_fast import csr_ops

    def check(dtype) -> None:
        with torch.no_grad():
            assert_close(chain.run(net, x.to(dtype)), _dense_reference(net, x), dtype, reduce_dim=250)

    check(torch.float32)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-1.5)  # in place: the same storage
    check(torch.float32)
    for p in net.parameters():
        p.data = p.data * -0.5  # another storage under the same Parameter (zero off the masks, as kept)
    check(torch.float32)
    net.double()  # .to(dtype): new storages; the old views are dropped
    assert not any(id(p) in csr_ops._VIEWS for p in net.parameters())
    check(torch.float64)


def test_the_same_bits_for_any_thread_count():
    net = _net(60, (250, 250), 2, dtype=torch.float32)
    x = torch.randn(777, 60, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y = chain.run(net, x)
            results.append((y, *torch.autograd.grad(y.sum(), [x, *net.parameters()])))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_where_the_chain_applies():
    net = _net(6, (8,), 1, dtype=torch.float32)
    x = torch.randn(4, 6)
    assert chain.applies(net, x)
    assert not chain.applies(net, x.double())  # another dtype than the parameters'
    assert not chain.applies(net, x.half())
    assert not chain.applies(net, x.reshape(2, 2, 6))
    net.layers[0].backend = "dense"
    assert not chain.applies(net, x)
    net.layers[0].backend = "auto"
    tanh = FastStrNN(6, (8,), 6, adjacency=random_dag(6, parents=(1, 2), seed=1), activation="tanh")
    assert not chain.applies(tanh, x)
    # torch.func transforms see the per-layer path: vmap over rows gives the forward's values.
    out = torch.func.vmap(lambda row: net(row.unsqueeze(0)).squeeze(0))(x)
    torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-5)


def test_the_choice_is_measured_per_architecture(monkeypatch):
    """Two networks alike make the same measured choice and answer bitwise alike; the forward runs
    the chain exactly where the choice says so."""
    measured = []

    def fake(net, like, training):
        measured.append((like.shape[0], training))
        return {"chain": like.shape[0] > 8, "times_us": {"chain": 1.0, "layers": 2.0}}
    monkeypatch.setattr(chain, "_measure", fake)
    monkeypatch.setattr(chain, "CHOICES", {})
    a, b = _net(15, (64, 64), 2, dtype=torch.float32), _net(15, (64, 64), 2, dtype=torch.float32)
    big, small = torch.randn(300, 15), torch.randn(5, 15)
    with torch.no_grad():
        assert torch.equal(a(big), b(big)) and torch.equal(a(small), b(small))
        assert torch.equal(a(big), chain.run(a, big).contiguous())
        assert torch.equal(a(small), a.layered(small).contiguous())
    assert measured == [(300, False), (5, False)]  # once per case, for both networks
    assert [r["fused"] for r in chain.report(a)] == [True, False]


def test_a_declined_chain_is_remembered_for_calls_alike(monkeypatch):
    """A "no" (here: measured slower) is asked once for calls like the last one; another shape, grad mode
    or layer backend asks again, and a "yes" then runs the chain."""
    asked = []
    answer = [False]
    monkeypatch.setattr(chain, "_chosen", lambda *a: asked.append(1) or answer[0])
    net = _net(15, (64, 64), 2, dtype=torch.float32)
    x = torch.randn(20, 15)
    with torch.no_grad():
        want = net.layered(x).contiguous()
        for _ in range(3):
            assert torch.equal(net(x), want)
        assert len(asked) == 1
        net(torch.randn(21, 15))
        assert len(asked) == 2
    net(x)  # grad enabled: another case
    assert len(asked) == 3
    answer[0] = True
    net.layers[0].backend = "cpu"  # the layers changed: decided again, now fused
    with torch.no_grad():
        assert torch.equal(net(x), chain.run(net, x).contiguous())
    assert len(asked) == 4


def test_a_real_measurement_records_both_paths():
    net = _net(15, (64, 64), 2, dtype=torch.float32)
    with torch.no_grad():
        net(torch.randn(64, 15))
    (entry,) = [r for r in chain.report(net) if r["batch_bucket"] == 64 and r["phase"] == "eval"]
    assert set(entry["times_us"]) == {"chain", "layers"} and all(np.isfinite(list(entry["times_us"].values())))


def _straf(d: int, hidden: tuple[int, ...], **kwargs):
    from strnn_fast.flows import StrAF
    from strnn_fast.nn import MaskedLinear

    torch.manual_seed(0)
    flow = StrAF(random_dag(d, parents=(1, 3), seed=2), hidden, 2, **kwargs).double()
    with torch.no_grad():  # conditioners that depend on their inputs
        for layer in flow.modules():
            if isinstance(layer, MaskedLinear):
                if layer.packed:
                    layer.values.normal_(0, 0.3)
                else:
                    layer.weight.copy_(torch.randn_like(layer.weight) * 0.3 * layer.mask)
                layer.bias.normal_(0, 0.3)
    return flow


def _fused_calls(monkeypatch) -> list:
    """Records each fused step's run: "train" through the autograd node, "eval" without one."""
    from strnn_fast.flows import fused_step

    calls = []
    apply, evaluate = fused_step.apply, fused_step._evaluate  # fused_step applies only _AffineStep
    monkeypatch.setattr(fused_step, "apply", lambda cls, *a: (calls.append("train"), apply(cls, *a))[1])
    monkeypatch.setattr(fused_step, "_evaluate", lambda *a: (calls.append("eval"), evaluate(*a))[1])
    return calls


@pytest.mark.parametrize("d,hidden", [(6, (9,)), (15, (64, 64)), (40, (100, 80))])
def test_the_fused_affine_step_matches_its_parts(d, hidden, monkeypatch):
    """An affine StrAF step as one node (strnn_fast/flows/fused_step.py): log_prob and every gradient
    as the step's parts compute them, the passes counted; second order through the torch formulas."""
    from strnn_fast.flows import fused_step

    monkeypatch.setattr(chain, "_measure", lambda net, like, training: {"chain": True, "times_us": {}})
    monkeypatch.setattr(chain, "CHOICES", {})
    flow = _straf(d, hidden)
    x = torch.randn(50, d, dtype=torch.float64, requires_grad=True)
    params = list(flow.parameters())
    calls = _fused_calls(monkeypatch)
    flow.reset_passes()
    lp = flow.log_prob(x)
    got = torch.autograd.grad(lp.sum(), [x, *params])
    assert calls.count("train") == 2 and flow.passes == [1, 1]
    with torch.no_grad():
        lp_eval = flow.log_prob(x)
        z, log_det = flow.transform(x)
    assert calls.count("eval") == 4 and flow.passes == [3, 3]
    assert z.is_contiguous()  # the steps hand z over column-major; the user gets it row-major
    monkeypatch.setattr(fused_step, "step", lambda *a: None)
    lp_ref = flow.log_prob(x)
    want = torch.autograd.grad(lp_ref.sum(), [x, *params])
    assert_close(lp, lp_ref, "float64_kernels", reduce_dim=d)
    assert_close(lp_eval, lp_ref, "float64_kernels", reduce_dim=d)
    with torch.no_grad():
        z_ref, log_det_ref = flow.transform(x)
    assert_close(z, z_ref, "float64_kernels", reduce_dim=max(hidden))
    assert_close(log_det, log_det_ref, "float64_kernels", reduce_dim=d)
    for a, b in zip(got, want):
        assert_close(a, b, "float64_kernels", reduce_dim=max(hidden))


def test_an_affine_step_whose_chain_is_not_chosen_runs_its_layers(monkeypatch):
    """Where the chain is measured slower, the step runs the network's layers one by one and the
    normalizer on their column-major output (the chain asked once): the same log_prob and gradients
    as the flow step's parts, one pass a step."""
    from strnn_fast.flows import fused_step

    monkeypatch.setattr(chain, "_measure", lambda net, like, training: {"chain": False, "times_us": {}})
    monkeypatch.setattr(chain, "CHOICES", {})
    flow = _straf(15, (64, 64))
    for step in flow.steps:
        for layer in step.conditioner.net.layers:
            layer.backend = "cpu"  # column-major outputs
    x = torch.randn(70, 15, dtype=torch.float64, requires_grad=True)
    params = list(flow.parameters())
    calls = _fused_calls(monkeypatch)
    flow.reset_passes()
    lp = flow.log_prob(x)
    got = torch.autograd.grad(lp.sum(), [x, *params])
    with torch.no_grad():
        lp_eval = flow.log_prob(x)
    assert not calls and flow.passes == [2, 2]
    monkeypatch.setattr(fused_step, "step", lambda *a: None)
    lp_ref = flow.log_prob(x)
    want = torch.autograd.grad(lp_ref.sum(), [x, *params])
    assert_close(lp, lp_ref, "float64_kernels", reduce_dim=15)
    assert_close(lp_eval, lp_ref, "float64_kernels", reduce_dim=15)
    for a, b in zip(got, want):
        assert_close(a, b, "float64_kernels", reduce_dim=64)


def test_the_fused_affine_step_second_order(monkeypatch):
    monkeypatch.setattr(chain, "_measure", lambda net, like, training: {"chain": True, "times_us": {}})
    monkeypatch.setattr(chain, "CHOICES", {})
    flow = _straf(5, (9,))
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    calls = _fused_calls(monkeypatch)
    assert torch.autograd.gradcheck(lambda x: flow.log_prob(x), (x,))
    assert torch.autograd.gradgradcheck(lambda x: flow.log_prob(x), (x,))
    assert calls


def test_the_fused_affine_step_only_where_it_applies(monkeypatch):
    monkeypatch.setattr(chain, "_measure", lambda net, like, training: {"chain": True, "times_us": {}})
    monkeypatch.setattr(chain, "CHOICES", {})
    x = torch.randn(30, 6, dtype=torch.float64, requires_grad=True)
    for kwargs in ({"normalizer": "spline"}, {"context_features": 2}):
        flow = _straf(6, (9,), **kwargs)
        calls = _fused_calls(monkeypatch)
        c = torch.randn(30, 2, dtype=torch.float64) if "context_features" in kwargs else None
        flow.log_prob(x, c).sum().backward()
        assert not calls
    flow = _straf(6, (9,))
    calls = _fused_calls(monkeypatch)
    with torch.no_grad():
        flow.log_prob(x)  # no gradient: the same step without its autograd node
    assert calls == ["eval", "eval"]
    flow.log_prob(x).sum().backward()
    assert calls[2:] == ["train", "train"]


def test_a_mask_edited_in_place_is_seen():
    net = _net(15, (64, 64), 2)
    x = torch.randn(20, 15, dtype=torch.float64)
    with torch.no_grad():
        chain.run(net, x)  # builds the plan
        layer = net.layers[1]
        layer.mask[:, 3] = 0  # a dense-stored layer's mask buffer, edited in place
        layer.weight[:, 3] = 0
        assert_close(chain.run(net, x), net.layered(x), "float64_kernels", reduce_dim=64)
