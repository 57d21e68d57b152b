"""The C++ CSR kernels (backend="cpu", strnn_fast/csr_ops.py): against a float64 dense reference.

Forward, dX, dW, db and second order at odd shapes, empty rows and columns, every layout of x,
batch 0 and 1; determinism across thread counts; NaN/inf as in dense; torch.compile; bad input.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close, tolerance

from strnn_fast import FastStrNN, _C, backends
from strnn_fast.activations import ACTIVATIONS
from strnn_fast.csr_ops import csr_linear
from strnn_fast.sparse_ops import MaskStructure, scatter_dense

SHAPES = [(1, 1), (7, 13), (129, 257), (64, 64), (3, 200)]
# Around the kernels' 64-column batch blocks: narrow blocks (< 16 columns, read in place), padded
# partial blocks, and a narrow tail after full blocks.
BATCHES = [0, 1, 3, 20, 65, 81, 1000]


def _case(out: int, inn: int, density: float, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(out, inn, generator=gen) < density
    if out > 2 and inn > 2:  # an empty row and an empty column
        mask[out // 2] = False
        mask[:, inn // 2] = False
    s = MaskStructure.from_dense(mask)
    values = torch.randn(s.nnz, generator=gen, dtype=dtype)
    bias = torch.randn(out, generator=gen, dtype=dtype)
    return s, values, bias


def _dense(x, values, bias, s, activation):
    return ACTIVATIONS[activation](F.linear(x, scatter_dense(values, s), bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [3001, 4096])
def test_large_outputs_match_dense(dtype, batch):
    # Outputs from 2 MiB up come from the kernel's own huge-page allocation, freed with the tensor;
    # dX (through the transposed pattern) is such an output too. At 4096 they are padded, and the
    # operands are larger than L2 (the kernels fetch the next block ahead).
    s, values, bias = _case(300, 257, 0.05, seed=11, dtype=dtype)
    x = torch.randn(batch, 257, dtype=dtype, requires_grad=True)
    for _ in range(3):  # allocated and freed again
        y = csr_linear(x, values, bias, s, "relu")
        assert y.numel() * y.element_size() >= 2 << 20
        # read in place (feature-major, fetched ahead where larger than L2): the same sums, the same bits
        assert torch.equal(csr_linear(x.detach().T.contiguous().T, values, bias, s, "relu"), y.detach())
        ref = _dense(x.double(), values.double(), bias.double(), s, "relu")
        assert_close(y.double(), ref, "float64_kernels" if dtype == torch.float64 else "float32",
                     reduce_dim=257)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        # relu's derivative where the output is positive, as torch takes it: an output within float32
        # rounding of 0 (e.g. 0 here, 3.0e-7 in float64) may take either mask (1-2% of float32 calls)
        gx_ref = (y.detach() > 0).double() @ scatter_dense(values.double(), s)
        assert_close(gx.double(), gx_ref, "float64_kernels" if dtype == torch.float64 else "float32",
                     reduce_dim=300)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_forward_and_gradients_match_dense_float64(shape, density):
    out, inn = shape
    s, values, bias = _case(out, inn, density, seed=out * 1000 + inn)
    for batch in BATCHES:
        for activation in ("identity", "relu", "tanh"):
            x = torch.randn(batch, inn, dtype=torch.float64)
            leaves = [t.clone().requires_grad_() for t in (x, values, bias)]
            ref = [t.clone().requires_grad_() for t in (x, values, bias)]
            y = csr_linear(*leaves[:2], leaves[2], s, activation)
            y_ref = _dense(*ref[:2], ref[2], s, activation)
            assert_close(y, y_ref, "float64_kernels")
            g = torch.randn_like(y_ref)
            grads = torch.autograd.grad(y, leaves, g, allow_unused=True)
            grads_ref = torch.autograd.grad(y_ref, ref, g, allow_unused=True)
            for got, want in zip(grads, grads_ref):
                assert_close(got, want, "float64_kernels", reduce_dim=max(batch, inn, out))
            with torch.no_grad():  # the fused inference path
                assert_close(csr_linear(x, values, bias, s, activation), y_ref.detach(), "float64_kernels")


def test_second_order_gradients_match_dense():
    """Gradients of gradients (gradient penalties, exact divergences) are exact: gradcheck and gradgradcheck."""
    s, values, bias = _case(7, 11, 0.4, seed=3)
    x = torch.randn(5, 11, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_() for t in (x, values, bias))
    for activation in ("tanh", "softplus", "relu"):
        def f(x, v, b, act=activation):
            return csr_linear(x, v, b, s, act)
        assert torch.autograd.gradcheck(f, inputs)
        assert torch.autograd.gradgradcheck(f, inputs)
    # The penalty ||dy/dx||^2 differentiated in the values, against dense.
    def penalty(fn, x, v, b):
        y = fn(x, v, b)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), v)[0]
    ours = penalty(lambda x, v, b: csr_linear(x, v, b, s, "tanh"), *inputs)
    ref = penalty(lambda x, v, b: _dense(x, v, b, s, "tanh"), *inputs)
    assert_close(ours, ref, "float64_kernels", reduce_dim=11)


@pytest.mark.parametrize("layout", ["row-major", "column-major", "padded-rows", "padded-columns", "strided", "3-d"])
def test_any_input_layout(layout):
    s, values, bias = _case(17, 23, 0.2, seed=5)
    base = torch.randn(40, 46, dtype=torch.float64)
    x = {"row-major": base[:, :23].contiguous(), "column-major": torch.randn(23, 40, dtype=torch.float64).T,
         "padded-rows": base[:, :23], "padded-columns": base.T[:23, :40].T,
         "strided": base[:, ::2], "3-d": base[:, :23].contiguous().reshape(4, 10, 23)}[layout]
    before = base.clone()
    assert_close(csr_linear(x, values, bias, s, "relu"), _dense(x, values, bias, s, "relu"), "float64_kernels")
    assert torch.equal(base, before)  # the input and what lies around it (the padding) untouched


def test_float32_matches_the_float64_reference():
    s, values, bias = _case(129, 257, 0.03, seed=7)
    x = torch.randn(300, 257, dtype=torch.float64)
    y = csr_linear(x.float(), values.float(), bias.float(), s, "relu")
    assert y.dtype == torch.float32
    assert_close(y, _dense(x, values, bias, s, "relu"), torch.float32, reduce_dim=257)


# (300, 40) and (40, 300): the backward's one-sweep paths (a small input or output block, the other large)
# (4500, 90): an output block beyond 1 MiB, g's rows read in place and masked in one sweep
@pytest.mark.parametrize("shape", [(300, 400), (300, 40), (40, 300), (4500, 90)])
def test_the_same_bits_for_any_thread_count(shape):
    s, values, bias = _case(*shape, 0.05, seed=9, dtype=torch.float32)
    x = torch.randn(777, shape[1]).requires_grad_()
    v = values.clone().requires_grad_()
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y = csr_linear(x, v, bias, s, "relu")
            gx, gv = torch.autograd.grad(y, (x, v), torch.ones_like(y))
            with torch.no_grad():
                y0 = csr_linear(x, v, bias, s, "relu")
            results.append((y, gx, gv, y0))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


# (300, 40): a 256-row tile then a partial one; (3, 200): fewer rows than a tile; (4500, 90): the
# output rows split in tiles, x's next block fetched ahead in tile shares where larger than L2
@pytest.mark.parametrize("shape", [(300, 40), (3, 200), (129, 257), (4500, 90)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_row_major_output_has_the_column_major_bits(shape, dtype):
    """row_major=True (a network's last layer): a C-contiguous output, the same sums in the same
    order as the column-major one (the same bits), for every input layout, batch block shape,
    relu and thread count; its gradients match dense."""
    out, inn = shape
    s, values, bias = _case(out, inn, 0.05, seed=13, dtype=dtype)
    before = torch.get_num_threads()
    try:
        for threads, batch, layout, activation in [(1, 1, "row", "relu"), (1, 5, "col", "identity"),
                                                   (2, 20, "row", "relu"), (1, 64, "padded", "relu"),
                                                   (2, 81, "col", "tanh"), (1, 1000, "row", "identity"),
                                                   (2, 1024, "padded", "relu"), (1, 0, "row", "relu")]:
            torch.set_num_threads(threads)
            x = torch.randn(batch, inn, dtype=dtype)
            if layout != "row":
                x = (torch.randn(inn, batch + (16 if layout == "padded" else 0), dtype=dtype)[:, :batch]).T
            with torch.no_grad():
                y_col = csr_linear(x, values, bias, s, activation)
                y_row = csr_linear(x, values, bias, s, activation, row_major=True)
            assert y_row.is_contiguous() and y_row.shape == (batch, out)
            assert torch.equal(y_row, y_col), (threads, batch, layout, activation)
            leaves = [t.clone().requires_grad_() for t in (x, values, bias)]
            y = csr_linear(*leaves, s, activation, row_major=True)
            assert y.is_contiguous() and torch.equal(y.detach(), y_col)
            ref = [t.detach().double().requires_grad_() for t in (x, values, bias)]
            # relu's derivative taken where our output is positive (as torch's, from the output): a
            # float32 output within rounding of 0 may take either mask
            y_ref = _dense(*ref, s, "identity") * (y.detach() > 0) if activation == "relu" else _dense(*ref, s, activation)
            g = torch.randn_like(y_ref)
            for got, want in zip(torch.autograd.grad(y, leaves, g.to(dtype)), torch.autograd.grad(y_ref, ref, g)):
                assert_close(got.double(), want, "float64_kernels" if dtype == torch.float64 else "float32",
                             reduce_dim=max(batch, inn, out))
    finally:
        torch.set_num_threads(before)


def test_nan_and_inf_reach_exactly_the_outputs_that_read_them():
    """As in dense for every output that reads the bad input; an output the mask keeps away from
    it stays finite (dense would spread NaN through the masked-out zeros: 0 * NaN)."""
    s, values, bias = _case(9, 9, 0.5, seed=11)
    x = torch.randn(6, 9, dtype=torch.float64)
    x[1, :] = float("nan")
    x[2, 3] = float("inf")
    reads = s.dense(torch.float64)  # (out, in): which inputs each output reads
    for activation in ("identity", "relu"):
        with torch.no_grad():
            got = csr_linear(x, values, bias, s, activation)
            finite = _dense(torch.nan_to_num(x, nan=0.0, posinf=0.0), values, bias, s, activation)
        bad = (x.isnan() | x.isinf()).double() @ reads.T > 0
        assert torch.equal(~torch.isfinite(got), bad)
        torch.testing.assert_close(got[~bad], finite[~bad], **tolerance("float64_kernels"))
        # Where the bad value is read, the result is what dense gives there.
        want = _dense(x, values, bias, s, activation)
        torch.testing.assert_close(got[bad], want[bad], equal_nan=True, **tolerance("float64_kernels"))


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_bad_input_is_refused_with_named_errors(grad):
    s, values, bias = _case(4, 5, 0.5, seed=1, dtype=torch.float32)
    with torch.set_grad_enabled(grad):  # no_grad goes straight to the kernel, then re-diagnoses
        with pytest.raises(ValueError, match="x must have shape"):
            csr_linear(torch.randn(2, 4), values, bias, s)
        with pytest.raises(TypeError, match="float32/float64"):
            csr_linear(torch.randn(2, 5, dtype=torch.float16), values.half(), bias.half(), s)
        with pytest.raises(TypeError, match="dtype"):
            csr_linear(torch.randn(2, 5, dtype=torch.float64), values, bias, s)
        with pytest.raises(TypeError, match="bias must have"):
            csr_linear(torch.randn(2, 5), values, bias.double(), s)
        with pytest.raises(ValueError, match="values must have shape"):
            csr_linear(torch.randn(2, 5), values[:-1], bias, s)
        with pytest.raises(ValueError, match="bias must have shape"):
            csr_linear(torch.randn(2, 5), values, bias[:-1], s)
        with pytest.raises(TypeError, match="torch.Tensor"):
            csr_linear(np.zeros((2, 5), np.float32), values, bias, s)
    # The C++ layer checks what it receives: no input makes it crash.
    xt = np.zeros((5, 3), np.float32)
    yt = np.zeros((4, 3), np.float32)
    crow, col = s.crow.numpy(), s.col.numpy()
    bad = [dict(col=col + 100), dict(crow=crow[::-1].copy()), dict(crow=crow[:-1].copy()), dict(yt=np.zeros((4, 2), np.float32)),
           dict(xt=xt.astype(np.float64)), dict(col=col.astype(np.int32))]
    for change in bad:
        args = dict(xt=xt, values=values.numpy(), crow=crow, col=col, bias=None, relu=False, yt=yt)
        args.update(change)
        with pytest.raises(ValueError):
            _C.csr_spmm(**args)
    with pytest.raises(ValueError):
        _C.csr_sddmm(np.zeros((4, 3), np.float32), xt, crow, col + 100, np.zeros(s.nnz, np.float32))
    x = np.zeros((3, 5), np.float32)
    pattern = _C.CsrPattern(crow, col, 5)
    dense = np.zeros(4 * 5, np.float32)
    for bad_call in (dict(x=np.zeros((3, 10), np.float32)[:, ::2]), dict(x=x.astype(np.float64)),
                     dict(values=dense, flat=s.flat.numpy() + 100), dict(values=dense[:-1].copy(), flat=s.flat.numpy()),
                     dict(flat=s.flat.numpy()[:-1].copy())):
        args = dict(x=x, values=values.numpy(), bias=None, relu=False)
        args.update(bad_call)
        with pytest.raises(ValueError):
            pattern.linear(**args)


def _laid_out(t: torch.Tensor, column_major: bool, pad: int) -> torch.Tensor:
    """t's values row- or column-major, the rows (columns) `pad` elements longer than t's."""
    b, n = t.shape
    out = torch.full((n, b + pad), float("nan"), dtype=t.dtype)[:, :b].T if column_major \
        else torch.full((b, n + pad), float("nan"), dtype=t.dtype)[:, :n]
    return out.copy_(t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layouts", ["feature-major", "batch-major", "mixed", "padded"])
@pytest.mark.parametrize("batch", [20, 70, 1024])
@pytest.mark.parametrize("shape", [(13, 30), (100, 30), (30, 100), (4500, 90)],
                         ids=["separate", "sweep-rows", "sweep-columns", "beyond-l2"])
def test_the_one_call_backward_matches_dense(dtype, layouts, batch, shape):
    """_C.CsrPattern.backward: dx, dv, db of act(x W^T + b) in one call, relu's mask included, any layout
    of g, x and y (padded ones too, NaN in the padding); NaN in y passes the gradient (as torch's
    relu backward), -0.0 and 0 do not. Batches: below one 64-column block, blocks with a partial
    tail, and one whose outputs come padded. Shapes: both blocks small (three passes a block), a
    small input block (one sweep over g's rows), a small output block (one over x's rows), an output
    block larger than 1 MiB (feature-major g and y: one sweep over g's rows read in place, masked
    there)."""
    out, inn = shape
    s, values, bias = _case(out, inn, 0.3, seed=12, dtype=dtype)
    x = torch.randn(batch, inn, dtype=dtype)
    g = torch.randn(batch, out, dtype=dtype)
    y = torch.randn(batch, out, dtype=dtype)
    y[0, 0], y[1, 1], y[2, 2] = float("nan"), 0.0, -0.0
    col = {"feature-major": True, "batch-major": False, "mixed": None, "padded": None}[layouts]
    pad = 3 if layouts == "padded" else 0
    g_, x_, y_ = (_laid_out(t, col if col is not None else i % 2 == 1, pad) for i, t in enumerate((g, x, y)))
    pattern = _pattern(s)
    w = scatter_dense(values, s).double()
    gm = g.double() * (y <= 0).logical_not().double()
    for relu in (False, True):
        gg = gm if relu else g.double()
        dx, dv, db = pattern.backward(g_.numpy(), x_.numpy(), values.numpy(), y_.numpy() if relu else None,
                                      True, True, True, 1)
        assert_close(torch.from_numpy(dx), (gg @ w).to(dtype), dtype, reduce_dim=out)  # sums over the rows
        dw = gg.T @ x.double()
        assert_close(torch.from_numpy(dv), dw[s.dense(torch.bool)].to(dtype), dtype, reduce_dim=batch)
        assert_close(torch.from_numpy(db), gg.sum(0).to(dtype), dtype, reduce_dim=batch)
        # column-major, padded as the forward's outputs
        assert torch.from_numpy(dx).stride() == (1, _C.feature_major_ld(batch, dx.itemsize))
    none = pattern.backward(g.numpy(), x.numpy(), values.numpy(), None, False, True, False, 1)
    assert none[0] is None and none[2] is None and none[1].shape == (s.nnz,)


def test_a_checked_pattern_is_a_copy_and_refuses_bad_input():
    """_C.CsrPattern checks (crow, col) once and keeps its own copy: a later edit of the arrays it
    was made from changes nothing; bad patterns and bad x are refused, never read out of bounds."""
    s, values, bias = _case(13, 30, 0.3, seed=12)
    crow, col = s.crow.numpy().copy(), s.col.numpy().copy()
    pattern = _C.CsrPattern(crow, col, 30)
    assert pattern.shape == (13, 30)
    x = torch.randn(5, 30, dtype=torch.float64)
    want = _dense(x, values, bias, s, "relu")
    col[:] = 0
    got = torch.from_numpy(pattern.linear(x.numpy(), values.numpy(), bias.numpy(), True, 1))
    assert_close(got, want, "float64_kernels")
    bad = [(s.crow.numpy()[1:].copy(), s.col.numpy()), (s.crow.numpy(), s.col.numpy() + 30),
           (s.crow.numpy()[::-1].copy(), s.col.numpy()), (s.crow.numpy().astype(np.int32), s.col.numpy())]
    for c, k in bad:
        with pytest.raises(ValueError):
            _C.CsrPattern(c, k, 30)
    for xa in (np.zeros((5, 29)), np.zeros((5, 30), np.float16), np.zeros(30), np.zeros((5, 60))[:, ::2]):
        with pytest.raises(ValueError):
            pattern.linear(xa, values.numpy(), bias.numpy(), True, 1)


def _pattern(s: MaskStructure):
    """s's checked C++ pattern with its transpose, as csr_ops makes it."""
    return _C.CsrPattern(s.crow.numpy(), s.col.numpy(), s.shape[1], s.t_crow.numpy(), s.t_col.numpy(), s.t_perm.numpy())


def test_the_one_call_backward_refuses_bad_input():
    """Bad operands of the backward, and bad transposed patterns (checked once, at construction), are
    refused with a ValueError; a pattern made without its transpose refuses the backward."""
    s, values, _ = _case(13, 30, 0.3, seed=12, dtype=torch.float32)
    pattern = _pattern(s)
    args = dict(g=np.zeros((5, 13), np.float32), x=np.zeros((5, 30), np.float32), values=values.numpy(), y=None,
                need_dx=True, need_dv=True, need_db=True)
    bad = [dict(g=np.zeros((4, 13), np.float32)), dict(g=np.zeros((5, 12), np.float32)),
           dict(x=np.zeros((5, 60), np.float32)[:, ::2]), dict(x=np.zeros((5, 29), np.float32)),
           dict(y=np.zeros((5, 12), np.float32)), dict(values=values.numpy()[:-1].copy()), dict(x=np.zeros((5, 30)))]
    for change in bad:
        with pytest.raises(ValueError):
            pattern.backward(**{**args, **change})
    with pytest.raises(ValueError, match="transpose"):
        _C.CsrPattern(s.crow.numpy(), s.col.numpy(), 30).backward(**args)
    st = (s.t_crow.numpy(), s.t_col.numpy(), s.t_perm.numpy())
    swapped = s.t_perm.numpy().copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    bad_t = [(s.crow.numpy(), st[1], st[2]), (st[0], st[1], np.full(s.nnz, s.nnz)), (st[0], st[1], st[2][:-1].copy()),
             (st[0], st[1], swapped), (st[0], st[1] + 13, st[2]), (st[0], st[1], None)]
    for t_crow, t_col, t_perm in bad_t:
        with pytest.raises(ValueError):
            _C.CsrPattern(s.crow.numpy(), s.col.numpy(), 30, t_crow, t_col, t_perm)


@pytest.mark.parametrize("edited", ["x", "values", "y"])
def test_an_input_edited_in_place_before_the_backward_is_refused(edited):
    """The backward reads the forward's arrays as the forward kept them; autograd's version check on
    the saved tensors refuses a backward after x, the weights or (relu) the output changed in place."""
    s, values, bias = _case(13, 17, 0.3, seed=4)
    x = torch.randn(6, 17, dtype=torch.float64, requires_grad=True)
    v = values.clone().requires_grad_()
    x_in = x * 1.0  # a non-leaf, so that it may be edited in place
    y = csr_linear(x_in, v, bias, s, "relu")
    with torch.no_grad():
        {"x": x_in, "values": v, "y": y}[edited].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(y.sum(), (x, v))


def test_compile_fullgraph_traces_the_ops():
    s, values, bias = _case(13, 17, 0.3, seed=2, dtype=torch.float32)
    v = values.clone().requires_grad_()

    def f(x):
        return csr_linear(x, v, bias, s, "relu").sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 17, requires_grad=True)
    y = compiled(x)
    y.backward()
    x2 = x.detach().clone().requires_grad_()
    v.grad, gx = None, x.grad
    f(x2).backward()
    torch.testing.assert_close(gx, x2.grad)


def test_faststrnn_on_the_cpu_backend_trains_like_dense():
    """A few AdamW steps from the same seed: the same model (to rounding) on "cpu" and "dense"."""
    A = np.tril(np.random.default_rng(0).random((31, 31)) < 0.15, -1)
    x = torch.randn(64, 31, dtype=torch.float64)
    models = []
    for backend in ("dense", "cpu"):
        torch.manual_seed(0)
        net = FastStrNN(31, (47, 53), 62, adjacency=A, backend=backend).double()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        models.append(net)
    for a, b in zip(models[0].layers, models[1].layers):
        torch.testing.assert_close(a.dense_weight(), b.dense_weight(), atol=1e-6, rtol=0)
    assert backends.eligible("cpu", torch.float32)[0] == "cpu"


@pytest.mark.parametrize("fused", [False, True])
def test_a_network_hands_back_the_last_layers_row_major_output(fused, monkeypatch):
    """FastStrNN and its frozen copy return the C-contiguous output the last C++ layer writes (no
    copy after it), with the bits of the column-major path, trained or not, fused chain or not."""
    from strnn_fast import chain
    from strnn_fast.freeze import freeze

    monkeypatch.setattr(chain, "_chosen", lambda *a: fused)
    A = np.tril(np.random.default_rng(1).random((23, 23)) < 0.2, -1)
    torch.manual_seed(0)
    net = FastStrNN(23, (70, 90), 46, adjacency=A, backend="cpu")
    for batch in (1, 7, 100):
        x = torch.randn(batch, 23, requires_grad=True)
        y = net(x)
        assert y.is_contiguous() and "Clone" not in type(y.grad_fn).__name__  # written so, not copied after
        with torch.no_grad():
            want = net.layered(x.detach()).contiguous()
            assert torch.equal(net(x), want) and torch.equal(y.detach(), want)
            frozen = freeze(net, dtype=torch.float32)
            assert frozen(x).is_contiguous() and torch.equal(frozen(x), want)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        (gx_ref,) = torch.autograd.grad(net.layered(x), x, torch.ones(batch, 46))
        assert torch.equal(gx, gx_ref) if not fused else torch.allclose(gx, gx_ref, atol=1e-5)
