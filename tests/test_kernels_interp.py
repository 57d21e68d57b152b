"""Triton kernels in the interpreter (CPU, tiny odd shapes): forward, dX, dW, db vs float64.

Run as part of the default suite; on a machine with a GPU these tests skip unless
TRITON_INTERPRET=1 is set, and tests/test_kernels_cuda.py checks the compiled kernels.
"""
from __future__ import annotations

import os
import subprocess
import sys

import _interp  # before strnn_fast.kernels: selects the interpreter
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close

from strnn_fast import FastStrNN
from strnn_fast.activations import ACTIVATIONS
from strnn_fast.backends import layout as layer_layout
from strnn_fast.dispatch import choose_backend, prepare
from strnn_fast.freeze import freeze
from strnn_fast.kernels.masked_linear import is_interpreted, masked_linear
from strnn_fast.layout import BlockLayout
from strnn_fast.reorder import reorder_model

if not is_interpreted() and not _interp.HAS_CUDA:
    raise RuntimeError("strnn_fast.kernels was imported before tests/_interp.py set TRITON_INTERPRET=1")
pytestmark = pytest.mark.skipif(not is_interpreted(), reason="kernels compiled for the GPU; see test_kernels_cuda.py")

DTYPES = [torch.float32, torch.float16]
ACTS = ["identity", "relu", "tanh", "softplus", "elu", "gelu", "silu"]
# (M, K, N, block): none a multiple of its tile; blocks of both orientations.
SHAPES = [(37, 45, 29, (16, 16)), (5, 70, 33, (16, 32)), (18, 23, 50, (32, 16))]


def random_problem(M, K, N, block, dtype, seed, density=0.25):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(N, K, generator=g) < density
    mask[: block[0], block[1]:] = False  # whole tiles of the first output block are empty
    x = torch.randn(M, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) * mask).to(dtype)  # masked at rest: the kernels' contract
    b = torch.randn(N, generator=g).to(dtype)
    return x, w, b, mask, BlockLayout.from_mask(mask, block)


def reference(x, w, b, mask, act, dy):
    """float64 forward and gradients of the same masked layer, from the same rounded inputs."""
    xd, wd, bd = (v.detach().double().requires_grad_() for v in (x, w, b))
    y = ACTIVATIONS[act](F.linear(xd, wd * mask.double(), bd))
    y.backward(dy.double())
    return y.detach(), xd.grad, wd.grad, bd.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("M, K, N, block", SHAPES)
def test_forward_and_gradients(M, K, N, block, act, dtype):
    x, w, b, mask, layout = random_problem(M, K, N, block, dtype, seed=M + K + N)
    assert layout.nnz < layout.grid[0] * layout.grid[1]
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    y = masked_linear(x, w, b, mask, layout, act)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    y.backward(dy)
    ry, rdx, rdw, rdb = reference(x, w, b, mask, act, dy)
    assert y.dtype == dtype and x.grad.dtype == dtype and w.grad.dtype == dtype
    assert_close(y, ry, dtype, K)
    assert_close(x.grad, rdx, dtype, N)
    assert_close(w.grad, rdw, dtype, M)
    assert_close(b.grad, rdb, dtype, M)
    assert not w.grad[~mask].any()  # dW only where the mask is one


def test_batch_dims_and_strided_input():
    x, w, b, mask, layout = random_problem(12, 40, 20, (16, 16), torch.float32, seed=1)
    x3 = x.reshape(3, 4, 40)
    xt = x.t().contiguous().t()  # same values, column-major
    ref = F.linear(x.double(), w.double() * mask.double(), b.double())
    assert_close(masked_linear(x3, w, b, mask, layout), ref.reshape(3, 4, 20), torch.float32, 40)
    assert_close(masked_linear(xt, w, b, mask, layout), ref, torch.float32, 40)
    assert masked_linear(x[:0], w, b, mask, layout).shape == (0, 20)


def test_without_keep_dw_covers_the_layouts_tiles_only():
    x, w, b, mask, layout = random_problem(9, 40, 36, (16, 16), torch.float32, seed=2)
    wm = w.clone().requires_grad_()
    y = masked_linear(x, wm, None, None, layout, "relu")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    y.backward(dy)
    xd, wd = x.double(), w.double().requires_grad_()
    F.relu(F.linear(xd, wd)).backward(dy.double())
    assert_close(y, F.relu(F.linear(xd, wd)), torch.float32, 40)
    tiles = torch.from_numpy(layout.to_dense())
    # Without keep, dW is the full gradient inside the layout's tiles and zero outside them.
    assert_close(wm.grad[tiles], wd.grad[tiles], torch.float32, 9)
    assert not wm.grad[~tiles].any()


def test_empty_rows_and_columns_of_tiles():
    """An output block with no tile gives bias + act only; an input block with none gives dX = 0."""
    x, w, b, mask, _ = random_problem(21, 50, 40, (16, 16), torch.float32, seed=11, density=0.5)
    mask[16:32, :] = False  # output block 1: no tile
    mask[:, 32:48] = False  # input block 2: no tile
    w = w * mask
    layout = BlockLayout.from_mask(mask, (16, 16))
    x.requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    y = masked_linear(x, wg, bg, mask, layout, "tanh")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    y.backward(dy)
    ry, rdx, rdw, rdb = reference(x, w, b, mask, "tanh", dy)
    assert_close(y, ry, torch.float32, 50)
    assert_close(x.grad, rdx, torch.float32, 40)
    assert_close(wg.grad, rdw, torch.float32, 21)
    assert_close(bg.grad, rdb, torch.float32, 21)
    assert not x.grad[:, 32:48].any()


@pytest.mark.parametrize("sm_count", [1, 64])
def test_dw_batch_split_is_exact_and_deterministic(monkeypatch, sm_count):
    """sm_count 64 splits the batch of this few-tile problem into slices (second pass adds
    them in order); 1 keeps one program per tile. Both equal float64, bitwise reproducibly."""
    import strnn_fast.kernels.masked_linear as ml

    monkeypatch.setattr(ml, "_INTERP_SM_COUNT", sm_count)
    x, w, b, mask, layout = random_problem(70, 33, 30, (16, 16), torch.float32, seed=6)
    slices, _ = ml.dw_split(70, layout.nnz, cuda=False, sm_count=sm_count)
    assert (slices > 1) == (sm_count > 1)
    grads = []
    for _ in range(2):
        wg = w.clone().requires_grad_()
        masked_linear(x, wg, b, mask, layout, "elu").backward(torch.ones(70, 30))
        grads.append(wg.grad)
    _, _, rdw, _ = reference(x, w, b, mask, "elu", torch.ones(70, 30))
    assert_close(grads[0], rdw, torch.float32, 70)
    assert torch.equal(grads[0], grads[1])
    assert not grads[0][~mask].any()


def mask_at_rest(net):
    """Checks the kernels' contract: the layers keep their weights zero where the masks are zero."""
    for layer in net.layers:
        assert not layer.dense_weight()[layer.mask == 0].any()
    return net


@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_faststrnn_triton_matches_dense(act, dtype):
    torch.manual_seed(0)
    A = np.tril(np.ones((20, 20)), -1)
    tri = FastStrNN(20, (60, 60), 40, adjacency=A, activation=act, backend="triton").to(dtype)
    # The reference: the same (rounded) weights and inputs in float64.
    dense = FastStrNN(20, (60, 60), 40, adjacency=A, activation=act, backend="dense").double()
    dense.load_state_dict(tri.state_dict())
    x = torch.randn(11, 20).to(dtype)
    x1, x2 = x.clone().requires_grad_(), x.double().requires_grad_()
    y1, y2 = tri(x1), dense(x2)
    y1.sum().backward()
    y2.sum().backward()
    tol = "float32" if dtype == torch.float32 else "float16"
    assert_close(y1, y2, tol, 60)
    assert_close(x1.grad, x2.grad, tol, 60)
    for a, b in zip(tri.parameters(), dense.parameters()):
        # A weight gradient sums 11 rows of signals that went back through 60-wide layers.
        assert_close(a.grad, b.grad, tol, 60)


def test_reordered_triton_model_keeps_outputs():
    torch.manual_seed(1)
    net = mask_at_rest(FastStrNN(24, (80, 80), 24, adjacency=np.tril(np.ones((24, 24)), -1), backend="triton"))
    x = torch.randn(6, 24)
    before = net(x).detach()
    r = reorder_model(net, block=(16, 16))
    assert sum(r.tiles_after) <= sum(r.tiles_before)
    assert layer_layout(net.layers[1], x.device)[0].nnz == r.tiles_after[1]
    assert_close(net(x), before.double(), torch.float32, 80)


def test_layout_cache_follows_the_mask():
    torch.manual_seed(2)
    net = FastStrNN(10, (32,), 10, adjacency=np.tril(np.ones((10, 10)), -1), backend="triton")
    layer = net.layers[0]
    first = layer_layout(layer, torch.device("cpu"))[0]
    assert layer_layout(layer, torch.device("cpu"))[0] is first
    new = torch.zeros_like(layer.mask)
    new[:16, :3] = 1
    layer.set_mask(new)
    with torch.no_grad():
        layer.weight.mul_(new)
    assert layer_layout(layer, torch.device("cpu"))[0].nnz == 1
    x = torch.randn(4, 10)
    ref = F.relu(F.linear(x.double(), layer.weight.double() * new.double(), layer.bias.double()))
    assert_close(layer(x), ref, torch.float32, 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_freeze_matches(dtype):
    torch.manual_seed(3)
    for backend in ("triton", "auto"):
        net = mask_at_rest(FastStrNN(16, (48, 48), 16, adjacency=np.tril(np.ones((16, 16)), -1), backend=backend))
        x = torch.randn(5, 16)
        frozen = freeze(net, dtype=dtype)
        out = frozen(x)
        assert out.dtype == dtype and not out.requires_grad
        assert_close(out, net(x).double(), dtype, 48)


# "sparse": strnn_fast/sparse_ops.py's autograd.Function runs warnings.catch_warnings, which
# Dynamo refuses (torch 2.11 and 2.13); strict, so the mark must go when that is fixed.
SPARSE_BREAKS_GRAPH = pytest.mark.xfail(strict=True, reason="sparse_ops.py: warnings.catch_warnings in autograd.Function")


@pytest.mark.parametrize("backend", ["triton", "auto", "dense", "cpu", pytest.param("sparse", marks=SPARSE_BREAKS_GRAPH)])
def test_compile_fullgraph_traces_the_custom_ops(backend):
    """Every backend traces without a graph break (Dynamo of each supported torch: scripts/check_gpu_stack.sh
    runs this on torch 2.11 too)."""
    torch.manual_seed(4)
    net = FastStrNN(12, (40, 40), 12, adjacency=np.tril(np.ones((12, 12)), -1), activation="silu", backend=backend)
    mask_at_rest(net)
    prepare(net)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = torch.randn(5, 12, requires_grad=True)
    y = compiled(x)
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    net(x2).square().sum().backward()
    assert_close(y, net(x).double(), torch.float32, 40)
    assert_close(x.grad, x2.grad.double(), torch.float32, 40)


def test_choose_backend_on_cpu_is_dense():
    net = FastStrNN(6, (16,), 6, adjacency=np.tril(np.ones((6, 6)), -1))
    assert all(choose_backend(layer, torch.randn(3, layer.in_features)) == "dense" for layer in net.layers)


class _CudaLike:
    """Stands in for a CUDA activation: choose_backend reads only these attributes."""

    is_cuda = True
    requires_grad = False
    dtype = torch.float16
    device = torch.device("cpu")  # where the layout gets built
    shape = (4096, 2048)

    def numel(self) -> int:
        return 4096 * 2048


def test_auto_stays_dense_until_measured(monkeypatch):
    import strnn_fast.dispatch as dispatch

    monkeypatch.setattr(dispatch, "DECISIONS", {})
    mask = np.zeros((2048, 2048), dtype=np.uint8)
    mask[:512, :512] = 1
    layer = FastStrNN(2048, (), 2048, adjacency=mask, backend="auto").layers[0].half()
    assert choose_backend(layer, _CudaLike()) == "dense"  # unmeasured CUDA case: never timed implicitly
    assert not dispatch.DECISIONS
    case = dispatch.make_case((2048, 2048), layer.density(), 4096, torch.float16, "train", "cuda:unknown")
    dispatch.record(case, {"dense": 100.0, "triton": 50.0})  # as a loaded GPU measurement would
    assert choose_backend(layer, _CudaLike()) == "triton"


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda a: {**a, "x": a["x"].bfloat16(), "weight": a["weight"].bfloat16(), "bias": None}, TypeError),
        (lambda a: {**a, "x": a["x"].half()}, TypeError),
        (lambda a: {**a, "x": a["x"][:, :-1]}, ValueError),
        (lambda a: {**a, "bias": a["bias"][:-1]}, ValueError),
        (lambda a: {**a, "keep": a["keep"].float()}, ValueError),
        (lambda a: {**a, "layout": BlockLayout.from_mask(np.ones((5, 5)), (16, 16))}, ValueError),
        (lambda a: {**a, "layout": BlockLayout.from_mask(a["keep"], (8, 16))}, ValueError),
        (lambda a: {**a, "activation": "sigmoid"}, ValueError),
    ],
)
def test_bad_input(change, error):
    x, w, b, mask, layout = random_problem(4, 20, 18, (16, 16), torch.float32, seed=5)
    args = change({"x": x, "weight": w, "bias": b, "keep": mask, "layout": layout, "activation": "relu"})
    with pytest.raises(error):
        masked_linear(**args)


def test_triton_on_cpu_without_interpreter_raises(tmp_path):
    code = (
        "import os, numpy as np, torch\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "from strnn_fast import FastStrNN\n"
        "net = FastStrNN(3, (8,), 3, adjacency=np.tril(np.ones((3, 3)), -1), backend='triton')\n"
        "try:\n    net(torch.randn(2, 3))\nexcept RuntimeError as e:\n    print('RuntimeError:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # cwd=tmp_path: `python -c` puts its cwd first on sys.path, and the repo root holds the
    # source tree, which lacks the compiled _C of a non-editable install.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert "RuntimeError:" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stderr


def test_precision_and_config_rules():
    """fp32 never takes the spilling FMA dot on CUDA; tf32x3 keeps only its non-spilling configs;
    the dW split gives every SM work and keeps slices whole multiples of 256 rows."""
    import strnn_fast.kernels.masked_linear as ml

    assert ml.precision_of(torch.float32, cuda=True, allow_tf32=True) == "tf32"
    assert ml.precision_of(torch.float32, cuda=True, allow_tf32=False) == "tf32x3"
    assert ml.precision_of(torch.bfloat16, cuda=True) == "ieee"
    assert ml.precision_of(torch.float32, cuda=False) == "ieee"
    for kind, configs in ml.CONFIGS.items():
        kept = [c for c in configs if ml.config_fits(kind, c, (64, 64), 4, "tf32x3", 232448)]
        assert kept and set(kept) <= set(ml.TF32X3_CONFIGS[kind])
        assert all(ml.config_fits(kind, c, (64, 64), 2, "ieee", 232448) for c in configs)
    for m, nnz in [(4096, 64), (4096, 1000), (5000, 3), (1, 1), (300, 10)]:
        slices, chunk = ml.dw_split(m, nnz, cuda=True, sm_count=132)
        assert chunk % 256 == 0 and (slices - 1) * chunk < m <= slices * chunk
        assert slices == 1 or nnz * (slices - 1) < 2 * 132
