"""FastStrNN: drop-in parity with the reference StrNN, Jacobian structure, caching, init."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tolerances import tolerance

import strnn_fast
from strnn_fast import FastStrNN, MaskedLinear, check_masks, load, required_width

ref_models = pytest.importorskip("strnn.models.strNN", reason="install strnn==0.2.0 --no-deps")


def _copy_weights_from_reference(ours: FastStrNN, theirs) -> None:
    # The reference keeps unmasked weights at rest; loading its checkpoint masks them on the way in.
    ours.load_state_dict(theirs.state_dict())


@pytest.mark.parametrize("opt_type", ["greedy", "zuko", "made"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
@pytest.mark.parametrize("k", [1, 2])
def test_same_outputs_as_reference(opt_type: str, activation: str, k: int) -> None:
    torch.manual_seed(0)
    d = 7
    rng = np.random.default_rng(1)
    A = np.tril(np.ones((d, d)), -1) if opt_type == "made" else np.tril(rng.random((d, d)) < 0.5, -1).astype(float)
    theirs = ref_models.StrNN(d, (16, 12), k * d, opt_type=opt_type, adjacency=A, activation=activation).double()
    ours = FastStrNN(d, (16, 12), k * d, opt_type=opt_type, adjacency=A, activation=activation).double()
    for mine, other in zip(ours.masks, theirs.masks):
        np.testing.assert_array_equal(mine, other)
    _copy_weights_from_reference(ours, theirs)
    x = torch.randn(33, d, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)


def test_made_default_adjacency_with_several_outputs() -> None:
    with pytest.warns(UserWarning, match="autoregressive"):
        net = FastStrNN(5, (10,), 10, opt_type="made")
    assert net.A.shape == (5, 5) and check_masks(net.masks[:-1] + [net.masks[-1][:, :5]], net.A)


def _jacobian(net: FastStrNN, x: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0)).squeeze(0), x)


@given(
    arrays(np.uint8, st.tuples(st.integers(1, 7), st.integers(1, 7)), elements=st.integers(0, 1)),
    st.sampled_from(["tanh", "softplus", "gelu", "silu", "elu"]),
    st.sampled_from(["greedy", "zuko"]),
    st.integers(0, 2**16),
)
def test_jacobian_zero_exactly_where_adjacency_is_zero(A, activation, opt_type, seed) -> None:
    assume(A.any())
    torch.manual_seed(seed)
    width = required_width(A, opt_type) + 3
    net = FastStrNN(A.shape[1], (width, width), A.shape[0], opt_type=opt_type, adjacency=A,
                    activation=activation).double()
    J = _jacobian(net, torch.randn(A.shape[1], dtype=torch.float64))
    assert torch.all(J[torch.from_numpy(A) == 0] == 0)
    # Where A is one the dependence is generic: a random smooth network has a nonzero derivative.
    assert torch.all(J[torch.from_numpy(A) == 1] != 0)


def test_jacobian_blocks_for_several_outputs_per_variable() -> None:
    torch.manual_seed(0)
    A = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    net = FastStrNN(3, (8, 8), 6, adjacency=A, activation="tanh").double()
    J = _jacobian(net, torch.randn(3, dtype=torch.float64))
    pattern = torch.from_numpy(np.concatenate([A, A])) == 1
    assert torch.all(J[~pattern] == 0) and torch.all(J[pattern] != 0)


@pytest.mark.parametrize("packed", [False, True])
def test_weights_masked_at_rest(packed: bool) -> None:
    torch.manual_seed(0)
    mask = np.tril(np.ones((5, 7)))
    layer = MaskedLinear(7, 5, mask=mask, packed=packed)
    off = torch.from_numpy(mask) == 0
    assert torch.all(layer.weight[off] == 0) and torch.all(layer.weight[~off] != 0)
    layer.set_weight(torch.randn(5, 7) + 3.0)  # a full matrix in: only the mask's entries kept
    assert torch.all(layer.weight[off] == 0) and torch.all(layer.weight[~off] != 0)
    new = np.triu(np.ones((5, 7)))
    kept = layer.weight.detach().clone() * torch.from_numpy(new)
    layer.set_mask(new)
    torch.testing.assert_close(layer.weight, kept.float(), rtol=0, atol=0)


def test_derived_state_follows_the_mask() -> None:
    layer = MaskedLinear(6, 4, mask=np.tril(np.ones((4, 6))))
    first = layer.csr()
    assert layer.csr() is first and layer.density() == first.density
    layer.set_mask(np.eye(4, 6))
    assert layer.csr() is not first and layer.csr().nnz == 4 and layer.density() == 4 / 24
    with torch.no_grad():
        layer.mask[0, 5] = 1.0  # an in-place edit of the buffer is seen too (eager mode)
    assert layer.csr().nnz == 5


def test_eval_mode_with_grad_still_trains() -> None:
    net = FastStrNN(3, (6,), 3, adjacency=np.tril(np.ones((3, 3)), -1))
    net.eval()
    net(torch.randn(4, 3)).sum().backward()
    assert net.layers[0].weight.grad is not None


def test_masked_init_scales_with_mask_fan_in() -> None:
    torch.manual_seed(0)
    mask = np.zeros((64, 400), dtype=np.uint8)
    mask[:, :4] = 1
    masked = MaskedLinear(400, 64, mask=mask, init="masked")
    kaiming = MaskedLinear(400, 64, mask=mask, init="kaiming")
    x = torch.randn(1000, 400)
    # With 4 live inputs the masked rule keeps the output scale; nn.Linear's rule shrinks it ~10x.
    with torch.no_grad():
        ratio = masked(x).std() / kaiming(x).std()
        scale = float(masked(x).std())
    assert ratio > 5
    assert 0.5 < scale < 3.0


def test_save_load_round_trip(tmp_path) -> None:
    net = FastStrNN(4, (9, 9), 8, adjacency=np.tril(np.ones((4, 4)), -1), activation="gelu")
    path = tmp_path / "net.pt"
    net.save(path)
    again = load(path)
    x = torch.randn(5, 4)
    torch.testing.assert_close(net(x), again(x), **tolerance("exact"))


def test_moves_dtype_and_keeps_structure() -> None:
    net = FastStrNN(3, (6,), 3, adjacency=np.tril(np.ones((3, 3)), -1)).double().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_cpu_sparse_inference_matches_dense() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    A = np.tril(rng.random((30, 30)) < 0.1, -1)
    net = FastStrNN(30, (90, 90), 60, adjacency=A, activation="gelu", backend="sparse").double().eval()
    dense = FastStrNN(30, (90, 90), 60, adjacency=A, activation="gelu", backend="dense").double().eval()
    dense.load_state_dict(net.state_dict())
    x = torch.randn(3, 17, 30, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), dense(x), **tolerance("float64_kernels"))
        net.layers[0].values.mul_(2.0)  # in-place change of the packed values is seen
        dense.layers[0].weight.mul_(2.0)
        torch.testing.assert_close(net(x), dense(x), **tolerance("float64_kernels"))


def test_rectangular_adjacency_with_several_outputs_per_row() -> None:
    torch.manual_seed(0)
    A = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]])  # 3 outputs of 4 inputs
    net = FastStrNN(4, (10, 10), 6, adjacency=A, activation="tanh").double()
    J = _jacobian(net, torch.randn(4, dtype=torch.float64))
    pattern = torch.from_numpy(np.concatenate([A, A])) == 1
    assert J.shape == (6, 4) and torch.all(J[~pattern] == 0) and torch.all(J[pattern] != 0)
    with pytest.raises(ValueError, match="multiple"):
        FastStrNN(4, (10,), 7, adjacency=A)


def test_memory_limit_refuses_clearly(monkeypatch) -> None:
    import strnn_fast.nn as nn_module

    monkeypatch.setattr(nn_module, "MAX_DENSE_BYTES", 10_000)
    with pytest.raises(ValueError, match=r"hidden_sizes=\(64, 64\).*MAX_DENSE_BYTES"):
        FastStrNN(8, (64, 64), 8, adjacency=np.tril(np.ones((8, 8)), -1), backend="dense")
    FastStrNN(8, (64, 64), 8, adjacency=np.tril(np.ones((8, 8)), -1), backend="sparse")  # packed: allowed
    # "auto" keeps MADE's half-full masks dense: counted once the masks are known.
    with pytest.raises(ValueError, match="backend='auto'"):
        FastStrNN(8, (64, 64), 8, opt_type="made", adjacency=np.tril(np.ones((8, 8)), -1), backend="auto")


def test_update_masks_refactorizes_like_the_reference() -> None:
    A = np.tril(np.ones((5, 5)), -1)
    net = FastStrNN(5, (12,), 5, adjacency=A)
    before = net.masks
    net.layers[0].set_mask(np.ones((12, 5)))
    net.update_masks()
    for a, b in zip(net.masks, before):
        np.testing.assert_array_equal(a, b)
    assert check_masks(net.masks, A)


def test_reorder_keeps_function_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    A = np.tril(np.random.default_rng(2).random((12, 12)) < 0.3, -1)
    plain = FastStrNN(12, (48, 48), 24, adjacency=A, activation="tanh").double()
    torch.manual_seed(0)
    ordered = FastStrNN(12, (48, 48), 24, adjacency=A, activation="tanh", reorder=True).double()
    x = torch.randn(7, 12, dtype=torch.float64)
    torch.testing.assert_close(ordered(x), plain(x), **tolerance("float64_kernels"))
    assert check_masks(ordered.masks[:-1] + [ordered.masks[-1][:, :12]], A)
    ordered.save(tmp_path / "o.pt")
    torch.testing.assert_close(load(tmp_path / "o.pt")(x), ordered(x), **tolerance("exact"))


def test_reordered_model_round_trips_and_update_masks_keeps_the_function(tmp_path) -> None:
    torch.manual_seed(0)
    net = FastStrNN(20, (64, 64), 20, adjacency=np.tril(np.ones((20, 20)), -1), reorder=True).double()
    net.save(tmp_path / "m.pt")
    again = strnn_fast.load(tmp_path / "m.pt")
    x = torch.randn(5, 20, dtype=torch.float64)
    torch.testing.assert_close(again(x), net(x), **tolerance("exact"))
    net.update_masks()  # re-derives the (reordered) masks: the same function
    torch.testing.assert_close(net(x), again(x), **tolerance("exact"))


def _init_weights(backend: str, init: str = "masked", **kw) -> list[torch.Tensor]:
    A = np.tril(np.random.default_rng(3).random((23, 23)) < 0.3, -1).astype(np.uint8)
    torch.manual_seed(1)
    net = FastStrNN(23, (70, 41), 46, adjacency=A, backend=backend, init=init, **kw)
    out = []
    for layer in net.layers:
        out += [layer.dense_weight().detach().clone(), layer.bias.detach().clone()]
    return out


@pytest.mark.parametrize("init", ["masked", "kaiming"])
def test_same_seed_same_initial_weights_on_every_backend(init):
    """The backend is a speed choice only: packed or dense storage, any backend, the same bits."""
    ref = _init_weights("dense", init)
    for backend in ("sparse", "auto", "cpu", "triton"):
        got = _init_weights(backend, init, reorder=False)
        assert all(torch.equal(a, b) for a, b in zip(ref, got)), backend
    # Packing forced either way: the same draws.
    for packed in (True, False):
        torch.manual_seed(1)
        layer = MaskedLinear(37, 29, mask=np.random.default_rng(0).random((29, 37)) < 0.05, packed=packed, init=init)
        torch.manual_seed(1)
        dense = MaskedLinear(37, 29, mask=np.random.default_rng(0).random((29, 37)) < 0.05, packed=False, init=init)
        assert torch.equal(layer.dense_weight(), dense.dense_weight()) and torch.equal(layer.bias, dense.bias)


def test_reordered_initial_weights_are_a_permutation():
    """Block reordering permutes hidden units after the draw: the same numbers, moved."""
    ref, got = _init_weights("dense"), _init_weights("triton", reorder=True)
    for a, b in zip(ref, got):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
