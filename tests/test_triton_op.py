"""The Triton forward as a ``torch.library.triton_op`` (issue 22): what can be checked without a GPU.

* In the interpreter (CPU): the op computes what it computed as a custom op (float64 reference,
  odd shapes, the saved pre-activation of gelu/silu), and torch.export of a triton FastStrNN keeps
  it as one node per layer that runs (interpreted kernels cannot be traced into: the op is opaque).
* Traced for CUDA (a subprocess without the interpreter, fake CUDA tensors, Triton told the
  target is sm_90): torch.export keeps the op, and the decomposition AOTInductor applies turns it
  into the Triton kernel itself (``triton_kernel_wrapper_functional``), writing only y and z.
* Which layers :mod:`strnn_fast.export` traces through the kernels (:func:`export_backend`).

The real AOTInductor package on a GPU is checked by bench/gpu_check.sh (export step).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import _interp  # noqa: F401  (before strnn_fast.kernels: selects the interpreter)
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close

from strnn_fast import FastStrNN
from strnn_fast.activations import ACTIVATIONS
from strnn_fast.backends import export_backend, layout, prepare_export
from strnn_fast.export import export_mode
from strnn_fast.kernels.masked_linear import ACTIVATION_CODES, is_interpreted
from strnn_fast.layout import BlockLayout

interpreted = pytest.mark.skipif(not is_interpreted(), reason="kernels compiled for the GPU; see test_kernels_cuda.py")
# (M, K, N, block): none a multiple of its tile.
SHAPES = [(37, 45, 29, (16, 16)), (1, 70, 33, (16, 32)), (18, 23, 50, (32, 16))]


def test_forward_op_is_a_triton_op():
    from torch._library.triton import triton_ops_to_kernels

    assert "strnn_fast::masked_linear_fwd" in triton_ops_to_kernels


@interpreted
@pytest.mark.parametrize("act", ["identity", "tanh", "gelu", "silu"])
@pytest.mark.parametrize("M, K, N, block", SHAPES)
def test_op_matches_float64(M, K, N, block, act):
    g = torch.Generator().manual_seed(M * K + N)
    mask = torch.rand(N, K, generator=g) < 0.3
    x = torch.randn(M, K, generator=g) + 0.5  # nonzero mean: a dropped tile shows
    w = torch.randn(N, K, generator=g) * mask
    b = torch.randn(N, generator=g)
    lay = BlockLayout.from_mask(mask, block)
    y, z = torch.ops.strnn_fast.masked_linear_fwd(x, w, b, lay.row_ptr, lay.col_idx, lay.row_order, *block,
                                                  ACTIVATION_CODES[act], "ieee")
    ref_z = F.linear(x.double(), w.double(), b.double())
    assert_close(y, ACTIVATIONS[act](ref_z), torch.float32, K)
    if act in ("gelu", "silu"):  # the pre-activation the backward reads
        assert_close(z, ref_z, torch.float32, K)
    else:
        assert z.numel() == 0


@interpreted
def test_cpu_export_keeps_one_op_per_layer():
    """On the CPU the kernels are interpreted, so torch.export keeps the op (opaque); the exported
    program runs it and matches eager at batch sizes other than the example's."""
    torch.manual_seed(0)
    net = FastStrNN(7, (40, 40), 7, adjacency=np.tril(np.ones((7, 7)), -1), activation="gelu", backend="triton").eval()
    for layer in net.layers:
        layout(layer, torch.device("cpu"))  # as prepare_export does on CUDA: not buildable from fake tensors
    with torch.no_grad():
        ep = torch.export.export(net, (torch.randn(3, 7),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        ops = [n for n in ep.graph.nodes if n.target is torch.ops.strnn_fast.masked_linear_fwd.default]
        assert len(ops) == len(net.layers)
        for batch in (1, 19):
            x = torch.randn(batch, 7)
            assert torch.equal(ep.module()(x), net(x))


# Runs without the interpreter: fake CUDA tensors, and Triton's target faked as an H100 (the
# kernel's TTIR is generated to find which arguments it writes; nothing is compiled to a cubin).
_TRACE = textwrap.dedent("""
    import json, sys, torch, triton
    from triton.backends.compiler import GPUTarget
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    import strnn_fast.kernels.masked_linear as ml
    from strnn_fast.layout import BlockLayout

    assert not ml.is_interpreted()
    act, dtype, allow_tf32 = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3] == "1"
    ml._capability = lambda index: 9  # what torch.cuda would answer on an H100

    class H100:
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    triton.runtime.driver.set_active(H100())
    mask = torch.rand(100, 70, generator=torch.Generator().manual_seed(0)) < 0.2
    lay = BlockLayout.from_mask(mask, (64, 64))
    names = ("row_ptr", "col_idx", "row_order", "tile_row", "t_row_ptr", "t_col_idx", "t_row_order")

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.empty(100, 70, dtype=dtype, device="cuda"), requires_grad=False)
            self.b = torch.nn.Parameter(torch.empty(100, dtype=dtype, device="cuda"), requires_grad=False)
            for n in names:
                self.register_buffer(n, torch.empty(getattr(lay, n).shape, dtype=torch.int32, device="cuda"))

        def forward(self, x):
            index = [getattr(self, n) for n in names]
            return ml.MaskedLinearFunction.apply(x, self.w, self.b, None, *index, 64, 64, ml.ACTIVATION_CODES[act],
                                                 ml.precision_of(dtype, True, allow_tf32))

    with FakeTensorMode():
        layer, x = Layer(), torch.empty(8, 70, dtype=dtype, device="cuda")
    with torch.no_grad():
        ep = torch.export.export(layer, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    exported = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    # What AOTInductor does to the exported program before lowering it.
    decomposed = ep.run_decompositions(decompose_custom_triton_ops=True)
    calls = [n for n in decomposed.graph.nodes if n.op == "call_function"]
    hops = [n for n in calls if n.target is torch.ops.higher_order.triton_kernel_wrapper_functional]
    kernel = kernel_side_table.get_kernel(hops[0].kwargs["kernel_idx"]) if hops else None
    print(json.dumps({
        "exported": exported,
        "decomposed": [str(n.target) for n in calls],
        "kernel": getattr(getattr(kernel, "fn", kernel), "__name__", None),
        "clones": hops[0].kwargs["tensors_to_clone"] if hops else None,
        "configs": len(hops[0].kwargs["grid"]) if hops else None,
        "args": {k: str(v) for k, v in hops[0].kwargs["kwargs"].items() if not k.endswith("_ptr")} if hops else None,
    }))
""")


def _trace_for_cuda(act: str, dtype: str, allow_tf32: bool, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "STRNN_FAST_AUTOTUNE")}
    proc = subprocess.run([sys.executable, "-P", "-c", _TRACE, act, dtype, "1" if allow_tf32 else "0"],
                          capture_output=True, text=True, timeout=300, env={**base, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Configs left after pruning for sm_90's 227 KB of shared memory: TF32 drops the 256-row tile (240 KB of
# pipeline buffers), bf16 keeps all 5, tf32x3 only its 2 that do not spill. (~6 s each: one in the default run.)
@pytest.mark.parametrize("act, dtype, allow_tf32, configs", [
    ("gelu", "float32", True, 4),
    pytest.param("relu", "bfloat16", False, 5, marks=pytest.mark.slow),
    pytest.param("tanh", "float32", False, 2, marks=pytest.mark.slow),
])
def test_cuda_trace_decomposes_into_the_kernel(act, dtype, allow_tf32, configs):
    """The exported program holds the op; AOTInductor's decomposition makes it the user Triton
    kernel, autotuned over the configs that fit (tf32x3: the two that do not spill), over a
    symbolic batch, writing only y (and z for gelu/silu; TTIR analysis)."""
    got = _trace_for_cuda(act, dtype, allow_tf32)
    assert "strnn_fast.masked_linear_fwd.default" in got["exported"]
    assert not any(t.startswith("strnn_fast.") for t in got["decomposed"]), got["decomposed"]
    assert got["kernel"] == "_masked_linear_fwd_kernel"
    assert got["clones"] == (["y_ptr", "z_ptr"] if act == "gelu" else ["y_ptr"])  # z: gelu/silu only
    assert got["configs"] == configs
    assert not got["args"]["M"].isdigit() and got["args"]["M_KEY"] == got["args"]["M"]  # the batch stays symbolic
    assert got["args"]["ACT"] == str(ACTIVATION_CODES[act]) and got["args"]["SAVE_Z"] == str(act == "gelu")


@pytest.mark.slow
def test_cuda_trace_with_the_fixed_config():
    """STRNN_FAST_AUTOTUNE=0: one config (num_warps/num_stages given at the launch)."""
    got = _trace_for_cuda("relu", "float16", False, STRNN_FAST_AUTOTUNE="0")
    assert got["kernel"] == "_masked_linear_fwd_kernel" and got["configs"] == 1


CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("backend, packed, on, dtype, expected", [
    ("triton", False, CUDA, torch.float32, "triton"),
    ("sparse", True, CUDA, torch.bfloat16, "triton"),
    ("auto", True, CUDA, torch.float16, "triton"),
    ("auto", False, CUDA, torch.float32, "dense"),  # a dense-stored layer: dense is its CUDA path
    ("dense", False, CUDA, torch.float32, "dense"),
    ("triton", False, CUDA, torch.float64, "dense"),  # no Triton kernels in float64
    ("triton", False, CPU, torch.float32, "dense"),
    ("sparse", True, CPU, torch.float32, "dense"),
])
def test_export_backend(backend, packed, on, dtype, expected):
    assert export_backend(backend, packed, on, dtype) == expected


def test_export_mode_on_the_cpu_stays_dense():
    net = FastStrNN(6, (32,), 6, adjacency=np.tril(np.ones((6, 6)), -1), backend="triton")
    assert prepare_export(net.layers[0]) == "dense"
    with export_mode(net):
        assert {layer.backend for layer in net.layers} == {"dense"}
    assert {layer.backend for layer in net.layers} == {"triton"}
