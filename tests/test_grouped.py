"""strnn_fast.grouped: a FastStrNN as grouped dense products (the exported form of sparse layers).

Checked against the network itself in float64 at odd shapes, on both branches of its batch
switch, for masks with empty rows and columns, through the per-variable blocks of a conditioner's
layout, and in an exported artifact run without strnn_fast.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from strnn_fast import FastStrNN
from strnn_fast.data.adjacency import random_dag
from strnn_fast.flows import StrAF
from strnn_fast.grouped import DENSE_ABOVE, WASTE, GroupedChain, _buckets, grouped_networks, row_groups
from test_export import _check, _trained


def _net(A, hidden, seed=0, **kw):
    torch.manual_seed(seed)
    net = FastStrNN(A.shape[1], hidden, A.shape[0], adjacency=A, **kw).double()
    return _trained(net, scale=0.3, seed=seed)


def _empty_rows_and_columns():
    A = random_dag(61, parents=(1, 3), seed=3)
    A[:, 5] = 0  # an input nothing reads
    A[7, :] = 0  # an output that reads nothing (its units hold act(bias))
    return A


CASES = {  # every layer grouped; grouped then dense; all dense; grouped with empty rows and columns
    "dag_d83": (lambda: random_dag(83, parents=(1, 3), seed=3), (101, 89)),
    "dag_d37": (lambda: random_dag(37, parents=(1, 3), seed=1), (61, 53)),
    "triangle_d9": (lambda: np.tril(np.ones((9, 9)), -1), (29,)),
    "empty_rows_cols": (_empty_rows_and_columns, (73, 67, 61)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 7, 300])
@pytest.mark.parametrize("up_to", [0, 1 << 20])
def test_chain_equals_network(case, batch, up_to):
    make, hidden = CASES[case]
    net = _net(make(), hidden)
    chain = GroupedChain(net.layers, up_to=up_to)
    x = torch.randn(batch, net.nin, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(chain(x), net(x), rtol=1e-12, atol=1e-12)
        assert chain(x[:, None, :].expand(batch, 2, net.nin)).shape == (batch, 2, net.nout)


@pytest.mark.parametrize("case", ["dag_d83", "empty_rows_cols", "context"])
@pytest.mark.parametrize("batch", [1, 7, 300])
@pytest.mark.parametrize("k", [2, 29])
def test_block_view_equals_the_network(case, batch, k):
    # k outputs per variable (a conditioner's layout): the chain's block_view runs the per-variable
    # last layer (k=2: products summed elementwise; k=29: a bmm, then stacked) and gives the
    # network's block view, over parameter-major, feature-major memory.
    if case == "context":  # [A | A_c] with its rows repeated k times, as StrNNConditioner builds it
        A = np.concatenate([random_dag(41, parents=(1, 3), seed=4), np.eye(41, 5)], axis=1)
        net = _net(np.tile(A, (k, 1)), (233, 199))
        d = 41
    else:  # wide enough hidden layers that the padded blocks do < BLOCKS_BELOW of the dense work
        A = CASES[case][0]()
        torch.manual_seed(0)
        net = _trained(FastStrNN(A.shape[1], (211, 256), k * A.shape[0], adjacency=A).double(), scale=0.3)
        d = A.shape[0]
    chain = GroupedChain(net.layers, blocks=k)
    assert chain.blocks is not None and chain.saves_work
    assert chain.blocks.summed == (k == 2)  # both forms of _Blocks.forward
    x = torch.randn(batch, net.nin, dtype=torch.float64)
    with torch.no_grad():
        got = chain.block_view(x, k)
        torch.testing.assert_close(got, net.block_view(x, k), rtol=1e-12, atol=1e-12)
        assert got.shape == (batch, d, k) and got.permute(2, 1, 0).is_contiguous()
        # another k: the chain's forward, viewed
        torch.testing.assert_close(chain.block_view(x, 1), net.block_view(x, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [1, 7, 300])
@pytest.mark.parametrize("hidden", [(19,), (33, 27)])
def test_block_view_without_blocks_is_feature_major(batch, hidden):
    # Masks too dense for the per-variable blocks (a lower-triangular d=9 with 5 outputs per
    # variable): the layers' own feature-major products give the same (k, d, B) layout.
    A = np.tril(np.ones((9, 9)), -1)
    torch.manual_seed(1)
    net = _trained(FastStrNN(9, hidden, 5 * 9, adjacency=A).double(), scale=0.3)
    chain = GroupedChain(net.layers, blocks=5)
    assert chain.blocks is None and chain.k == 5
    x = torch.randn(batch, 9, dtype=torch.float64)
    with torch.no_grad():
        got = chain.block_view(x, 5)
        torch.testing.assert_close(got, net.block_view(x, 5), rtol=1e-12, atol=1e-12)
    assert got.shape == (batch, 9, 5) and got.permute(2, 1, 0).is_contiguous()


@pytest.mark.parametrize("normalizer", ["affine", "spline", "umnn"])
@pytest.mark.parametrize("batch", [1, 2, 37])
def test_flow_step_on_feature_major_parameters_float64(normalizer, batch):
    # What block_view hands a flow step in an export: (B, d, k) over (k, d, B) memory; the step
    # then runs its normalizer on the transposes: the same values.
    flow = _trained(StrAF(random_dag(13, parents=(1, 2), seed=0), hidden_sizes=(16,), flow_steps=1,
                          normalizer=normalizer).double(), scale=0.3)
    step = flow.steps[0]
    x = torch.randn(batch, 13, dtype=torch.float64)
    with torch.no_grad():
        want = step(x)
        fm = step.conditioner(x).permute(2, 1, 0).clone(memory_format=torch.contiguous_format).permute(2, 1, 0)
        assert fm.stride(0) == 1
        step.conditioner.forward = lambda x, context=None: fm
        got = step(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_blocks_refuse_outputs_that_are_not_k_per_variable():
    net = _net(random_dag(30, parents=(1, 3), seed=0), (64,))  # 30 outputs, each its own row
    with pytest.raises(ValueError, match="not 2 per variable"):
        GroupedChain(net.layers, blocks=2)
    with pytest.raises(ValueError, match="blocks must divide"):
        GroupedChain(net.layers, blocks=7)


def test_cases_cover_grouped_and_dense_layers():
    grouped = {case: [layer.grouped for layer in GroupedChain(_net(make(), hidden).layers).layers]
               for case, (make, hidden) in CASES.items()}
    assert all(grouped["dag_d83"]) and all(grouped["empty_rows_cols"]) and not any(grouped["triangle_d9"])
    assert grouped["dag_d37"][0] and not all(grouped["dag_d37"])


def test_sparse_layers_are_grouped_and_save_work():
    net = _net(random_dag(60, parents=(1, 3), seed=0), (128, 128))
    chain = GroupedChain(net.layers)
    assert chain.saves_work and all(layer.grouped for layer in chain.layers)
    for layer, masked in zip(chain.layers, net.layers):
        padded = sum(getattr(layer, f"w{i}").numel() for i in range(layer.n))
        assert padded < DENSE_ABOVE * masked.out_features * masked.in_features


def test_row_groups_partition_rows_by_pattern():
    rng = np.random.default_rng(0)
    mask = rng.random((40, 13)) < 0.15
    mask[rng.integers(0, 40, 5)] = mask[0]  # repeated patterns
    groups = row_groups(mask)
    rows = np.sort(np.concatenate([r for r, _ in groups]))
    np.testing.assert_array_equal(rows, np.arange(40))
    for r, c in groups:
        np.testing.assert_array_equal(mask[r], np.broadcast_to(np.isin(np.arange(13), c), (len(r), 13)))
    assert len(groups) == len({row.tobytes() for row in mask})


def test_buckets_keep_padding_within_the_waste_bound():
    rng = np.random.default_rng(1)
    mask = rng.random((200, 50)) < rng.uniform(0.01, 0.3, size=(200, 1))
    for bucket in _buckets(row_groups(mask), WASTE):
        R, C = max(len(r) for r, _ in bucket), max(max(len(c), 1) for _, c in bucket)
        kept = sum(len(r) * max(len(c), 1) for r, c in bucket)
        assert len(bucket) == 1 or len(bucket) * R * C <= WASTE * kept


def test_grouped_networks_restores_the_networks():
    flow = StrAF(random_dag(20, parents=(1, 2), seed=0), hidden_sizes=(32,), flow_steps=2)
    _trained(flow)
    x = torch.randn(9, 20)
    with torch.no_grad():
        before = flow.log_prob(x)
        with grouped_networks(flow):
            inside = flow.log_prob(x)
        after = flow.log_prob(x)
    torch.testing.assert_close(inside, before, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, before)
    assert all("forward" not in vars(net) for net in flow.modules() if isinstance(net, FastStrNN))


def test_exported_sparse_flow_runs_grouped_and_dense(tmp_path):
    # A sparse d=150 spline StrAF whose conditioner gives its parameters through the per-variable
    # blocks (feature-major: the flow step's transposed path), at batch 1 and 300 (log_prob: an
    # exported sample runs the flow's level plan, not the networks). This model caught two
    # AOTInductor miscompiles of other layouts (FlowStep.forward).
    torch.manual_seed(7)
    flow = _trained(StrAF(random_dag(150, parents=(1, 3), seed=7), hidden_sizes=(512,), flow_steps=1,
                          normalizer="spline", bins=4))
    conditioner = flow.steps[0].conditioner
    assert GroupedChain(conditioner.net.layers, blocks=conditioner.n_params).blocks is not None
    _check(flow, "log_prob", tmp_path, batches=(1, 300))
    # The package trusts its inputs unless the serving process asks the runtime to check them
    # (README): then wrong widths, dtypes and layouts raise, and batch 1 still runs.
    code = textwrap.dedent("""
        import os, sys, torch
        os.environ["AOTI_RUNTIME_CHECK_INPUTS"] = "1"
        m = torch._inductor.aoti_load_package(sys.argv[1])
        assert m(torch.randn(1, 150)).shape == (1,)
        for bad in (torch.randn(4, 151), torch.randn(4, 149), torch.randn(4, 150, dtype=torch.float64),
                    torch.randn(150, 4).t()):
            try:
                m(bad)
            except RuntimeError as err:
                print("refused:", str(err).strip().splitlines()[-1])
            else:
                raise AssertionError(f"accepted {tuple(bad.shape)} {bad.dtype} {bad.stride()}")
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path / "log_prob.pt2")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("refused:") == 4
