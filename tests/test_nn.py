"""FastStrNN: drop-in parity with the reference StrNN, Jacobian structure, caching, init."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tolerances import tolerance

from strnn_fast import FastStrNN, MaskedLinear, check_masks, load, required_width

ref_models = pytest.importorskip("strnn.models.strNN", reason="install strnn==0.2.0 --no-deps")


def _copy_weights_from_reference(ours: FastStrNN, theirs) -> None:
    ref_layers = [m for m in theirs.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for mine, other in zip(ours.layers, ref_layers):
            mine.weight.copy_(other.weight)
            mine.bias.copy_(other.bias)


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


def test_eval_cache_reused_and_invalidated() -> None:
    layer = MaskedLinear(4, 3, mask=np.tril(np.ones((3, 4))))
    layer.eval()
    with torch.no_grad():
        first = layer.masked_weight()
        assert layer.masked_weight() is first
        layer.weight.add_(1.0)
        second = layer.masked_weight()
    assert second is not first
    torch.testing.assert_close(second, layer.weight * layer.mask)
    layer.train()
    assert layer.masked_weight() is not second


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
    net = FastStrNN(30, (90, 90), 60, adjacency=A, activation="gelu").double().eval()
    dense = FastStrNN(30, (90, 90), 60, adjacency=A, activation="gelu", backend="dense").double().eval()
    dense.load_state_dict(net.state_dict())
    x = torch.randn(3, 17, 30, dtype=torch.float64)
    with torch.no_grad():
        assert [layer.resolved_backend(x) for layer in net.layers].count("sparse") >= 1
        torch.testing.assert_close(net(x), dense(x), **tolerance("float64_kernels"))
        net.layers[0].weight.mul_(2.0)  # in-place change invalidates the CSR cache
        dense.layers[0].weight.mul_(2.0)
        torch.testing.assert_close(net(x), dense(x), **tolerance("float64_kernels"))
    net.train()
    assert all(layer.resolved_backend(x) == "dense" for layer in net.layers)


def test_sparse_backend_is_inference_only() -> None:
    net = FastStrNN(3, (6,), 3, adjacency=np.tril(np.ones((3, 3)), -1), backend="sparse")
    with pytest.raises(ValueError, match="inference-only"):
        net(torch.randn(2, 3))
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3)).shape == (2, 3)


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
