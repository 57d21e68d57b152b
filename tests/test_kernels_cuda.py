"""Compiled Triton kernels on CUDA at real shapes (run on an H100, without TRITON_INTERPRET):

    STRNN_FAST_AUTOTUNE=0 python -P -m pytest -o addopts= -p no:cacheprovider -m cuda tests/test_kernels_cuda.py

(``bench/gpu_check.sh`` runs it so; STRNN_FAST_AUTOTUNE=0 compiles one config per kernel variant
instead of autotuning every one, which keeps the file under two minutes.)

Skipped without a GPU (the ``cuda`` marker; conftest.py gates it). Kernels are imported inside the tests so that collecting this module on
a CPU machine does not load them before tests/_interp.py selects the interpreter.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close

from strnn_fast import FastStrNN, data
from strnn_fast.activations import ACTIVATIONS
from strnn_fast.layout import BlockLayout

pytestmark = pytest.mark.cuda  # skipped without a GPU by the gate in conftest.py

# dtype name -> (torch dtype, TF32 on); float32 without TF32 runs as tf32x3 (or cuBLAS before Hopper).
# The tests run in priority order (gpu_check.sh cuts them at a time limit): bf16 forward/backward
# correctness, then the other precisions, then compile, frozen and the reordered model.
PRECISIONS = {
    "bfloat16": (torch.bfloat16, False),
    "float16": (torch.float16, False),
    "tf32": (torch.float32, True),
    "float32": (torch.float32, False),
}
# (M, K, N): aligned and odd, batch smaller and larger than a tile row.
SHAPES = [(4096, 1024, 4096), (1000, 1537, 3001), (3, 4096, 1024)]


@pytest.fixture(autouse=True)
def compiled_kernels():
    from strnn_fast.kernels.masked_linear import is_interpreted

    if is_interpreted():
        pytest.skip("kernels were loaded in the interpreter (TRITON_INTERPRET=1); run this file on its own")


def random_dag(d: int, seed: int) -> np.ndarray:
    """Adjacency with 2-5 parents per node (fewer for the first ones), from the library's generator."""
    return data.random_dag(d, parents=(2, 5), seed=seed).astype(np.uint8)


def layer_problem(M, K, N, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    # A banded mask: realistic tile sparsity with ragged tile edges.
    i = torch.arange(N, device="cuda")[:, None] * K // N
    j = torch.arange(K, device="cuda")[None, :]
    mask = ((j <= i) & (j > i - K // 8)) & (torch.rand(N, K, device="cuda", generator=g) < 0.5)
    x = torch.randn(M, K, device="cuda", generator=g).to(dtype)
    w = (torch.randn(N, K, device="cuda", generator=g) / K**0.5 * mask).to(dtype)  # masked at rest
    b = torch.randn(N, device="cuda", generator=g).to(dtype)
    return x, w, b, mask


def check_forward_and_gradients(M, K, N, act, precision):
    """One masked layer's output and gradients against float64 on the same rounded inputs."""
    from strnn_fast.kernels.masked_linear import masked_linear

    dtype, tf32 = PRECISIONS[precision]
    x, w, b, mask = layer_problem(M, K, N, dtype, seed=M + N)
    layout = BlockLayout.from_mask(mask.cpu(), (64, 64)).to("cuda")
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    y = masked_linear(x, w, b, mask, layout, act, allow_tf32=tf32)
    dy = torch.randn_like(y)
    y.backward(dy)
    xd, wd, bd = (v.detach().double().requires_grad_() for v in (x, w, b))
    ref = ACTIVATIONS[act](F.linear(xd, wd * mask.double(), bd))
    ref.backward(dy.double())
    tol = "tf32x3" if precision == "float32" else precision
    assert_close(y, ref, tol, K)
    assert_close(x.grad, xd.grad, tol, N)
    assert_close(w.grad, wd.grad, tol, M)
    assert_close(b.grad, bd.grad, tol, M)
    assert not w.grad[~mask].any()


@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
@pytest.mark.parametrize("M, K, N", SHAPES)
def test_forward_and_gradients_bf16(M, K, N, act):
    check_forward_and_gradients(M, K, N, act, "bfloat16")


@pytest.mark.parametrize("M", [64, 5000])
def test_dw_split_and_direct_paths_agree(M):
    """Few tiles and a long batch take the split dW path (batch slices + ordered reduction);
    many tiles the direct one. Both match float64, and repeated runs are bitwise equal."""
    from strnn_fast.kernels.masked_linear import dw_split, masked_linear

    x, w, b, mask = layer_problem(M, 512, 256, torch.bfloat16, seed=M)
    mask[:, 128:] = False  # few tiles
    w = w * mask
    layout = BlockLayout.from_mask(mask.cpu(), (64, 64)).to("cuda")
    slices, _ = dw_split(M, layout.nnz, cuda=True, sm_count=torch.cuda.get_device_properties(0).multi_processor_count)
    assert (slices > 1) == (M == 5000)
    grads = []
    for _ in range(2):
        wg = w.clone().requires_grad_()
        masked_linear(x, wg, b, mask, layout, "relu").backward(torch.ones(M, 256, device="cuda", dtype=torch.bfloat16))
        grads.append(wg.grad)
    wd = w.double().requires_grad_()
    ACTIVATIONS["relu"](F.linear(x.double(), wd, b.double())).backward(torch.ones(M, 256, device="cuda").double())
    assert_close(grads[0], wd.grad, "bfloat16", M)
    assert torch.equal(grads[0], grads[1])
    assert not grads[0][~mask].any()


@pytest.mark.parametrize("act", ["identity", "relu", "gelu"])
@pytest.mark.parametrize("M, K, N", SHAPES)
@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "bfloat16"])  # outermost: fp16 first
def test_forward_and_gradients(M, K, N, act, precision):
    check_forward_and_gradients(M, K, N, act, precision)


def make_model(backend: str, d: int = 256, dtype=torch.float32) -> FastStrNN:
    torch.manual_seed(0)
    A = random_dag(d, 0)
    net = FastStrNN(d, (4 * d, 4 * d), d, adjacency=A, backend=backend).cuda().to(dtype)
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(layer.mask)  # the kernels' contract: masked at rest
    return net


@pytest.mark.parametrize("backend", ["triton", "auto"])
def test_compile_fullgraph(backend):
    from strnn_fast.dispatch import prepare

    net = make_model(backend)
    prepare(net)
    compiled = torch.compile(net, fullgraph=True)
    x = torch.randn(512, 256, device="cuda", requires_grad=True)
    y = compiled(x)
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    eager = net(x2)
    eager.square().sum().backward()
    assert_close(y, eager.double(), "float32", 1024)
    assert_close(x.grad, x2.grad.double(), "float32", 1024)


@pytest.mark.parametrize("graph_batch", [None, 300])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_frozen_model_matches(dtype, graph_batch):
    import copy

    from strnn_fast.freeze import freeze

    net = make_model("triton")
    frozen = freeze(net, dtype=dtype, cuda_graph_batch=graph_batch)
    # Reference: the original with its weights rounded to `dtype`, evaluated in float64.
    ref_net = copy.deepcopy(net).to(dtype).double()
    for layer in ref_net.layers:
        layer.backend = "dense"
    x = torch.randn(300, 256, device="cuda")
    with torch.no_grad():
        ref = ref_net(x.to(dtype).double())
    name = str(dtype).removeprefix("torch.")
    assert_close(frozen(x), ref, name, 1024)
    assert_close(frozen(x[:17]), ref[:17], name, 1024)  # not the captured batch: eager path


def test_triton_backend_matches_dense_on_reordered_model():
    from strnn_fast.reorder import reorder_model

    net = make_model("triton")
    dense = make_model("dense")
    x = torch.randn(700, 256, device="cuda")
    with torch.no_grad():
        before = dense(x).double()
    r = reorder_model(net, block=(64, 64))
    assert r.density_after <= r.density_before
    with torch.no_grad():
        assert_close(net(x), before, "tf32", 1024)
