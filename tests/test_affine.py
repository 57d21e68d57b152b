"""The affine normalizer's C++ path (csrc/affine.cpp) against its torch formulas, float64 first.

The C++ map runs where a gradient is taken or the parameters come batch-contiguous (a fused
chain's output; without either, torch's ops are used), the inverse without a gradient.

Forward, both gradients, second order and the inverse, for every layout the conditioners hand the
parameters over in, at odd shapes, with saturated log-scales; float32 against float64; the same
bits for any thread count; NaN stays where it was; bad arrays are refused by name.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_close

from strnn_fast import _C
from strnn_fast.flows.normalizers.affine import AffineNormalizer
from strnn_fast.nn import per_variable

SHAPES = [(1, 1), (7, 3), (300, 15), (5, 130)]


def _params(rows: int, d: int, layout: str, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """(rows, d, 2) parameters in a conditioner's layouts: a row- or column-major network output
    viewed per variable, or a plain contiguous tensor; log-scales up to 4x the bound (saturated)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(rows, 2 * d, generator=gen, dtype=dtype) * 4
    if layout == "column-major":
        y = y.T.contiguous().T
    return y.view(rows, d, 2).clone() if layout == "contiguous" else per_variable(y, 2)


def _torch_path(norm: AffineNormalizer) -> AffineNormalizer:
    ref = AffineNormalizer(norm.scale_bound)
    ref.torch_only = True
    return ref


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["row-major", "column-major", "contiguous"])
@pytest.mark.parametrize("x_layout", ["row-major", "column-major"])
def test_forward_gradients_and_inverse_match_torch_float64(shape, layout, x_layout):
    rows, d = shape
    norm = AffineNormalizer(2.5)
    ref = _torch_path(norm)
    h = _params(rows, d, layout)
    x = torch.randn(rows, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    if x_layout == "column-major":
        x = x.T.contiguous().T
    leaves = [t.detach().clone().requires_grad_() for t in (x, h)]
    leaves_ref = [t.detach().clone().requires_grad_() for t in (x, h)]
    z, ld = norm(*leaves)
    z_ref, ld_ref = ref(*leaves_ref)
    assert_close(z, z_ref, "float64_kernels")
    assert_close(ld, ld_ref, "float64_kernels")
    gz, gld = torch.randn_like(z_ref), torch.randn_like(ld_ref)
    got = torch.autograd.grad((z, ld), leaves, (gz, gld))
    want = torch.autograd.grad((z_ref, ld_ref), leaves_ref, (gz, gld))
    for a, b in zip(got, want):
        assert_close(a, b, "float64_kernels")
    with torch.no_grad():
        back = norm.inverse(z_ref, h)
        assert_close(back, ref.inverse(z_ref, h), "float64_kernels")
        assert_close(back, x, "float64_kernels", reduce_dim=100)  # the inverse of the forward


def test_second_order_is_exact():
    norm = AffineNormalizer(3.0)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    h = _params(6, 4, "column-major").detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, h: norm(x, h), (x, h))
    assert torch.autograd.gradgradcheck(lambda x, h: norm(x, h), (x, h))


def test_float32_matches_the_float64_reference():
    norm = AffineNormalizer(3.0)
    h = _params(257, 31, "column-major")
    x = torch.randn(257, 31, dtype=torch.float64)
    z, ld = norm(x.float().requires_grad_(), h.float())  # with a gradient: the C++ map
    z_ref, ld_ref = _torch_path(norm)(x, h)
    assert z.dtype == torch.float32
    assert_close(z, z_ref, torch.float32)
    assert_close(ld, ld_ref, torch.float32)


def test_the_same_bits_for_any_thread_count():
    norm = AffineNormalizer(3.0)
    x = torch.randn(3001, 40, requires_grad=True)
    h = _params(3001, 40, "column-major", torch.float32).detach().requires_grad_()
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            z, ld = norm(x, h)
            gx, gh = torch.autograd.grad((z.sum() + ld.sum()), (x, h))
            with torch.no_grad():
                results.append((z, ld, gx, gh, norm.inverse(z, h)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["row-major", "column-major"])
@pytest.mark.parametrize("x_layout", ["row-major", "column-major"])
def test_the_row_sums_of_the_log_scales(shape, layout, x_layout):
    """log_det_sum (the fused StrAF step's output) is each row's sum of s, with or without log_det, by
    either path (column-major parameters run the column path, the others the tiles)."""
    rows, d = shape
    h = _params(rows, d, layout, seed=2)
    x = torch.randn(rows, d, dtype=torch.float64)
    if x_layout == "column-major":
        x = x.T.contiguous().T
    z, ld = _torch_path(AffineNormalizer(2.0))(x, h)
    got_z, got_ld, sums = torch.empty_like(x), torch.empty_like(x), torch.full((rows,), float("nan"), dtype=x.dtype)
    _C.affine_forward(x.numpy(), h.numpy(), got_z.numpy(), got_ld.numpy(), 2.0, 1, sums.numpy())
    assert_close(got_z, z, "float64_kernels")
    assert_close(got_ld, ld, "float64_kernels")
    assert_close(sums, ld.sum(-1), "float64_kernels", reduce_dim=d)
    alone = torch.empty(2 * rows, dtype=x.dtype)[::2]  # any stride
    _C.affine_forward(x.numpy(), h.numpy(), got_z.numpy(), None, 2.0, 1, alone.numpy())
    assert torch.equal(alone, sums)


@pytest.mark.parametrize("layout", ["row-major", "column-major"])
def test_nan_stays_in_its_element(layout):
    norm = AffineNormalizer(3.0)
    x = torch.randn(4, 3, dtype=torch.float64)
    h = _params(4, 3, layout)
    x[1, 2] = float("nan")
    h[2, 0, 1] = float("nan")
    z, ld = norm(x.requires_grad_(), h)  # with a gradient: the C++ map
    x, z, ld = x.detach(), z.detach(), ld.detach()
    bad = torch.zeros(4, 3, dtype=torch.bool)
    bad[1, 2] = bad[2, 0] = True
    assert torch.equal(z.isnan(), bad)
    assert torch.equal(ld.isnan(), bad & (torch.arange(4)[:, None] == 2))


def test_bad_arrays_are_refused_by_name():
    x, h = np.zeros((3, 2), np.float32), np.zeros((3, 2, 2), np.float32)
    z, ld = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    cases = [(dict(h=np.zeros((3, 2, 3), np.float32)), "h must have shape"),
             (dict(z=np.zeros((3, 2))), "z must be a float32 array"),
             (dict(log_det=np.zeros((2, 2), np.float32)), "log_det must have shape"),
             (dict(x=np.zeros(3, np.float32)), "x must have 2 dims"),
             (dict(bound=0.0), "bound must be positive")]
    for change, message in cases:
        args = dict(x=x, h=h, z=z, log_det=ld, bound=3.0, **{})
        args.update(change)
        with pytest.raises(ValueError, match=message):
            _C.affine_forward(**args)
    with pytest.raises(ValueError, match=r"log_det_sum must have shape \(3,\)"):
        _C.affine_forward(x, h, z, ld, 3.0, 1, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="log_det_sum must be a float32 array"):
        _C.affine_forward(x, h, z, ld, 3.0, 1, np.zeros(3))
    with pytest.raises(ValueError, match="log_det and log_det_sum cannot both be None"):
        _C.affine_forward(x, np.zeros((3, 2, 2), np.float32), z, None, 3.0)
    read_only = np.zeros((3, 2), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="x must be writable"):
        _C.affine_inverse(z, h, read_only, 3.0)
    with pytest.raises(ValueError, match="gh must have shape"):
        _C.affine_backward(x, h, None, None, z, np.zeros((3, 2), np.float32), 3.0)
