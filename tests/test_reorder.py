"""Hidden-unit reordering: validity, path counts and the function are kept; tiles never increase."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from strnn_fast import FastStrNN, check_masks, data, factorize, path_counts
from strnn_fast.layout import BlockLayout
from strnn_fast.reorder import (
    permute_layers,
    permute_masks,
    reorder_masks,
    reorder_model,
)


def random_dag(d: int, seed: int) -> np.ndarray:
    """Adjacency with 2-5 parents per node (fewer for the first ones), from the library's generator."""
    return data.random_dag(d, parents=(2, 5), seed=seed).astype(np.uint8)


CASES = [
    ("made", np.tril(np.ones((40, 40), dtype=np.uint8), -1), (120, 120)),
    ("greedy", np.tril(np.ones((40, 40), dtype=np.uint8), -1), (100, 90, 100)),
    ("greedy", random_dag(48, 0), (192, 192)),
    ("zuko", random_dag(33, 1), (70,)),
]


@pytest.mark.parametrize("method, A, hidden", CASES)
@pytest.mark.parametrize("block", [(16, 16), (32, 16)])
def test_reorder_keeps_structure(method, A, hidden, block):
    masks = factorize(A, hidden, method)
    r = reorder_masks(masks, block=block)
    assert check_masks(r.masks, A)
    assert np.array_equal(path_counts(r.masks), path_counts(masks))
    for p, h in zip(r.perms, hidden):
        assert sorted(p.tolist()) == list(range(h))
    # The reported counts agree with layouts built independently from the (out x in) weights.
    for m, before, after in zip(masks, r.tiles_before, r.tiles_after):
        assert BlockLayout.from_mask(m.T, block).nnz == before
    assert tuple(BlockLayout.from_mask(m.T, block).nnz for m in r.masks) == r.tiles_after
    assert sum(r.tiles_after) <= sum(r.tiles_before)
    # Grid sizes from the shapes (each mask is the transposed (out x in) weight, tiled block).
    assert r.tiles_total == tuple(-(-m.shape[1] // block[0]) * -(-m.shape[0] // block[1]) for m in masks)
    assert r.density_after == sum(r.tiles_after) / sum(r.tiles_total)


def test_reorder_helps_on_scattered_units():
    # The greedy factorizer cycles hidden units through the rows of A, scattering equal patterns.
    A = np.tril(np.ones((64, 64), dtype=np.uint8), -1)
    r = reorder_masks(factorize(A, (256, 256)), block=(32, 32))
    assert r.density_after < 0.8 * r.density_before
    assert "identity" not in r.methods


def test_permute_masks_inverse():
    masks = factorize(random_dag(30, 2), (50, 60))
    rng = np.random.default_rng(3)
    perms = [rng.permutation(50), rng.permutation(60)]
    inverse = [np.argsort(p) for p in perms]
    again = permute_masks(permute_masks(masks, perms), inverse)
    assert all(np.array_equal(a, b) for a, b in zip(again, masks))


@pytest.mark.parametrize("nout_factor", [1, 2])
def test_reorder_model_keeps_function(nout_factor):
    torch.manual_seed(0)
    A = random_dag(24, 4)
    net = FastStrNN(24, (96, 96), 24 * nout_factor, adjacency=A, activation="tanh", backend="dense")
    x = torch.randn(7, 24)
    before = net(x).detach()
    r = reorder_model(net, block=(16, 16))
    torch.testing.assert_close(net(x), before, atol=1e-6, rtol=1e-6)
    for layer, m in zip(net.layers, net.masks):
        assert np.array_equal(layer.mask.numpy().T, m)
    assert check_masks(net.masks, np.vstack([A] * nout_factor))
    assert tuple(BlockLayout.from_mask(layer.mask, (16, 16)).nnz for layer in net.layers) == r.tiles_after


def test_permute_layers_moves_weights_with_units():
    torch.manual_seed(1)
    net = FastStrNN(6, (10,), 6, adjacency=random_dag(6, 5), backend="dense")
    w0, b0, w1 = net.layers[0].weight.clone(), net.layers[0].bias.clone(), net.layers[1].weight.clone()
    p = np.arange(10)[::-1].copy()
    permute_layers(net.layers, [p])
    assert torch.equal(net.layers[0].weight, w0[p]) and torch.equal(net.layers[0].bias, b0[p])
    assert torch.equal(net.layers[1].weight, w1[:, p])


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda m: reorder_masks(m, block=16), TypeError),
        (lambda m: reorder_masks(m, block=(0, 16)), ValueError),
        (lambda m: reorder_masks(m, sweeps=-1), ValueError),
        (lambda m: reorder_masks(m, sweeps=1.0), TypeError),
        (lambda m: reorder_masks(m[0]), TypeError),
        (lambda m: reorder_masks([m[0], m[0]]), ValueError),
        (lambda m: permute_masks(m, [np.arange(8)]), ValueError),
        (lambda m: permute_masks(m, [np.zeros(8, dtype=int), np.arange(8)]), ValueError),
        (lambda m: permute_masks(m, [np.arange(8.0), np.arange(8)]), ValueError),
        (lambda m: reorder_model(torch.nn.Linear(2, 2)), TypeError),
    ],
)
def test_bad_input(call, error):
    masks = factorize(np.tril(np.ones((5, 5)), -1), (8, 8))
    with pytest.raises(error):
        call(masks)
