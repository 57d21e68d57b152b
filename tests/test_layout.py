"""Block-CSR layouts: round trip to the tile-level mask, transposed lists, input validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from strnn_fast import _C
from strnn_fast.layout import BlockLayout


def tile_level(mask: np.ndarray, bo: int, bi: int) -> np.ndarray:
    """Independent reference: pad, then OR over each tile, then expand back and crop."""
    r, c = mask.shape
    pad = np.zeros((-(-r // bo) * bo, -(-c // bi) * bi), dtype=bool)
    pad[:r, :c] = mask != 0
    tiles = pad.reshape(pad.shape[0] // bo, bo, pad.shape[1] // bi, bi).any(axis=(1, 3))
    return tiles


@given(
    rows=st.integers(1, 70), cols=st.integers(1, 70), bo=st.integers(1, 33), bi=st.integers(1, 33),
    density=st.floats(0.0, 0.3), seed=st.integers(0, 2**31 - 1),
)
def test_round_trip(rows, cols, bo, bi, density, seed):
    mask = np.random.default_rng(seed).random((rows, cols)) < density
    lay = BlockLayout.from_mask(mask, (bo, bi))
    tiles = tile_level(mask, bo, bi)
    assert np.array_equal(lay.tile_mask(), tiles)
    dense = np.kron(tiles, np.ones((bo, bi), dtype=bool))[:rows, :cols]
    assert np.array_equal(lay.to_dense(), dense)
    assert (lay.to_dense() | ~mask.astype(bool)).all()  # every nonzero lies in a listed tile
    assert lay.nnz == tiles.sum() and lay.density == pytest.approx(tiles.mean())


@given(rows=st.integers(1, 90), cols=st.integers(1, 90), seed=st.integers(0, 2**31 - 1))
def test_index_lists(rows, cols, seed):
    mask = np.random.default_rng(seed).random((rows, cols)) < 0.15
    lay = BlockLayout.from_mask(mask, (16, 32))
    for t in (lay.row_ptr, lay.col_idx, lay.tile_row, lay.t_row_ptr, lay.t_col_idx):
        assert t.dtype == torch.int32
    n_rb, n_cb = lay.grid
    assert (n_rb, n_cb) == (-(-rows // 16), -(-cols // 32))
    rp, ci, tr = lay.row_ptr.numpy(), lay.col_idx.numpy(), lay.tile_row.numpy()
    trp, tci = lay.t_row_ptr.numpy(), lay.t_col_idx.numpy()
    assert rp[0] == 0 and rp[-1] == lay.nnz and (np.diff(rp) >= 0).all()
    assert trp[0] == 0 and trp[-1] == lay.nnz and (np.diff(trp) >= 0).all()
    forward = {(int(r), int(c)) for r, c in zip(tr, ci)}
    assert len(forward) == lay.nnz
    assert all(tr[t] == rb for rb in range(n_rb) for t in range(rp[rb], rp[rb + 1]))
    transposed = {(int(tci[t]), cb) for cb in range(n_cb) for t in range(trp[cb], trp[cb + 1])}
    assert transposed == forward
    for cb in range(n_cb):  # ascending output blocks within each input block
        assert (np.diff(tci[trp[cb]:trp[cb + 1]]) > 0).all()


def test_any_dtype_and_stride():
    base = np.random.default_rng(0).random((37, 45)) < 0.2
    ref = BlockLayout.from_mask(base, (16, 16))
    variants = [
        base.astype(np.float64, order="F"),
        base.astype(np.int16),
        np.stack([base, ~base], axis=2)[:, :, 0],  # strided rows and columns
        np.repeat(base, 2, axis=1)[:, ::2],
        torch.from_numpy(base.astype(np.float32)).t().contiguous().t(),
    ]
    for v in variants:
        lay = BlockLayout.from_mask(v, (16, 16))
        assert torch.equal(lay.col_idx, ref.col_idx) and torch.equal(lay.t_col_idx, ref.t_col_idx)


def test_zero_and_full_masks():
    empty = BlockLayout.from_mask(np.zeros((20, 30)), (16, 16))
    assert empty.nnz == 0 and empty.density == 0.0 and empty.row_ptr.tolist() == [0, 0, 0]
    full = BlockLayout.from_mask(np.ones((20, 30)), (16, 16))
    assert full.nnz == 4 and full.density == 1.0


def test_to_device_keeps_lists():
    lay = BlockLayout.from_mask(np.eye(40), (16, 16))
    moved = lay.to("cpu")
    assert moved.shape == lay.shape and moved.block == lay.block
    assert torch.equal(moved.t_row_ptr, lay.t_row_ptr) and moved.device.type == "cpu"


@pytest.mark.parametrize(
    "mask, block, error",
    [
        (np.ones((2, 2, 2)), (16, 16), ValueError),
        (np.array([[0, 2]]), (16, 16), ValueError),
        (np.array([[0.0, np.nan]]), (16, 16), ValueError),
        (np.zeros((0, 3)), (16, 16), ValueError),
        ("abc", (16, 16), TypeError),
        (np.ones((2, 2)), (0, 16), ValueError),
        (np.ones((2, 2)), (16, 2**20), ValueError),
        (np.ones((2, 2)), (True, 16), TypeError),
        (np.ones((2, 2)), ("16", 16), TypeError),
        (np.ones((2, 2)), 16, TypeError),
    ],
)
def test_bad_input(mask, block, error):
    with pytest.raises(error):
        BlockLayout.from_mask(mask, block)


@pytest.mark.parametrize(
    "args, error",
    [
        (([[1, 0]], 1, 1), TypeError),  # a list, not an array
        ((np.ones((2, 2), dtype=np.complex64), 1, 1), TypeError),
        ((np.ones((2, 2)).astype(">f8"), 1, 1), TypeError),
        ((np.ones((2, 2)), 1.5, 1), TypeError),
        ((np.ones((2, 2)), 1, -1), ValueError),
        ((np.ones((2, 2)), 10**30, 1), ValueError),
    ],
)
def test_core_validates(args, error):
    with pytest.raises(error):
        _C.block_layout(*args)


def test_launch_orders_are_longest_first_permutations() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((70, 90)) < 0.1
    mask[:16] = True  # one full output block: must be launched first
    lay = BlockLayout.from_mask(mask, (16, 16))
    for order, ptr in ((lay.row_order, lay.row_ptr), (lay.t_row_order, lay.t_row_ptr)):
        counts = np.diff(ptr.numpy())
        assert order.dtype == torch.int32
        assert sorted(order.tolist()) == list(range(len(counts)))
        assert (np.diff(counts[order.numpy()]) <= 0).all()
    assert lay.row_order[0] == 0
    moved = lay.to("cpu")
    assert torch.equal(moved.row_order, lay.row_order) and torch.equal(moved.t_row_order, lay.t_row_order)
