"""backend="sparse" trains: CSR SpMM / SDDMM against the dense float64 path, AdamW, reference checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from strnn_fast import FastStrNN, MaskedLinear, load
from strnn_fast.data import random_dag
from strnn_fast.sparse_ops import MaskStructure, scatter_dense

ref_models = pytest.importorskip("strnn.models.strNN", reason="install strnn==0.2.0 --no-deps")


def _mask(out: int, inn: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = (rng.random((out, inn)) < density).astype(np.uint8)
    m[rng.integers(out), :] = 0  # an empty row
    m[:, rng.integers(inn)] = 0  # an empty column
    return m


def _pair(out: int, inn: int, mask: np.ndarray, activation: str) -> tuple[MaskedLinear, MaskedLinear]:
    dense = MaskedLinear(inn, out, mask, activation=activation, backend="dense").double()
    sparse = MaskedLinear(inn, out, mask, activation=activation, backend="sparse").double()
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def _weight_grad(layer: MaskedLinear) -> torch.Tensor:
    """The (out, in) weight gradient, scattered from the values' gradient when packed."""
    if layer.packed:
        return scatter_dense(layer.values.grad, layer.csr())
    return layer.weight.grad


@pytest.mark.parametrize("shape", [(13, 7), (31, 45), (64, 3)])
@pytest.mark.parametrize("activation", ["identity", "tanh", "gelu"])
@pytest.mark.parametrize("lead", [(17,), (3, 5)])
def test_sparse_matches_dense_float64(shape, activation, lead) -> None:
    torch.manual_seed(0)
    out, inn = shape
    mask = _mask(out, inn, 0.3, seed=out * inn)
    dense, sparse = _pair(out, inn, mask, activation)
    assert sparse.packed and not dense.packed
    x = torch.randn(*lead, inn, dtype=torch.float64)
    up = torch.randn(*lead, out, dtype=torch.float64)  # a random upstream gradient
    grads = []
    for layer in (dense, sparse):
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * up).sum().backward()
        grads.append((y.detach(), xi.grad, _weight_grad(layer), layer.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    # Gradients of masked-out weights are exactly zero (the dense path restricts them to the mask).
    assert torch.all(grads[0][2][torch.from_numpy(mask) == 0] == 0)


def test_dense_storage_runs_the_sparse_kernels_with_the_same_gradients() -> None:
    torch.manual_seed(1)
    mask = _mask(23, 19, 0.2, seed=3)
    layer = MaskedLinear(19, 23, mask, activation="silu", backend="dense").double()
    x = torch.randn(11, 19, dtype=torch.float64)
    outs = []
    for backend in ("dense", "sparse", "cpu"):
        layer.zero_grad(set_to_none=True)
        y = layer.run_backend(backend, x)
        y.square().sum().backward()
        outs.append((y.detach(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_scipy_mask_stays_sparse_and_matches_the_dense_mask() -> None:
    mask = _mask(40, 30, 0.1, seed=5)
    torch.manual_seed(0)
    a = MaskedLinear(30, 40, sp.csr_array(mask), backend="sparse")
    torch.manual_seed(0)
    b = MaskedLinear(30, 40, mask, backend="sparse")
    assert torch.equal(a.crow_indices, b.crow_indices) and torch.equal(a.col_indices, b.col_indices)
    np.testing.assert_array_equal(a.mask.numpy(), mask)
    dense = MaskedLinear(30, 40, sp.coo_array(mask), backend="dense")
    np.testing.assert_array_equal(dense.mask.numpy(), mask)
    with pytest.raises(ValueError, match="shape"):
        MaskedLinear(30, 41, sp.csr_array(mask))
    with pytest.raises(ValueError, match="binary"):
        MaskedLinear(30, 40, sp.csr_array(mask * 2))


def test_structure_transpose_is_consistent() -> None:
    mask = _mask(9, 14, 0.4, seed=7)
    s = MaskStructure.from_dense(mask)
    values = torch.randn(s.nnz, dtype=torch.float64)
    w = scatter_dense(values, s)
    assert torch.equal(s.csr(values).to_dense(), w)
    assert torch.equal(s.csr_t(values).to_dense(), w.T)
    assert torch.equal(MaskStructure.from_scipy(sp.csr_array(mask)).flat, s.flat)


def test_adamw_steps_give_the_same_model() -> None:
    torch.manual_seed(0)
    A = np.tril(np.random.default_rng(0).random((15, 15)) < 0.3, -1)
    dense = FastStrNN(15, (37, 41), 30, adjacency=A, activation="tanh", backend="dense")
    sparse = FastStrNN(15, (37, 41), 30, adjacency=A, activation="tanh", backend="sparse")
    sparse.load_state_dict(dense.state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1) for m in (dense, sparse)]
    x = torch.randn(64, 15)
    for _ in range(5):
        for model, opt in zip((dense, sparse), opts):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(dense.layers, sparse.layers):
        torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(a.bias, b.bias, rtol=0, atol=1e-6)
        off = a.mask == 0
        assert torch.all(a.weight[off] == 0)  # masked-out weights never move, decay included
        assert torch.all(b.weight[off] == 0)
        assert a.weight[~off].ne(0).all()


def _reference_model(d: int, k: int, activation: str) -> tuple[object, np.ndarray]:
    A = np.tril(np.random.default_rng(3).random((d, d)) < 0.4, -1).astype(float)
    torch.manual_seed(4)
    return ref_models.StrNN(d, (19, 23), k * d, adjacency=A, activation=activation).double(), A


@pytest.mark.parametrize("backend", ["auto", "dense", "sparse", "cpu"])
@pytest.mark.parametrize("k", [1, 2])
def test_loads_a_reference_checkpoint(backend: str, k: int) -> None:
    theirs, A = _reference_model(9, k, "tanh")
    ours = FastStrNN(9, (19, 23), k * 9, adjacency=A, activation="tanh", backend=backend).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(21, 9, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=0, atol=1e-6)
    # The reference's unmasked weights were masked on the way in.
    for layer in ours.layers:
        assert torch.all(layer.weight[layer.mask == 0] == 0)


@pytest.mark.parametrize("src, dst", [("dense", "sparse"), ("sparse", "dense"), ("sparse", "sparse")])
def test_own_checkpoints_load_across_storages(src: str, dst: str, tmp_path) -> None:
    A = np.tril(np.ones((6, 6)), -1)
    a = FastStrNN(6, (14,), 12, adjacency=A, backend=src).double()
    b = FastStrNN(6, (14,), 12, adjacency=A, backend=dst).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-12)
    a.save(tmp_path / "a.pt")
    torch.testing.assert_close(load(tmp_path / "a.pt")(x), a(x), rtol=0, atol=0)


def test_bad_checkpoints_are_reported() -> None:
    net = FastStrNN(4, (8,), 4, adjacency=np.tril(np.ones((4, 4)), -1), backend="sparse")
    state = net.state_dict()
    state["layers.0.values"] = state["layers.0.values"][:-1]
    with pytest.raises(RuntimeError, match="values must have shape"):
        net.load_state_dict(state)
    state = net.state_dict()
    del state["layers.1.bias"]
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(state)


def test_jacobian_structure_after_sparse_training() -> None:
    torch.manual_seed(0)
    A = random_dag(11, parents=(1, 3), seed=8, ordered=False)
    net = FastStrNN(11, (40, 40), 11, adjacency=A, activation="tanh", backend="sparse").double()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.01)
    x = torch.randn(128, 11, dtype=torch.float64)
    for _ in range(20):
        opt.zero_grad()
        (net(x) - x.roll(1, 1)).square().mean().backward()
        opt.step()
    v = torch.randn(11, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda u: net(u.unsqueeze(0)).squeeze(0), v)
    assert torch.all(J[torch.from_numpy(A) == 0] == 0)
    assert torch.all(J[torch.from_numpy(A) == 1] != 0)


def test_packed_parameters_grow_with_the_nonzeros() -> None:
    mask = np.zeros((3000, 2000), dtype=np.uint8)
    mask[np.arange(3000), np.arange(3000) % 2000] = 1
    layer = MaskedLinear(2000, 3000, mask, backend="sparse")
    assert [tuple(p.shape) for p in layer.parameters()] == [(3000,), (3000,)]
    assert sum(b.numel() for b in layer.buffers()) == 3001 + 3000
    x = torch.randn(4, 2000)
    layer(x).sum().backward()
    assert layer.values.grad.shape == (3000,)


def test_scipy_precomputed_masks_give_the_dense_model() -> None:
    from strnn_fast import factorize

    A = np.tril(np.random.default_rng(2).random((8, 8)) < 0.4, -1).astype(np.uint8)
    masks = factorize(A, (20, 20), "greedy")
    a = FastStrNN(8, (20, 20), 16, adjacency=A, precomputed_masks=[sp.csr_array(m) for m in masks], backend="sparse")
    b = FastStrNN(8, (20, 20), 16, adjacency=A, precomputed_masks=masks, backend="dense")
    for x, y in zip(a.masks, b.masks):
        np.testing.assert_array_equal(x, y)
    b.load_state_dict(a.state_dict())
    v = torch.randn(3, 8)
    torch.testing.assert_close(a(v), b(v), rtol=0, atol=1e-6)
    bad = [sp.csr_array(m) for m in masks]
    bad[0] = sp.csr_array(np.ones_like(masks[0]))
    with pytest.raises(ValueError, match="sparsity pattern"):
        FastStrNN(8, (20, 20), 8, adjacency=A, precomputed_masks=bad)


def test_reorder_permutes_packed_layers_like_dense_ones() -> None:
    from strnn_fast.reorder import reorder_model

    A = np.tril(np.random.default_rng(6).random((10, 10)) < 0.3, -1)
    dense = FastStrNN(10, (40, 40), 20, adjacency=A, activation="tanh", backend="dense").double()
    sparse = FastStrNN(10, (40, 40), 20, adjacency=A, activation="tanh", backend="sparse").double()
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(6, 10, dtype=torch.float64)
    before = dense(x).detach()
    r1, r2 = reorder_model(dense, block=(8, 8)), reorder_model(sparse, block=(8, 8))
    assert [p.tolist() for p in r1.perms] == [p.tolist() for p in r2.perms]
    for a, b in zip(dense.layers, sparse.layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.mask, b.mask) and torch.equal(a.bias, b.bias)
    torch.testing.assert_close(sparse(x), before, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(7, 9), (331, 401)])  # masked by a multiply; by the autograd Function
@pytest.mark.parametrize("functorch", [False, True])
def test_second_order_weight_gradients_stay_on_the_mask(functorch: bool, shape: tuple[int, int]) -> None:
    # A loss made of input gradients (a CNF's divergence, a gradient penalty) must give the weight
    # the gradient of F.linear(x, W * M): a hand-written backward of the whole map once left the
    # second-order part unmasked, which moved masked-out weights off zero and broke StrCNF training.
    from strnn_fast.dense_ops import SMALL_WEIGHT, masked_dense_linear

    out, inn = shape
    assert (out * inn <= SMALL_WEIGHT) == (shape == (7, 9))
    torch.manual_seed(0)
    mask = (torch.rand(out, inn) < 0.5).double()
    w = (torch.randn(out, inn, dtype=torch.float64) * mask).requires_grad_()
    b = torch.randn(out, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, inn, dtype=torch.float64, requires_grad=True)

    def penalty(fn):
        if functorch:
            gx = torch.func.vmap(torch.func.grad(lambda r: torch.tanh(fn(r)).sum()))(x)
        else:
            gx, = torch.autograd.grad(torch.tanh(fn(x)).sum(), x, create_graph=True)
        return torch.autograd.grad((gx ** 2).sum(), (w, b))

    ours = penalty(lambda r: masked_dense_linear(r, w, b, mask))
    ref = penalty(lambda r: F.linear(r, w * mask, b))
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    assert not ours[0][mask == 0].any()
