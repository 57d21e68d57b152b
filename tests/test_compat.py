"""strnn_fast.compat against the reference: its own unit tests, ported, and random conformance.

The first block ports the factorizer and check_masks tests of the reference repository
(rgklab/StructuredNNs, test/factorizers/test_factorizers.py, test_greedy.py, test_made.py,
test_zuko.py and the factorization tests of test/models/test_strnn.py; the expected masks are
theirs), run against our compat module instead of ``strnn``.
"""
from __future__ import annotations

import json
import warnings
from unittest.mock import patch
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import tolerance

from strnn_fast import FastStrNN
from strnn_fast.compat import GreedyFactorizer, MADEFactorizer, StrNN, ZukoFactorizer, check_masks

# --- ported from rgklab/StructuredNNs (credit: the StrNN authors) ---

# The reference's adjacencies and expected masks, as 0/1 lists: tests/data/reference_masks.json.
REF = {name: np.array(rows) for name, rows in
       json.loads((Path(__file__).parent / "data" / "reference_masks.json").read_text()).items()}


def _masks(kind: str) -> list[np.ndarray]:
    """The reference's three expected masks of a factorizer ("greedy", "made", "zuko")."""
    return [REF[f"{kind}_mask_{i}"] for i in range(3)]

def test_strnn_check_masks_valid():
    """Valid masks give a positive check (the reference wraps the adjacency in a list)."""
    masks = _masks("greedy")
    assert check_masks(masks, [REF["strnn_adjacency"]]) is True


def test_strnn_check_masks_valid_subopt():
    """Suboptimal but valid masks give a positive check."""
    subopt_mask = REF["greedy_mask_1"].copy()
    subopt_mask[0][0] = 0
    assert check_masks([REF["greedy_mask_0"], subopt_mask, REF["greedy_mask_2"]], [REF["strnn_adjacency"]]) is True


def test_strnn_check_masks_invalid():
    """Invalid masks give a negative check."""
    invalid_mask = REF["greedy_mask_1"].copy()
    invalid_mask[0][1] = 1
    assert check_masks([REF["greedy_mask_0"], invalid_mask, REF["greedy_mask_2"]], [REF["strnn_adjacency"]]) is False


def test_greedy_fac_single_layer():
    """One greedy layer. The reference tests its private _factorize_single_mask_greedy (M1, M2);
    through the public API those are the transposed output and input masks of one hidden layer."""
    masks = GreedyFactorizer(REF["greedy_factor_adjacency"]).factorize([7])
    assert np.all(masks[1].T == REF["greedy_factor_mask_0"])
    assert np.all(masks[0].T == REF["greedy_factor_mask_1"])


@pytest.mark.parametrize(
    "factorizer, adjacency, hidden, expected",
    [(GreedyFactorizer, REF["strnn_adjacency"], [5, 5], _masks("greedy")),
     (MADEFactorizer, REF["made_adjacency"], [4, 4], _masks("made")),
     (ZukoFactorizer, REF["strnn_adjacency"], [4, 4], _masks("zuko"))],
    ids=["greedy", "made", "zuko"],
)
def test_factorizer_masks(factorizer, adjacency, hidden, expected):
    """Multi-layer factorization (the reference's test_greedy_fac, test_strnn_factorization_made/_zuko)."""
    masks = factorizer(adjacency).factorize(hidden)
    assert len(masks) == len(expected)
    for mask, want in zip(masks, expected):
        assert np.all(mask == want)


def test_strnn_empty_adjacency():
    """Non-MADE factorization without an adjacency is refused."""
    with pytest.raises(ValueError):
        StrNN(4, [4, 4], 4, opt_type="greedy", adjacency=None)


def test_strnn_empty_adjacency_made():
    """Without an adjacency, MADE defaults to the full lower triangle."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strnn = StrNN(4, [4, 4], 4, opt_type="MADE", adjacency=None)
    assert np.all(strnn.A == np.tril(np.ones((4, 4)), -1))


def test_strnn_precomputed_erroneous():
    """Incorrect precomputed masks are refused (ValueError here; the reference asserts)."""
    incorrect_masks = [np.ones_like(REF["strnn_adjacency"]), np.ones_like(REF["strnn_adjacency"])]
    with pytest.raises(ValueError):
        StrNN(nin=4, hidden_sizes=[4, 4], nout=4, adjacency=REF["strnn_adjacency"], precomputed_masks=incorrect_masks)


def test_strnn_masks_multiple_outputs():
    """nout a multiple of the adjacency's side tiles the last mask."""
    strnn = StrNN(4, [5, 5], 8, adjacency=REF["strnn_adjacency"])
    assert np.all(strnn.masks[-1] == np.concatenate([REF["greedy_mask_2"]] * 2, axis=1))


def test_strnn_update_masks():
    """update_masks sets the mask of each of the three layers (the reference patches set_mask)."""
    strnn = StrNN(4, [4, 4], 4, adjacency=REF["strnn_adjacency"])
    with patch("strnn_fast.nn.MaskedLinear.set_mask") as mock_method:
        strnn.update_masks()
    assert mock_method.call_count == 3


def test_strnn_update_masks_mismatch_output():
    """update_masks enforces the adjacency's dimensions (the reference raises AssertionError, we ValueError)."""
    strnn = StrNN(4, [4, 4], 4, adjacency=REF["strnn_adjacency"])
    with pytest.raises(ValueError, match="nout=5"):
        strnn.nout = 5
        strnn.update_masks()


def test_strnn_update_masks_multiple():
    """update_masks keeps nout a multiple of the adjacency's side: the last mask tiled."""
    strnn = StrNN(4, [5, 5], 8, adjacency=REF["strnn_adjacency"])
    strnn.update_masks()
    tiled_mask = np.concatenate([REF["greedy_mask_2"]] * 2, axis=1)
    assert np.all(strnn.masks[-1] == tiled_mask)
    assert np.all(strnn.layers[-1].keep_mask("cpu").numpy().T == tiled_mask)


@pytest.mark.parametrize("attr, value", [("nout", 8), ("nin", 5), ("nin", 3)])
def test_update_masks_refuses_sizes_the_layers_or_adjacency_cannot_give(attr, value):
    """A size the adjacency allows but the layers were not built for (nout 8 on a 4-output net), or
    one the adjacency cannot give (nin 5 or 3), is a ValueError naming it; the masks stay as they were."""
    strnn = StrNN(4, [5, 5], 4, adjacency=REF["strnn_adjacency"])
    before = strnn.masks
    setattr(strnn, attr, value)
    with pytest.raises(ValueError, match=f"{attr}={value}"):
        strnn.update_masks()
    assert all(np.array_equal(a, b) for a, b in zip(before, strnn.masks))


@pytest.mark.parametrize(
    "opt_type, hidden, expected",
    [("greedy", [5, 5], _masks("greedy")),
     ("MADE", [4, 4], _masks("made")),
     ("Zuko", [4, 4], _masks("zuko"))],
)
def test_strnn_factorization(opt_type, hidden, expected):
    """StrNN's masks for each opt_type (the reference's test_strnn_factorization_*)."""
    adjacency = REF["made_adjacency"] if opt_type == "MADE" else REF["strnn_adjacency"]
    strnn = StrNN(4, hidden, 4, opt_type=opt_type, adjacency=adjacency)
    for mask, want in zip(strnn.masks, expected):
        assert np.all(mask == want)


# --- ours: the compat module against the installed reference on random inputs ---

ref = pytest.importorskip("strnn.factorizers", reason="install strnn==0.2.0 --no-deps")


def _random_adjacency(rng: np.random.Generator) -> np.ndarray:
    n_out, n_in = int(rng.integers(1, 25)), int(rng.integers(1, 25))
    A = (rng.random((n_out, n_in)) < rng.random()).astype(rng.choice([np.float64, np.int64]))
    if n_out > 2:
        A[rng.integers(n_out)] = 0
    if not A.any():
        A[rng.integers(n_out), rng.integers(n_in)] = 1
    return A


@pytest.mark.parametrize("name", ["GreedyFactorizer", "ZukoFactorizer"])
def test_same_masks_and_dtypes_as_reference(name: str) -> None:
    """Values and dtypes equal the reference's, for wide and for too-narrow layers alike."""
    rng = np.random.default_rng(len(name))
    ours_cls, ref_cls = {"GreedyFactorizer": GreedyFactorizer, "ZukoFactorizer": ZukoFactorizer}[name], getattr(ref, name)
    narrow = 0
    for _ in range(80):
        A = _random_adjacency(rng)
        hidden = [int(h) for h in rng.integers(1, 2 * A.shape[0] + 4, size=rng.integers(1, 4))]
        expected = ref_cls(A).factorize(hidden)
        got = ours_cls(A, {"var_penalty_weight": 0.0}).factorize(hidden)
        assert [m.dtype for m in got] == [m.dtype for m in expected]
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
        assert check_masks(got, A) == ref.check_masks(expected, A)
        narrow += not ref.check_masks(expected, A)
    assert narrow > 0  # the too-narrow case was exercised


@pytest.mark.parametrize("d, hidden", [(3, [3]), (2, [2, 5]), (5, [5]), (7, [20, 9, 7])])
def test_made_same_as_reference(d: int, hidden: list[int]) -> None:
    A = np.tril(np.ones((d, d)), -1)
    expected = ref.MADEFactorizer(A).factorize(hidden)
    got = MADEFactorizer(A).factorize(hidden)
    assert [m.dtype for m in got] == [m.dtype for m in expected]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_made_rejects_other_graphs_at_construction() -> None:
    with pytest.raises(ValueError, match="lower-triangular"):
        MADEFactorizer(REF["strnn_adjacency"])


def test_check_masks_agrees_with_reference_on_broken_masks() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        A = _random_adjacency(rng)
        masks = [m.copy() for m in ref.GreedyFactorizer(A).factorize([A.shape[0] + 2])]
        layer = int(rng.integers(len(masks)))
        i, j = rng.integers(masks[layer].shape[0]), rng.integers(masks[layer].shape[1])
        masks[layer][i, j] = 1 - masks[layer][i, j]
        assert check_masks(masks, A) == ref.check_masks(masks, A)


def test_strnn_defaults_are_the_reference_ones() -> None:
    """Kaiming (nn.Linear) initialization and the reference's opt_args, else FastStrNN itself."""
    A = np.tril(np.ones((5, 5)), -1)
    torch.manual_seed(0)
    ours = StrNN(5, [9, 9], 5, adjacency=A)
    torch.manual_seed(0)
    plain = FastStrNN(5, [9, 9], 5, adjacency=A, init="kaiming")
    assert ours.opt_args == {"var_penalty_weight": 0.0}
    state, other = ours.state_dict(), plain.state_dict()
    assert state.keys() == other.keys()
    for key in state:
        torch.testing.assert_close(state[key], other[key], **tolerance("exact"))
    x = torch.randn(4, 5)
    torch.testing.assert_close(ours(x), plain(x), **tolerance("exact"))
    torch.manual_seed(0)
    masked = FastStrNN(5, [9, 9], 5, adjacency=A)  # our default init differs
    assert any(not torch.equal(state[k], masked.state_dict()[k]) for k in state if k.endswith("weight"))


def test_compat_strnn_saves_and_loads(tmp_path) -> None:
    import strnn_fast
    from strnn_fast.compat import StrNN

    net = StrNN(4, [8], 4, adjacency=np.tril(np.ones((4, 4)), -1))
    net.save(tmp_path / "m.pt")
    again = strnn_fast.load(tmp_path / "m.pt")
    x = torch.randn(3, 4)
    assert type(again) is StrNN and torch.equal(again(x), net(x))
